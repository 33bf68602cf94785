// p2prun's FUSE server: a libfuse3 low-level session on a thread of its own inside the node agent.
// It answers every request it can from the immutable inode table (fuse-table.c) and, for reads of
// chunks the store already holds, with a pread from the store: no JavaScript, no hop to Node's
// main thread (fuse-native made one per request: ~80 us of CPU each, ~10x the work itself). Only
// what needs the swarm is forwarded to JS through a thread-safe function: reads of chunks not yet
// local, and opens in file and eager mode of files not yet complete. JS answers them later, from
// its own thread (libfuse3's replies may come from any thread); the session thread never waits on
// JS, and JS never waits on it.
#define FUSE_USE_VERSION 34
#define _GNU_SOURCE // pthread_setname_np
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <fuse_lowlevel.h>
#include "addon.h"
#include "fuse-table.h"

// What the session thread tells JS (the first argument of the JS callback).
enum event_kind { EV_MOUNTED, EV_OPEN, EV_READ, EV_INTERRUPT, EV_ENDED };

struct event {
  enum event_kind kind;
  uint32_t id;
  uint64_t ino;
  uint64_t offset;
  uint32_t size;   // bytes to read; for EV_MOUNTED and EV_ENDED an errno (0 = fine)
  char message[256];
};

#define COUNTERS(X) X(lookup) X(getattr) X(readdir) X(readlink) X(open) X(read) X(release) X(statfs) \
  X(access) X(refused) X(enoent) X(bytesServedLocal) X(readsForwarded) X(opensForwarded) X(interrupted)
#define AS_ENUM(name) C_##name,
#define AS_NAME(name) #name,
enum counter { COUNTERS(AS_ENUM) C_COUNT };
static const char *const counter_names[] = { COUNTERS(AS_NAME) };

struct pending {
  uint32_t id;
  fuse_req_t req;
  // A read's bytes in the store (its place in the set, clipped to the file): JS may have them
  // answered from there once they are local (replyStored).
  uint64_t start;
  uint32_t length;
};

struct buffer {
  char *bytes;
  size_t capacity;
};

struct server {
  struct table table;
  struct fuse_session *se;
  char *mount_point;
  double cache_seconds;
  double negative_seconds;     // how long the kernel may remember that a name does not exist
  // The store (LocalView): fd < 0 when the source has none, and every read goes to JS.
  int store_fd;
  uint64_t chunk_length;
  const uint8_t *present;
  size_t present_length;
  napi_ref present_ref;       // keeps the bitfield's memory alive and in place while mounted
  napi_threadsafe_function to_js;
  pthread_t thread;
  int thread_started;
  int mounted;
  int wake_fd;                // written by stop: the session thread leaves its loop
  struct buffer read_buffer;  // the session thread's, grown to the largest read
  struct buffer reply_buffer; // the JS thread's, for replyStored
  // Forwarded requests JS has not answered: whoever removes one (JS's reply, or an interrupt) answers it.
  pthread_mutex_t lock;
  struct pending *pending;
  size_t pending_count, pending_capacity;
  uint32_t next_id;
  int closing;                // set by stop (under lock): JS's late replies are dropped
  // The session thread's own: the request it is registering an interrupt callback for, and
  // whether that callback ran inside the registration (it must not answer there: see forward).
  uint32_t registering;
  int interrupted_early;
  atomic_ullong counters[C_COUNT];
};

static void count(struct server *s, enum counter c, unsigned long long n) {
  atomic_fetch_add_explicit(&s->counters[c], n, memory_order_relaxed);
}

// libfuse reports mount problems through its log: the last line becomes the mount error's text
// rather than a second line on stderr.
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static char last_log[256];

static void capture_log(enum fuse_log_level level, const char *fmt, va_list ap) {
  (void)level;
  pthread_mutex_lock(&log_lock);
  vsnprintf(last_log, sizeof last_log, fmt, ap);
  last_log[strcspn(last_log, "\n")] = 0;
  pthread_mutex_unlock(&log_lock);
}

