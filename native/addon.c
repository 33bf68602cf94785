// The addon's one entry point: the socket low-water mark, the store's mapping, the peer streams,
// the FUSE server and the exit share a binary.
#include "addon.h"

NAPI_MODULE_INIT() {
  if (!register_socket_low_water(env, exports)) return NULL;
  if (!register_process_exit(env, exports)) return NULL;
  if (!register_store_map(env, exports)) return NULL;
  if (!register_peer_stream(env, exports)) return NULL;
  return register_fuse_server(env, exports);
}
