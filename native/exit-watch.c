// watchExit(pid, onExit): onExit() once process `pid` has ended (exited or killed; a zombie not yet
// reaped counts), without polling: a pidfd (Linux 5.3+) watched by the event loop. A node agent
// watches its ranks this way: polling /proc cost it a thread-pool round trip per rank and check,
// ~90 checks in an 8-second launch. Returns false, and never calls onExit, if `pid` is gone already;
// throws ENOSYS where the kernel has no pidfd_open (the caller polls then). The watch does not keep
// the process alive, and its callback runs once.
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <uv.h>
#include "addon.h"

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

struct watch {
  uv_poll_t poll;
  int fd;
  napi_env env;
  napi_ref on_exit;
  napi_async_context async;
};

static void free_watch(uv_handle_t *handle) {
  struct watch *w = handle->data;
  close(w->fd);
  free(w);
}

static void on_ended(uv_poll_t *handle, int status, int events) {
  (void)status;
  (void)events;
  struct watch *w = handle->data;
  napi_env env = w->env;
  uv_poll_stop(handle);
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) == napi_ok) {
    napi_value fn, recv, result;
    napi_get_global(env, &recv);
    // make_callback, as for a peer stream's events: the promises JS resolves run after it.
    if (napi_get_reference_value(env, w->on_exit, &fn) == napi_ok && fn &&
        napi_make_callback(env, w->async, recv, fn, 0, NULL, &result) == napi_pending_exception) {
      napi_value ignored;
      napi_get_and_clear_last_exception(env, &ignored);
    }
    napi_close_handle_scope(env, scope);
  }
  napi_delete_reference(env, w->on_exit);
  napi_async_destroy(env, w->async);
  uv_close((uv_handle_t *)handle, free_watch);
}

static napi_value watch_exit(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], result, name;
  int32_t pid;
  napi_valuetype type;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 2 || napi_get_value_int32(env, argv[0], &pid) != napi_ok ||
      pid <= 0 || napi_typeof(env, argv[1], &type) != napi_ok || type != napi_function) {
    napi_throw_type_error(env, NULL, "watchExit(pid, onExit)");
    return NULL;
  }
  int fd = (int)syscall(SYS_pidfd_open, pid, 0);
  if (fd < 0) {
    if (errno != ESRCH) return throw_errno(env, errno, "pidfd_open");
    napi_get_boolean(env, false, &result);
    return result;
  }
  uv_loop_t *loop;
  struct watch *w = calloc(1, sizeof *w);
  if (!w || napi_get_uv_event_loop(env, &loop) != napi_ok) {
    close(fd);
    free(w);
    return throw_errno(env, ENOMEM, "watchExit");
  }
  int err = uv_poll_init(loop, &w->poll, fd);
  if (err != 0) {
    close(fd);
    free(w);
    return throw_errno(env, -err, "watchExit");
  }
  w->fd = fd;
  w->env = env;
  w->poll.data = w;
  napi_create_reference(env, argv[1], 1, &w->on_exit);
  napi_create_string_utf8(env, "p2prun:exit-watch", NAPI_AUTO_LENGTH, &name);
  napi_async_init(env, NULL, name, &w->async);
  uv_poll_start(&w->poll, UV_READABLE, on_ended);
  uv_unref((uv_handle_t *)&w->poll);
  napi_get_boolean(env, true, &result);
  return result;
}

napi_value register_exit_watch(napi_env env, napi_value exports) {
  return add_function(env, exports, "watchExit", watch_exit);
}