static void emit(struct server *s, enum event_kind kind, uint32_t id, uint64_t ino, uint64_t offset, uint32_t size, const char *message) {
  struct event *ev = calloc(1, sizeof *ev);
  if (!ev) return;
  *ev = (struct event){ .kind = kind, .id = id, .ino = ino, .offset = offset, .size = size };
  if (message) snprintf(ev->message, sizeof ev->message, "%s", message);
  if (napi_call_threadsafe_function(s->to_js, ev, napi_tsfn_nonblocking) != napi_ok) free(ev);
}

// ---- forwarded requests ---------------------------------------------------------------------

static int take_pending(struct server *s, uint32_t id, struct pending *taken) {
  for (size_t i = 0; i < s->pending_count; i++) {
    if (s->pending[i].id != id) continue;
    *taken = s->pending[i];
    s->pending[i] = s->pending[--s->pending_count];
    return 1;
  }
  return 0;
}

// The kernel interrupts a request whose caller got a signal (scancel's SIGTERM, then SIGKILL): it
// is answered EINTR at once, so the caller can die, and JS aborts the wait for its bytes.
static void on_interrupt(fuse_req_t req, void *data) {
  struct server *s = fuse_req_userdata(req);
  uint32_t id = (uint32_t)(uintptr_t)data;
  struct pending taken;
  pthread_mutex_lock(&s->lock);
  int found = take_pending(s, id, &taken);
  pthread_mutex_unlock(&s->lock);
  if (!found) return; // JS answered first
  count(s, C_interrupted, 1);
  if (s->registering == id) { s->interrupted_early = 1; return; } // forward answers it
  fuse_reply_err(taken.req, EINTR);
  emit(s, EV_INTERRUPT, id, 0, 0, 0, NULL);
}

// `start` is where a read's bytes lie in the store (unused for an open).
static void forward(struct server *s, fuse_req_t req, enum event_kind kind, fuse_ino_t ino, uint64_t offset, uint32_t size, uint64_t start) {
  pthread_mutex_lock(&s->lock);
  if (s->pending_count == s->pending_capacity) {
    size_t capacity = s->pending_capacity ? 2 * s->pending_capacity : 16;
    struct pending *grown = realloc(s->pending, capacity * sizeof *grown);
    if (!grown) { pthread_mutex_unlock(&s->lock); fuse_reply_err(req, ENOMEM); return; }
    s->pending = grown;
    s->pending_capacity = capacity;
  }
  uint32_t id = ++s->next_id ? s->next_id : ++s->next_id; // 0 is never an id
  s->pending[s->pending_count++] = (struct pending){ id, req, start, size };
  pthread_mutex_unlock(&s->lock);
  // Registered before JS can see the request: after JS's reply the request is freed. An interrupt
  // that came already runs the callback inside this call, which holds the request's lock: a reply
  // there would free the request under it, so it is answered here, after, and never forwarded.
  s->registering = id;
  s->interrupted_early = 0;
  fuse_req_interrupt_func(req, on_interrupt, (void *)(uintptr_t)id);
  s->registering = 0;
  if (s->interrupted_early) { fuse_reply_err(req, EINTR); return; }
  count(s, kind == EV_READ ? C_readsForwarded : C_opensForwarded, 1);
  emit(s, kind, id, ino, offset, size, NULL);
}

// ---- answers from the table and the store -----------------------------------------------------

static void fill_stat(const struct server *s, fuse_ino_t ino, const struct inode *n, struct stat *st) {
  memset(st, 0, sizeof *st);
  st->st_ino = ino;
  st->st_mode = n->mode;
  st->st_nlink = n->nlink;
  st->st_uid = s->table.uid;
  st->st_gid = s->table.gid;
  st->st_size = (off_t)n->size;
  st->st_blksize = 4096;
  st->st_blocks = (blkcnt_t)((n->size + 511) / 512);
  st->st_mtim.tv_sec = n->mtime_ms / 1000;
  st->st_mtim.tv_nsec = (n->mtime_ms % 1000) * 1000000;
  st->st_atim = st->st_ctim = st->st_mtim;
}

// The inode request `req` names, counted under `c` (C_COUNT: not counted); NULL, with the request
// answered ENOENT, when the table has none.
static const struct inode *inode_of(fuse_req_t req, fuse_ino_t ino, enum counter c) {
  struct server *s = fuse_req_userdata(req);
  if (c != C_COUNT) count(s, c, 1);
  const struct inode *n = table_get(&s->table, ino);
  if (!n) fuse_reply_err(req, ENOENT);
  return n;
}

