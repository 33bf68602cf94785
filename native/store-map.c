// A node's store as memory: the set's bytes in one file (node-local tmpfs or disk), mapped shared
// into the agent. Blocks from peers are written to their place in the file (native/peer-stream.c),
// and served from it (sendfile): no buffer per piece or per request. Before, each of
// those buffers was fresh memory from the kernel (a mapping of its own, zeroed on first touch),
// ~100 MB of them per node for a 48.5 MB set, and their external memory drove V8's full
// collections; measured in bench/README.md (2026-12-02).
// Part of p2prun's addon (addon.c), built by scripts/build.ts into dist/.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <node_api.h>
#include "addon.h"

static void unmap(napi_env env, void *data, void *hint) {
  (void)env;
  munmap(data, (size_t)(uintptr_t)hint);
}

static bool integer_args(napi_env env, napi_callback_info info, size_t want, int32_t *fd, int64_t *numbers) {
  size_t argc = 3;
  napi_value argv[3];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != want ||
      napi_get_value_int32(env, argv[0], fd) != napi_ok) return false;
  for (size_t i = 1; i < want; i++) {
    if (napi_get_value_int64(env, argv[i], &numbers[i - 1]) != napi_ok || numbers[i - 1] < 0) return false;
  }
  return true;
}

// mapStore(fd, length): a Buffer over bytes [0, length) of the file, shared with it (the file is
// sized to it first). The mapping lives until the Buffer is collected: a socket may still be
// writing a view of it when the store is closed.
static napi_value map_store(napi_env env, napi_callback_info info) {
  int32_t fd;
  int64_t length;
  if (!integer_args(env, info, 2, &fd, &length)) {
    napi_throw_type_error(env, NULL, "mapStore(fd, length) takes a descriptor and a length");
    return NULL;
  }
  napi_value result;
  if (length == 0) return napi_create_buffer(env, 0, NULL, &result) == napi_ok ? result : NULL;
  if (ftruncate(fd, length) != 0) return throw_errno(env, errno, "cannot size the store");
  void *bytes = mmap(NULL, (size_t)length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (bytes == MAP_FAILED) return throw_errno(env, errno, "cannot map the store");
  if (napi_create_external_buffer(env, (size_t)length, bytes, unmap, (void *)(uintptr_t)length, &result) != napi_ok) {
    munmap(bytes, (size_t)length);
    return NULL;
  }
  return result;
}

// allocateStore(fd, offset, length): the file's blocks for that range, before anything is written
// there through the mapping: running out of room is then this error, and never a SIGBUS at the
// write. Per piece, when it is first asked for: a node that reads part of the set holds only that.
static napi_value allocate_store(napi_env env, napi_callback_info info) {
  int32_t fd;
  int64_t range[2];
  if (!integer_args(env, info, 3, &fd, range)) {
    napi_throw_type_error(env, NULL, "allocateStore(fd, offset, length) takes a descriptor, an offset and a length");
    return NULL;
  }
  int err = range[1] > 0 ? posix_fallocate(fd, range[0], range[1]) : 0;
  if (err != 0) return throw_errno(env, err, "cannot allocate room in the store");
  return NULL;
}

napi_value register_store_map(napi_env env, napi_value exports) {
  return add_function(env, exports, "mapStore", map_store) ? add_function(env, exports, "allocateStore", allocate_store) : NULL;
}
