// A listening TCP socket bound to a numeric address, for net.Server's listen({ fd }).
// Node's listen(port, host) looks the host up even when it is an address, and then checks every
// address the lookup gave against IPv6's link-local range with its large IPv6 pattern, compiled
// on first use: ~10 ms of CPU in every node agent's start (bench/README.md, 2026-12-03), for an
// address the agent already has in numeric form. Names are left to Node (`undefined` back).
// Part of p2prun's addon (addon.c), built by scripts/build.ts into dist/.
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <node_api.h>
#include "addon.h"

// As Node's own listen (libuv's bind and listen).
enum { BACKLOG = 511 };

// listenTcp(host, port): the descriptor of a socket listening on host:port (port 0: any free one),
// or undefined if `host` is not a numeric IPv4 or IPv6 address; throws as throw_errno.
static napi_value listen_tcp(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  char host[INET6_ADDRSTRLEN + 1];
  size_t host_length;
  uint32_t port;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 2 ||
      napi_get_value_string_utf8(env, argv[0], host, sizeof host, &host_length) != napi_ok ||
      napi_get_value_uint32(env, argv[1], &port) != napi_ok || port > 65535) {
    napi_throw_type_error(env, NULL, "listenTcp(host, port) takes an address and a port");
    return NULL;
  }
  struct sockaddr_in v4 = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
  struct sockaddr_in6 v6 = { .sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port) };
  const struct sockaddr *addr;
  socklen_t addr_length;
  if (host_length < sizeof host - 1 && inet_pton(AF_INET, host, &v4.sin_addr) == 1) {
    addr = (const struct sockaddr *)&v4;
    addr_length = sizeof v4;
  } else if (host_length < sizeof host - 1 && inet_pton(AF_INET6, host, &v6.sin6_addr) == 1) {
    addr = (const struct sockaddr *)&v6;
    addr_length = sizeof v6;
  } else {
    napi_value undefined;
    napi_get_undefined(env, &undefined);
    return undefined;
  }
  int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, errno, "socket");
  int one = 1;
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 || bind(fd, addr, addr_length) != 0 || listen(fd, BACKLOG) != 0) {
    int err = errno;
    close(fd);
    return throw_errno(env, err, "listen");
  }
  napi_value result;
  if (napi_create_int32(env, fd, &result) != napi_ok) {
    close(fd);
    return NULL;
  }
  return result;
}

napi_value register_listen_socket(napi_env env, napi_value exports) {
  return add_function(env, exports, "listenTcp", listen_tcp);
}