static void op_init(void *data, struct fuse_conn_info *conn) {
  (void)data;
  // With async direct I/O a reader's O_DIRECT read waits for its answer uninterruptibly; without
  // it the read can be interrupted like any other. Nothing p2prun serves needs aio.
  conn->want &= ~FUSE_CAP_ASYNC_DIO;
  // Link targets never change: the kernel may keep them.
  if (conn->capable & FUSE_CAP_CACHE_SYMLINKS) conn->want |= FUSE_CAP_CACHE_SYMLINKS;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name) {
  struct server *s = fuse_req_userdata(req);
  count(s, C_lookup, 1);
  struct fuse_entry_param e;
  memset(&e, 0, sizeof e);
  uint32_t ino = parent <= s->table.count ? table_lookup(&s->table, (uint32_t)parent, name) : 0;
  if (!ino) {
    // Inode 0 is a negative entry: the kernel caches the ENOENT for entry_timeout, so the loader's
    // failed search-path lookups reach us once per name, not once per process.
    count(s, C_enoent, 1);
    e.entry_timeout = s->negative_seconds;
    fuse_reply_entry(req, &e);
    return;
  }
  e.ino = ino;
  e.entry_timeout = e.attr_timeout = s->cache_seconds;
  fill_stat(s, ino, &s->table.inodes[ino], &e.attr);
  fuse_reply_entry(req, &e);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  (void)fi;
  struct server *s = fuse_req_userdata(req);
  const struct inode *n = inode_of(req, ino, C_getattr);
  if (!n) return;
  struct stat st;
  fill_stat(s, ino, n, &st);
  fuse_reply_attr(req, &st, s->cache_seconds);
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino) {
  const struct inode *n = inode_of(req, ino, C_readlink);
  if (!n) return;
  if (!S_ISLNK(n->mode)) fuse_reply_err(req, EINVAL);
  else fuse_reply_readlink(req, n->target);
}

static void op_access(fuse_req_t req, fuse_ino_t ino, int mask) {
  if (inode_of(req, ino, C_access)) fuse_reply_err(req, mask & W_OK ? EROFS : 0);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino) {
  (void)ino;
  struct server *s = fuse_req_userdata(req);
  count(s, C_statfs, 1);
  struct statvfs st;
  memset(&st, 0, sizeof st);
  st.f_bsize = st.f_frsize = 4096;
  st.f_blocks = (s->table.total_bytes + 4095) / 4096;
  st.f_files = s->table.count;
  st.f_namemax = 255;
  st.f_flag = ST_RDONLY;
  fuse_reply_statfs(req, &st);
}

// Whether every chunk holding [start, start + length) of the set is in the store. A chunk's bit is
// set only after its bytes are written (the acquire load pairs with that order).
static int is_local(const struct server *s, uint64_t start, uint64_t length) {
  if (s->store_fd < 0) return 0;
  for (uint64_t i = start / s->chunk_length, last = (start + length - 1) / s->chunk_length; i <= last; i++) {
    if (i / 8 >= s->present_length) return 0;
    if (!(__atomic_load_n(&s->present[i / 8], __ATOMIC_ACQUIRE) & (0x80 >> (i % 8)))) return 0;
  }
  return 1;
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  struct server *s = fuse_req_userdata(req);
  const struct inode *n = inode_of(req, ino, C_open);
  if (!n) return;
  if ((fi->flags & O_ACCMODE) != O_RDONLY || fi->flags & O_TRUNC) { fuse_reply_err(req, EROFS); return; }
  if (!S_ISREG(n->mode)) { fuse_reply_err(req, EISDIR); return; }
  // An incomplete file's open goes to JS, which decides when it returns (lib/fs.ts: by mode).
  if (n->size > 0 && !is_local(s, n->offset, n->size)) {
    forward(s, req, EV_OPEN, ino, 0, 0, 0);
    return;
  }
  fi->keep_cache = 1; // the content never changes: pages stay cached across opens
  fuse_reply_open(req, fi);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  (void)ino; (void)fi;
  count(fuse_req_userdata(req), C_release, 1);
  fuse_reply_err(req, 0);
}

