// The addon's one entry point: the socket low-water mark and the FUSE server share a binary.
#include "addon.h"

NAPI_MODULE_INIT() {
  if (!register_socket_low_water(env, exports)) return NULL;
  return register_fuse_server(env, exports);
}
