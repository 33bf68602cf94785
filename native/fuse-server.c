// The FUSE server's Node-API host: fuseStart builds the inode table and the store's view from
// what lib/mount.ts passes, and the session (fuse-session.c) hands what needs the swarm to JS
// through a thread-safe function; JS answers each with one fuseReply*.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "addon.h"
#include "fuse-session.h"

struct event {
  enum event_kind kind;
  uint32_t id;
  uint64_t ino;
  uint64_t offset;
  uint32_t size;   // bytes to read; for EV_MOUNTED and EV_ENDED an errno (0 = fine)
  char message[256];
};

struct js_server {
  struct fuse_server core;     // first: the session's callbacks hand back a pointer to it
  napi_ref present_ref;        // keeps the bitfield's memory alive and in place while mounted
  napi_threadsafe_function to_js;
};

// ---- the inode table lib/fs.ts made (InodeTable there) --------------------------------------

static int fail(napi_env env, const char *what) {
  napi_throw_type_error(env, NULL, what);
  return 0;
}

// The typed array `key` of `from`, of `type`, with `count` elements (or any length if count is 0).
static int typed(napi_env env, napi_value from, const char *key, napi_typedarray_type type, size_t count,
                 void **data, size_t *length) {
  napi_value value;
  napi_typedarray_type got;
  bool is;
  if (napi_get_named_property(env, from, key, &value) != napi_ok || napi_is_typedarray(env, value, &is) != napi_ok || !is ||
      napi_get_typedarray_info(env, value, &got, length, data, NULL, NULL) != napi_ok || got != type ||
      (count && *length != count)) {
    napi_throw_type_error(env, NULL, "invalid inode table: a typed array is missing or has the wrong type or length");
    return 0;
  }
  return 1;
}

static int number(napi_env env, napi_value from, const char *key, double *out) {
  napi_value value;
  if (napi_get_named_property(env, from, key, &value) != napi_ok || napi_get_value_double(env, value, out) != napi_ok) {
    napi_throw_type_error(env, NULL, "invalid inode table: a number is missing");
    return 0;
  }
  return 1;
}

// Fills `t` from the `table` object; on a malformed table throws a JS TypeError and returns 0.
static int table_build(napi_env env, napi_value from, struct table *t) {
  memset(t, 0, sizeof *t);
  uint32_t *modes, *nlinks, *parents, *name_at, *target_at;
  double *sizes, *offsets, *mtimes, uid, gid, total;
  uint8_t *strings;
  size_t count, strings_length, ignored;
  if (!typed(env, from, "modes", napi_uint32_array, 0, (void **)&modes, &count)) return 0;
  if (count == 0 || count > UINT32_MAX / 2) return fail(env, "invalid inode table: no root");
  if (!typed(env, from, "nlinks", napi_uint32_array, count, (void **)&nlinks, &ignored) ||
      !typed(env, from, "parents", napi_uint32_array, count, (void **)&parents, &ignored) ||
      !typed(env, from, "nameAt", napi_uint32_array, count, (void **)&name_at, &ignored) ||
      !typed(env, from, "targetAt", napi_uint32_array, count, (void **)&target_at, &ignored) ||
      !typed(env, from, "sizes", napi_float64_array, count, (void **)&sizes, &ignored) ||
      !typed(env, from, "offsets", napi_float64_array, count, (void **)&offsets, &ignored) ||
      !typed(env, from, "mtimesMs", napi_float64_array, count, (void **)&mtimes, &ignored) ||
      !typed(env, from, "strings", napi_uint8_array, 0, (void **)&strings, &strings_length) ||
      !number(env, from, "uid", &uid) || !number(env, from, "gid", &gid) || !number(env, from, "totalBytes", &total)) return 0;
  if (strings_length == 0 || strings[strings_length - 1] != 0) return fail(env, "invalid inode table: strings must end with NUL");
  t->count = (uint32_t)count;
  t->uid = (uid_t)uid;
  t->gid = (gid_t)gid;
  t->total_bytes = (uint64_t)total;
  t->inodes = calloc(count + 1, sizeof *t->inodes);
  t->strings = malloc(strings_length);
  if (!t->inodes || !t->strings) { table_free(t); return fail(env, "out of memory for the inode table"); }
  memcpy(t->strings, strings, strings_length);
  for (size_t i = 0; i < count; i++) {
    // Parents come first (the description is sorted), so a parent's number is below its child's.
    uint32_t ino = (uint32_t)i + 1;
    if (parents[i] < 1 || (parents[i] >= ino && ino != 1) || name_at[i] >= strings_length || target_at[i] >= strings_length) {
      table_free(t);
      return fail(env, "invalid inode table: a parent or string index is out of range");
    }
    t->inodes[ino] = (struct inode){
      .mode = modes[i], .nlink = nlinks[i], .parent = ino == 1 ? 1 : parents[i], .size = (uint64_t)sizes[i],
      .offset = (uint64_t)offsets[i], .mtime_ms = (int64_t)mtimes[i], .name = t->strings + name_at[i],
      .target = t->strings + target_at[i]
    };
  }
  if (!table_index(t)) { table_free(t); return fail(env, "out of memory for the inode table"); }
  return 1;
}