// Reads store bytes into `into` (a buffer kept and reused by one thread: its pages are touched
// once, not per read).
static int read_store(const struct server *s, struct buffer *into, uint64_t start, size_t length) {
  if (length > into->capacity) {
    char *grown = realloc(into->bytes, length);
    if (!grown) return 0;
    into->bytes = grown;
    into->capacity = length;
  }
  for (size_t done = 0; done < length;) {
    ssize_t got = pread(s->store_fd, into->bytes + done, length - done, (off_t)(start + done));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return 0;
    done += (size_t)got;
  }
  return 1;
}

// Answers `req` with the store's bytes [start, start + length) (length > 0), read into `buf`;
// false, `req` left unanswered, if they are not all local or cannot be read.
static bool reply_from_store(const struct server *s, fuse_req_t req, struct buffer *buf, uint64_t start, size_t length) {
  if (!is_local(s, start, length) || !read_store(s, buf, start, length)) return false;
  fuse_reply_buf(req, buf->bytes, length);
  return true;
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset, struct fuse_file_info *fi) {
  (void)fi;
  struct server *s = fuse_req_userdata(req);
  const struct inode *n = inode_of(req, ino, C_read);
  if (!n) return;
  // The kernel asks for whole pages past the end: clip to the file.
  if (offset < 0 || (uint64_t)offset >= n->size) { fuse_reply_buf(req, NULL, 0); return; }
  size_t length = n->size - (uint64_t)offset < size ? (size_t)(n->size - (uint64_t)offset) : size;
  uint64_t start = n->offset + (uint64_t)offset;
  if (reply_from_store(s, req, &s->read_buffer, start, length)) {
    count(s, C_bytesServedLocal, length);
    return;
  }
  // Not local yet, or the store failed: JS fetches (or reports why it cannot).
  forward(s, req, EV_READ, ino, (uint64_t)offset, (uint32_t)length, start);
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  const struct inode *n = inode_of(req, ino, C_COUNT);
  if (!n) return;
  if (!S_ISDIR(n->mode)) { fuse_reply_err(req, ENOTDIR); return; }
  fi->cache_readdir = 1;
  fi->keep_cache = 1;
  fuse_reply_open(req, fi);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset, struct fuse_file_info *fi) {
  (void)fi;
  struct server *s = fuse_req_userdata(req);
  const struct inode *n = inode_of(req, ino, C_readdir);
  if (!n) return;
  char *buffer = malloc(size ? size : 1);
  if (!buffer) { fuse_reply_err(req, ENOMEM); return; }
  size_t used = 0;
  // Entry k is ".", "..", then the children; each entry's offset is the next one's index.
  for (uint64_t k = offset < 0 ? 0 : (uint64_t)offset; k < 2 + (uint64_t)n->child_count; k++) {
    fuse_ino_t entry = k == 0 ? ino : k == 1 ? n->parent : s->table.children[n->first_child + k - 2];
    struct stat st;
    memset(&st, 0, sizeof st);
    st.st_ino = entry;
    st.st_mode = s->table.inodes[entry].mode & S_IFMT;
    const char *name = k == 0 ? "." : k == 1 ? ".." : s->table.inodes[entry].name;
    size_t need = fuse_add_direntry(req, buffer + used, size - used, name, &st, (off_t)(k + 1));
    if (need > size - used) break;
    used += need;
  }
  fuse_reply_buf(req, buffer, used);
  free(buffer);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  (void)ino; (void)fi;
  fuse_reply_err(req, 0);
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size) {
  (void)ino; (void)name; (void)size;
  fuse_reply_err(req, ENODATA);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  (void)ino;
  if (size == 0) fuse_reply_xattr(req, 0);
  else fuse_reply_buf(req, NULL, 0);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t lookups) {
  (void)ino; (void)lookups;
  fuse_reply_none(req); // inodes live as long as the mount
}

