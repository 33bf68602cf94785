// p2prun's Node-API addon (dist/p2prun-native.node): each C file adds its functions to the exports.
#ifndef P2PRUN_ADDON_H
#define P2PRUN_ADDON_H
#include <node_api.h>

// Each returns `exports`, or NULL with a JS exception pending.
napi_value register_socket_low_water(napi_env env, napi_value exports);
napi_value register_fuse_server(napi_env env, napi_value exports);
napi_value register_process_exit(napi_env env, napi_value exports);
napi_value register_store_map(napi_env env, napi_value exports);
napi_value register_peer_stream(napi_env env, napi_value exports);
napi_value register_listen_socket(napi_env env, napi_value exports);
napi_value register_exit_watch(napi_env env, napi_value exports);

// Adds fn to `exports` as `name`; returns `exports`, or NULL with a JS exception pending.
napi_value add_function(napi_env env, napi_value exports, const char *name, napi_callback fn);

// Throws an Error whose `code` is the errno's name (ENOSPC, EADDRINUSE...), its message `what` and
// the system's reason, for the caller's own message; returns NULL.
napi_value throw_errno(napi_env env, int err, const char *what);
#endif