static void emit_to_js(struct fuse_server *core, enum event_kind kind, uint32_t id, uint64_t ino, uint64_t offset, uint32_t size, const char *message) {
  struct js_server *s = (struct js_server *)core;
  struct event *ev = calloc(1, sizeof *ev);
  if (!ev) return;
  *ev = (struct event){ .kind = kind, .id = id, .ino = ino, .offset = offset, .size = size };
  if (message) snprintf(ev->message, sizeof ev->message, "%s", message);
  if (napi_call_threadsafe_function(s->to_js, ev, napi_tsfn_nonblocking) != napi_ok) free(ev);
}

// ---- Node-API ----

static void call_js(napi_env env, napi_value callback, void *context, void *data) {
  (void)context;
  struct event *ev = data;
  if (env && callback) {
    napi_value argv[6], undefined;
    napi_get_undefined(env, &undefined);
    napi_create_uint32(env, ev->kind, &argv[0]);
    napi_create_uint32(env, ev->id, &argv[1]);
    napi_create_double(env, (double)ev->ino, &argv[2]);
    napi_create_double(env, (double)ev->offset, &argv[3]);
    napi_create_uint32(env, ev->size, &argv[4]);
    napi_create_string_utf8(env, ev->message, NAPI_AUTO_LENGTH, &argv[5]);
    napi_call_function(env, undefined, callback, 6, argv, NULL);
  }
  free(ev);
}

static void free_server(napi_env env, void *data, void *hint) {
  (void)env; (void)hint;
  struct js_server *s = data;
  fuse_server_free(&s->core);
  free(s);
}

static int get_string(napi_env env, napi_value from, const char *key, char **out) {
  napi_value value;
  size_t length;
  if (napi_get_named_property(env, from, key, &value) != napi_ok ||
      napi_get_value_string_utf8(env, value, NULL, 0, &length) != napi_ok) return 0;
  *out = malloc(length + 1);
  return *out && napi_get_value_string_utf8(env, value, *out, length + 1, &length) == napi_ok;
}

static int get_view(napi_env env, napi_value config, struct js_server *js) {
  struct fuse_server *s = &js->core;
  napi_value view, fd, chunk, present;
  napi_valuetype type;
  s->store_fd = -1;
  if (napi_get_named_property(env, config, "view", &view) != napi_ok || napi_typeof(env, view, &type) != napi_ok) return 0;
  if (type == napi_undefined) return 1;
  int32_t store_fd;
  double chunk_length;
  napi_typedarray_type kind;
  void *bytes;
  if (napi_get_named_property(env, view, "fd", &fd) != napi_ok || napi_get_value_int32(env, fd, &store_fd) != napi_ok ||
      napi_get_named_property(env, view, "chunkLength", &chunk) != napi_ok || napi_get_value_double(env, chunk, &chunk_length) != napi_ok ||
      chunk_length < 1 || napi_get_named_property(env, view, "present", &present) != napi_ok ||
      napi_get_typedarray_info(env, present, &kind, &s->present_length, &bytes, NULL, NULL) != napi_ok || kind != napi_uint8_array ||
      napi_create_reference(env, present, 1, &js->present_ref) != napi_ok) return 0;
  s->store_fd = store_fd;
  s->chunk_length = (uint64_t)chunk_length;
  s->present = bytes;
  return 1;
}