// Every way of changing the tree. The mount is also "ro", so the kernel refuses most first.
static void refuse(fuse_req_t req) {
  count(fuse_req_userdata(req), C_refused, 1);
  fuse_reply_err(req, EROFS);
}
static void op_setattr(fuse_req_t req, fuse_ino_t i, struct stat *a, int t, struct fuse_file_info *f) { (void)i; (void)a; (void)t; (void)f; refuse(req); }
static void op_mknod(fuse_req_t req, fuse_ino_t p, const char *n, mode_t m, dev_t d) { (void)p; (void)n; (void)m; (void)d; refuse(req); }
static void op_mkdir(fuse_req_t req, fuse_ino_t p, const char *n, mode_t m) { (void)p; (void)n; (void)m; refuse(req); }
static void op_remove(fuse_req_t req, fuse_ino_t p, const char *n) { (void)p; (void)n; refuse(req); }
static void op_symlink(fuse_req_t req, const char *l, fuse_ino_t p, const char *n) { (void)l; (void)p; (void)n; refuse(req); }
static void op_rename(fuse_req_t req, fuse_ino_t p, const char *n, fuse_ino_t np, const char *nn, unsigned f) { (void)p; (void)n; (void)np; (void)nn; (void)f; refuse(req); }
static void op_link(fuse_req_t req, fuse_ino_t i, fuse_ino_t p, const char *n) { (void)i; (void)p; (void)n; refuse(req); }
static void op_write(fuse_req_t req, fuse_ino_t i, const char *b, size_t z, off_t o, struct fuse_file_info *f) { (void)i; (void)b; (void)z; (void)o; (void)f; refuse(req); }
static void op_create(fuse_req_t req, fuse_ino_t p, const char *n, mode_t m, struct fuse_file_info *f) { (void)p; (void)n; (void)m; (void)f; refuse(req); }
static void op_setxattr(fuse_req_t req, fuse_ino_t i, const char *n, const char *v, size_t z, int f) { (void)i; (void)n; (void)v; (void)z; (void)f; refuse(req); }
static void op_removexattr(fuse_req_t req, fuse_ino_t i, const char *n) { (void)i; (void)n; refuse(req); }
static void op_fallocate(fuse_req_t req, fuse_ino_t i, int m, off_t o, off_t l, struct fuse_file_info *f) { (void)i; (void)m; (void)o; (void)l; (void)f; refuse(req); }

// flush is left out: libfuse answers ENOSYS once and the kernel stops sending it.
static const struct fuse_lowlevel_ops ops = {
  .init = op_init, .lookup = op_lookup, .forget = op_forget, .getattr = op_getattr, .readlink = op_readlink,
  .open = op_open, .read = op_read, .release = op_release, .opendir = op_opendir, .readdir = op_readdir,
  .releasedir = op_releasedir, .statfs = op_statfs, .access = op_access, .getxattr = op_getxattr,
  .listxattr = op_listxattr, .setattr = op_setattr, .mknod = op_mknod, .mkdir = op_mkdir, .unlink = op_remove,
  .rmdir = op_remove, .symlink = op_symlink, .rename = op_rename, .link = op_link, .write = op_write,
  .create = op_create, .setxattr = op_setxattr, .removexattr = op_removexattr, .fallocate = op_fallocate
};

// ---- the session thread -------------------------------------------------------------------------

// fuse_session_loop, plus a wake-up descriptor: stop ends the loop without closing the FUSE
// descriptor under a thread reading it.
static int run_loop(struct server *s) {
  struct fuse_buf buf;
  memset(&buf, 0, sizeof buf);
  struct pollfd fds[2] = { { .fd = fuse_session_fd(s->se), .events = POLLIN }, { .fd = s->wake_fd, .events = POLLIN } };
  int err = 0;
  while (!fuse_session_exited(s->se)) {
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      err = errno;
      break;
    }
    if (fds[1].revents) break;
    int got = fuse_session_receive_buf(s->se, &buf);
    if (got == -EINTR || got == -EAGAIN) continue;
    if (got <= 0) { err = -got; break; } // 0: unmounted from outside
    fuse_session_process_buf(s->se, &buf);
  }
  free(buf.mem);
  return err;
}

