// SO_RCVLOWAT on a TCP socket, which Node's net module does not expose.
// A node agent receiving a 64 KiB piece message on a 100 Mbit/s link is otherwise woken for every
// ~1.5 KB segment (~40 reads a message); with the low-water mark set to the bytes the message still
// lacks, epoll reports the socket readable once they are all there, so one read takes the rest.
// Part of p2prun's addon (addon.c), built by scripts/build.ts into dist/.
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <node_api.h>
#include "addon.h"

// setRcvLowat(fd, bytes): throws with the errno's text if the kernel refuses.
static napi_value set_rcv_lowat(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  int32_t fd = -1, bytes = 1;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 2 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok || napi_get_value_int32(env, argv[1], &bytes) != napi_ok) {
    napi_throw_type_error(env, NULL, "setRcvLowat(fd, bytes) takes two integers");
    return NULL;
  }
  if (setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &bytes, sizeof bytes) != 0) napi_throw_error(env, NULL, strerror(errno));
  return NULL;
}

napi_value register_socket_low_water(napi_env env, napi_value exports) {
  return add_function(env, exports, "setRcvLowat", set_rcv_lowat);
}