// start(config, onEvent): a session for config.mountPoint, mounted and served on a new thread;
// onEvent(kind, id, ino, offset, size, message) hears EV_* (the first one is EV_MOUNTED).
static napi_value start(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], table, value, handle, name;
  double cache_seconds, negative_seconds;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 2) {
    napi_throw_type_error(env, NULL, "fuseStart(config, onEvent) takes two arguments");
    return NULL;
  }
  struct js_server *s = calloc(1, sizeof *s);
  if (!s) { napi_throw_error(env, NULL, "out of memory"); return NULL; }
  s->core.wake_fd = -1;
  s->core.emit = emit_to_js;
  pthread_mutex_init(&s->core.lock, NULL);
  char *options = NULL, *mount_point = NULL;
  bool configured = get_string(env, argv[0], "mountPoint", &mount_point) && get_string(env, argv[0], "options", &options) &&
      napi_get_named_property(env, argv[0], "cacheSeconds", &value) == napi_ok && napi_get_value_double(env, value, &cache_seconds) == napi_ok &&
      napi_get_named_property(env, argv[0], "negativeCacheSeconds", &value) == napi_ok && napi_get_value_double(env, value, &negative_seconds) == napi_ok &&
      get_view(env, argv[0], s);
  if (!configured) {
    napi_throw_type_error(env, NULL, "fuseStart: config needs mountPoint, options, cacheSeconds, negativeCacheSeconds and view");
  } else if (napi_get_named_property(env, argv[0], "table", &table) != napi_ok || !table_build(env, table, &s->core.table)) {
    configured = false; // table_build threw
  }
  char why[300];
  if (configured && fuse_server_init(&s->core, mount_point, options, why, sizeof why) < 0) {
    napi_throw_error(env, NULL, why);
    configured = false;
  }
  free(options);
  free(mount_point);
  if (configured) {
    s->core.cache_seconds = cache_seconds;
    s->core.negative_seconds = negative_seconds;
  }
  napi_create_string_utf8(env, "p2prun FUSE server", NAPI_AUTO_LENGTH, &name);
  if (configured && napi_create_threadsafe_function(env, argv[1], NULL, name, 0, 1, s, free_server, NULL, call_js, &s->to_js) != napi_ok) {
    napi_throw_error(env, NULL, "cannot start a FUSE session: no thread-safe function");
    configured = false;
  }
  if (!configured) {
    fuse_server_stop(&s->core);
    if (s->present_ref) napi_delete_reference(env, s->present_ref);
    free_server(env, s, NULL);
    return NULL;
  }
  int failed = fuse_server_start(&s->core);
  if (failed) {
    fuse_server_stop(&s->core);
    if (s->present_ref) napi_delete_reference(env, s->present_ref);
    s->present_ref = NULL;
    napi_release_threadsafe_function(s->to_js, napi_tsfn_release); // frees s
    napi_throw_error(env, NULL, strerror(failed));
    return NULL;
  }
  napi_create_external(env, s, NULL, NULL, &handle);
  return handle;
}

static struct js_server *server_of(napi_env env, napi_value value) {
  void *s = NULL;
  if (napi_get_value_external(env, value, &s) != napi_ok) napi_throw_type_error(env, NULL, "not a FUSE server handle");
  return s;
}

// A reply's server and request id (its first two arguments, of `want`); NULL after throwing.
static struct js_server *reply_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv, uint32_t *id) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != want ||
      napi_get_value_uint32(env, argv[1], id) != napi_ok) {
    napi_throw_type_error(env, NULL, "a FUSE reply takes a handle, a request id and its answer");
    return NULL;
  }
  return server_of(env, argv[0]);
}

// The request JS answers, unless it was interrupted meanwhile or the server is stopping.
static fuse_req_t claim(napi_env env, napi_callback_info info, size_t want, napi_value *argv, struct js_server **out, struct pending *taken) {
  uint32_t id;
  struct js_server *s = *out = reply_args(env, info, want, argv, &id);
  return s ? fuse_server_claim(&s->core, id, taken) : NULL;
}

// replyData(handle, id, buffer, length)
static napi_value reply_data(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  struct js_server *s;
  void *data;
  size_t capacity;
  uint32_t length;
  fuse_req_t req = claim(env, info, 4, argv, &s, NULL);
  if (!req) return NULL;
  if (napi_get_buffer_info(env, argv[2], &data, &capacity) != napi_ok || napi_get_value_uint32(env, argv[3], &length) != napi_ok ||
      length > capacity) {
    fuse_reply_err(req, EIO);
    napi_throw_type_error(env, NULL, "replyData(handle, id, buffer, length): length exceeds the buffer");
    return NULL;
  }
  fuse_reply_buf(req, data, length);
  return NULL;
}