static void *serve(void *arg) {
  struct server *s = arg;
  pthread_setname_np(pthread_self(), "p2prun-fuse"); // in top -H, perf and /proc/PID/task
  // Mounting runs here, not on Node's thread: without root it forks fusermount3 and waits for it.
  last_log[0] = 0;
  if (fuse_session_mount(s->se, s->mount_point) != 0) {
    pthread_mutex_lock(&log_lock);
    emit(s, EV_MOUNTED, 0, 0, 0, EIO, last_log[0] ? last_log : "fuse_session_mount failed");
    pthread_mutex_unlock(&log_lock);
    return NULL;
  }
  s->mounted = 1;
  emit(s, EV_MOUNTED, 0, 0, 0, 0, NULL);
  int err = run_loop(s);
  uint64_t woken;
  if (read(s->wake_fd, &woken, sizeof woken) < 0) emit(s, EV_ENDED, 0, 0, 0, (uint32_t)err, strerror(err ? err : ENODEV));
  return NULL;
}

// ---- Node-API ---------------------------------------------------------------------------------

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
  struct server *s = data;
  table_free(&s->table);
  free(s->mount_point);
  free(s->read_buffer.bytes);
  free(s->reply_buffer.bytes);
  free(s->pending);
  pthread_mutex_destroy(&s->lock);
  if (s->wake_fd >= 0) close(s->wake_fd);
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

static int get_view(napi_env env, napi_value config, struct server *s) {
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
      napi_create_reference(env, present, 1, &s->present_ref) != napi_ok) return 0;
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
  struct server *s = calloc(1, sizeof *s);
  if (!s) { napi_throw_error(env, NULL, "out of memory"); return NULL; }
  s->wake_fd = -1;
  pthread_mutex_init(&s->lock, NULL);
  char *options = NULL;
  if (!get_string(env, argv[0], "mountPoint", &s->mount_point) || !get_string(env, argv[0], "options", &options) ||
      napi_get_named_property(env, argv[0], "cacheSeconds", &value) != napi_ok || napi_get_value_double(env, value, &cache_seconds) != napi_ok ||
      napi_get_named_property(env, argv[0], "negativeCacheSeconds", &value) != napi_ok || napi_get_value_double(env, value, &negative_seconds) != napi_ok ||
      !get_view(env, argv[0], s)) {
    free(options);
    free_server(env, s, NULL);
    napi_throw_type_error(env, NULL, "fuseStart: config needs mountPoint, options, cacheSeconds, negativeCacheSeconds and view");
    return NULL;
  }
  s->cache_seconds = cache_seconds;
  s->negative_seconds = negative_seconds;
  if (napi_get_named_property(env, argv[0], "table", &table) != napi_ok || !table_build(env, table, &s->table)) {
    free(options);
    if (s->present_ref) napi_delete_reference(env, s->present_ref);
    free_server(env, s, NULL);
    return NULL;
  }
  char *fuse_argv[] = { "p2prun", "-o", options, NULL };
  struct fuse_args args = FUSE_ARGS_INIT(3, fuse_argv);
  last_log[0] = 0;
  s->se = fuse_session_new(&args, &ops, sizeof ops, s);
  fuse_opt_free_args(&args);
  free(options);
  s->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  napi_create_string_utf8(env, "p2prun FUSE server", NAPI_AUTO_LENGTH, &name);
  if (!s->se || s->wake_fd < 0 || napi_create_threadsafe_function(env, argv[1], NULL, name, 0, 1, s, free_server, NULL,
        call_js, &s->to_js) != napi_ok) {
    char why[300];
    snprintf(why, sizeof why, "cannot start a FUSE session: %s", last_log[0] ? last_log : strerror(errno));
    if (s->se) fuse_session_destroy(s->se);
    if (s->present_ref) napi_delete_reference(env, s->present_ref);
    free_server(env, s, NULL);
    napi_throw_error(env, NULL, why);
    return NULL;
  }
  // Node's signals (SIGTERM, SIGUSR1…) belong to its own thread.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int failed = pthread_create(&s->thread, NULL, serve, s);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (failed) {
    fuse_session_destroy(s->se);
    if (s->present_ref) napi_delete_reference(env, s->present_ref);
    s->present_ref = NULL;
    napi_release_threadsafe_function(s->to_js, napi_tsfn_release); // frees s
    napi_throw_error(env, NULL, strerror(failed));
    return NULL;
  }
  s->thread_started = 1;
  napi_create_external(env, s, NULL, NULL, &handle);
  return handle;
}

static struct server *server_of(napi_env env, napi_value value) {
  void *s = NULL;
  if (napi_get_value_external(env, value, &s) != napi_ok) napi_throw_type_error(env, NULL, "not a FUSE server handle");
  return s;
}

