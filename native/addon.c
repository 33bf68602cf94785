// The addon's one entry point: the socket low-water mark, the listening socket, the store's mapping,
// the peer streams, the FUSE server, the exit and the watch on other processes' exits share a binary.
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include "addon.h"

napi_value throw_errno(napi_env env, int err, const char *what) {
  char message[160];
  snprintf(message, sizeof message, "%s: %s", what, strerror(err));
  const char *code = strerrorname_np(err);
  napi_throw_error(env, code ? code : "EIO", message);
  return NULL;
}

napi_value add_function(napi_env env, napi_value exports, const char *name, napi_callback fn) {
  napi_value value;
  if (napi_create_function(env, name, NAPI_AUTO_LENGTH, fn, NULL, &value) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, name, value) != napi_ok) return NULL;
  return exports;
}

NAPI_MODULE_INIT() {
  if (!register_socket_low_water(env, exports)) return NULL;
  if (!register_process_exit(env, exports)) return NULL;
  if (!register_store_map(env, exports)) return NULL;
  if (!register_listen_socket(env, exports)) return NULL;
  if (!register_exit_watch(env, exports)) return NULL;
  if (!register_peer_stream(env, exports)) return NULL;
  return register_fuse_server(env, exports);
}