// replyStored(handle, id): a forwarded read whose bytes are now in the store, answered from there
// as the session thread answers a local read (spliced from the store file), not from a copy JS
// made through its mapping of the store, whose pages it would touch (and fault in) first.
// Returns whether it was answered from the store; false (answered EIO) if they are not all in
// it. An interrupted request is already answered: true.
static napi_value reply_stored(napi_env env, napi_callback_info info) {
  napi_value argv[2], result;
  uint32_t id;
  struct js_server *s = reply_args(env, info, 2, argv, &id);
  if (!s) return NULL;
  napi_get_boolean(env, fuse_server_reply_stored(&s->core, id), &result);
  return result;
}

// replyOpen(handle, id)
static napi_value reply_open(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  struct js_server *s;
  struct pending taken;
  fuse_req_t req = claim(env, info, 2, argv, &s, &taken);
  if (req) fuse_server_reply_open(&s->core, req, taken.ino);
  return NULL;
}

// replyError(handle, id, errno)
static napi_value reply_error(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  struct js_server *s;
  int32_t err = EIO;
  fuse_req_t req = claim(env, info, 3, argv, &s, NULL);
  if (!req) return NULL;
  napi_get_value_int32(env, argv[2], &err);
  fuse_reply_err(req, err > 0 ? err : EIO);
  return NULL;
}

static napi_value counters_of(napi_env env, struct js_server *s) {
  napi_value result, value;
  napi_create_object(env, &result);
  for (int c = 0; c < C_COUNT; c++) {
    napi_create_double(env, (double)atomic_load_explicit(&s->core.counters[c], memory_order_relaxed), &value);
    napi_set_named_property(env, result, fuse_counter_names[c], value);
  }
  return result;
}

// counters(handle): { lookup, getattr, …, interrupted }
static napi_value counters(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 1) return NULL;
  struct js_server *s = server_of(env, argv[0]);
  return s ? counters_of(env, s) : NULL;
}

struct stopping {
  struct js_server *server;
  napi_deferred deferred;
  napi_async_work work;
};

// On the thread pool: ends the loop, then unmounts (lazily: readers that still hold files get
// ENOTCONN, nothing waits for them) and frees the session.
static void stop_work(napi_env env, void *data) {
  (void)env;
  fuse_server_stop(&((struct stopping *)data)->server->core);
}

static void stop_done(napi_env env, napi_status status, void *data) {
  (void)status;
  struct stopping *st = data;
  struct js_server *s = st->server;
  if (s->present_ref) napi_delete_reference(env, s->present_ref);
  s->present_ref = NULL;
  napi_delete_async_work(env, st->work);
  napi_resolve_deferred(env, st->deferred, counters_of(env, s)); // final: the session thread has ended
  free(st);
  napi_release_threadsafe_function(s->to_js, napi_tsfn_release); // frees s once its queue is drained
}

// stop(handle): Promise of the final counters, once unmounted. The handle is dead afterwards.
static napi_value stop(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], promise, name;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 1) return NULL;
  struct js_server *s = server_of(env, argv[0]);
  if (!s) return NULL;
  pthread_mutex_lock(&s->core.lock);
  int again = s->core.closing;
  s->core.closing = 1;
  pthread_mutex_unlock(&s->core.lock);
  if (again) { napi_throw_error(env, NULL, "the FUSE server is already stopping"); return NULL; }
  struct stopping *st = calloc(1, sizeof *st);
  st->server = s;
  napi_create_promise(env, &st->deferred, &promise);
  napi_create_string_utf8(env, "p2prun FUSE unmount", NAPI_AUTO_LENGTH, &name);
  napi_create_async_work(env, NULL, name, stop_work, stop_done, st, &st->work);
  napi_queue_async_work(env, st->work);
  return promise;
}

napi_value register_fuse_server(napi_env env, napi_value exports) {
  const struct { const char *name; napi_callback fn; } fns[] = {
    { "fuseStart", start }, { "fuseReplyData", reply_data }, { "fuseReplyOpen", reply_open },
    { "fuseReplyStored", reply_stored },
    { "fuseReplyError", reply_error }, { "fuseCounters", counters }, { "fuseStop", stop }
  };
  for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
    if (!add_function(env, exports, fns[i].name, fns[i].fn)) return NULL;
  }
  return exports;
}