// The request JS answers, unless it was interrupted meanwhile or the server is stopping.
static fuse_req_t claim(napi_env env, napi_callback_info info, size_t want, napi_value *argv, struct server **out, struct pending *taken) {
  size_t argc = want;
  uint32_t id;
  struct pending found = { 0 };
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != want ||
      napi_get_value_uint32(env, argv[1], &id) != napi_ok) {
    napi_throw_type_error(env, NULL, "a FUSE reply takes a handle, a request id and its answer");
    return NULL;
  }
  struct server *s = *out = server_of(env, argv[0]);
  if (!s) return NULL;
  pthread_mutex_lock(&s->lock);
  if (s->closing || !take_pending(s, id, &found)) found.req = NULL;
  pthread_mutex_unlock(&s->lock);
  if (taken) *taken = found;
  return found.req;
}

// replyData(handle, id, buffer, length)
static napi_value reply_data(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  struct server *s;
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
// as the session thread answers a local read (a pread into a kept buffer), not from a copy JS
// made through its mapping of the store, whose pages it would touch (and fault in) first.
// Returns whether it was answered with the bytes; false (answered EIO) if they are not all in
// the store or it cannot be read. An interrupted request is already answered: true.
static napi_value reply_stored(napi_env env, napi_callback_info info) {
  napi_value argv[2], result;
  struct server *s;
  struct pending p;
  fuse_req_t req = claim(env, info, 2, argv, &s, &p);
  bool ok = true;
  if (req && p.length == 0) fuse_reply_buf(req, NULL, 0);
  else if (req && !(ok = reply_from_store(s, req, &s->reply_buffer, p.start, p.length))) fuse_reply_err(req, EIO);
  napi_get_boolean(env, ok, &result);
  return result;
}

// replyOpen(handle, id)
static napi_value reply_open(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  struct server *s;
  fuse_req_t req = claim(env, info, 2, argv, &s, NULL);
  if (!req) return NULL;
  struct fuse_file_info fi;
  memset(&fi, 0, sizeof fi);
  fi.keep_cache = 1;
  fuse_reply_open(req, &fi);
  return NULL;
}

// replyError(handle, id, errno)
static napi_value reply_error(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  struct server *s;
  int32_t err = EIO;
  fuse_req_t req = claim(env, info, 3, argv, &s, NULL);
  if (!req) return NULL;
  napi_get_value_int32(env, argv[2], &err);
  fuse_reply_err(req, err > 0 ? err : EIO);
  return NULL;
}

static napi_value counters_of(napi_env env, struct server *s) {
  napi_value result, value;
  napi_create_object(env, &result);
  for (int c = 0; c < C_COUNT; c++) {
    napi_create_double(env, (double)atomic_load_explicit(&s->counters[c], memory_order_relaxed), &value);
    napi_set_named_property(env, result, counter_names[c], value);
  }
  return result;
}

// counters(handle): { lookup, getattr, …, interrupted }
static napi_value counters(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 1) return NULL;
  struct server *s = server_of(env, argv[0]);
  return s ? counters_of(env, s) : NULL;
}

struct stopping {
  struct server *server;
  napi_deferred deferred;
  napi_async_work work;
};

// On the thread pool: ends the loop, then unmounts (lazily: readers that still hold files get
// ENOTCONN, nothing waits for them) and frees the session.
static void stop_work(napi_env env, void *data) {
  (void)env;
  struct server *s = ((struct stopping *)data)->server;
  uint64_t one = 1;
  if (write(s->wake_fd, &one, sizeof one) < 0) {} // an eventfd write of 1 cannot fail
  pthread_join(s->thread, NULL);
  if (s->mounted) fuse_session_unmount(s->se);
  fuse_session_destroy(s->se);
}

static void stop_done(napi_env env, napi_status status, void *data) {
  (void)status;
  struct stopping *st = data;
  struct server *s = st->server;
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
  struct server *s = server_of(env, argv[0]);
  if (!s) return NULL;
  pthread_mutex_lock(&s->lock);
  int again = s->closing;
  s->closing = 1;
  pthread_mutex_unlock(&s->lock);
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
  fuse_set_log_func(capture_log);
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
