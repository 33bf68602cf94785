// p2prun's FUSE server without its host (fuse-session.h says what it does and who hosts it).
// Without the host's hop per request: fuse-native made one to Node's main thread for every
// request, ~80 us of CPU each, ~10x the work itself.
#define _GNU_SOURCE // pthread_setname_np
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>
#include <linux/fuse.h>
#include "fuse-session.h"

// FUSE passthrough (Linux 6.9), newer than the kernel headers and libfuse (3.14) Debian 12 has:
// include/uapi/linux/fuse.h's names for it.
#define PASSTHROUGH_FLAG2 (1u << (37 - 32)) // FUSE_PASSTHROUGH, in INIT's flags2
#define OPEN_PASSTHROUGH (1u << 7)          // FOPEN_PASSTHROUGH
struct backing_map { int32_t fd; uint32_t flags; uint64_t padding; };
#define BACKING_OPEN _IOW(229, 1, struct backing_map) // FUSE_DEV_IOC_BACKING_OPEN
// fuse_init_out's fields past libfuse 3.14's view of it, by offset.
#define INIT_OUT_FLAGS 12
#define INIT_OUT_FLAGS2 32
#define INIT_OUT_MAX_STACK_DEPTH 36
// An open's mode, in its file handle, for release to count down.
enum { FH_UNCOUNTED, FH_CACHED, FH_PASSTHROUGH };

#define AS_NAME(name) #name,
const char *const fuse_counter_names[C_COUNT] = { COUNTERS(AS_NAME) };

static void count(struct fuse_server *s, enum counter c, unsigned long long n) {
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

static void emit(struct fuse_server *s, enum event_kind kind, uint32_t id, uint64_t ino, uint64_t offset, uint32_t size, const char *message) {
  s->emit(s, kind, id, ino, offset, size, message);
}

// ---- forwarded requests ---------------------------------------------------------------------

static int take_pending(struct fuse_server *s, uint32_t id, struct pending *taken) {
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
  struct fuse_server *s = fuse_req_userdata(req);
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
static void forward(struct fuse_server *s, fuse_req_t req, enum event_kind kind, fuse_ino_t ino, uint64_t offset, uint32_t size, uint64_t start) {
  pthread_mutex_lock(&s->lock);
  if (s->pending_count == s->pending_capacity) {
    size_t capacity = s->pending_capacity ? 2 * s->pending_capacity : 16;
    struct pending *grown = realloc(s->pending, capacity * sizeof *grown);
    if (!grown) { pthread_mutex_unlock(&s->lock); fuse_reply_err(req, ENOMEM); return; }
    s->pending = grown;
    s->pending_capacity = capacity;
  }
  uint32_t id = ++s->next_id ? s->next_id : ++s->next_id; // 0 is never an id
  s->pending[s->pending_count++] = (struct pending){ id, req, ino, start, size };
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

static void fill_stat(const struct fuse_server *s, fuse_ino_t ino, const struct inode *n, struct stat *st) {
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
  struct fuse_server *s = fuse_req_userdata(req);
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
  // Reads are answered by splicing the store's pages to the device (fuse_server_reply_from_store):
  // the kernel copies them once, into the reader's page cache, with no copy into a buffer of ours
  // first. Not FUSE_CAP_SPLICE_MOVE: the store keeps its pages, other nodes are served from them.
  if (conn->capable & FUSE_CAP_SPLICE_WRITE) conn->want |= FUSE_CAP_SPLICE_WRITE;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name) {
  struct fuse_server *s = fuse_req_userdata(req);
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
  struct fuse_server *s = fuse_req_userdata(req);
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
  struct fuse_server *s = fuse_req_userdata(req);
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
static int is_local(const struct fuse_server *s, uint64_t start, uint64_t length) {
  if (s->store_fd < 0) return 0;
  for (uint64_t i = start / s->chunk_length, last = (start + length - 1) / s->chunk_length; i <= last; i++) {
    if (i / 8 >= s->present_length) return 0;
    if (!(__atomic_load_n(&s->present[i / 8], __ATOMIC_ACQUIRE) & (0x80 >> (i % 8)))) return 0;
  }
  return 1;
}

// ---- passthrough ----------------------------------------------------------------------------

bool fuse_server_may_pass_through(void) {
  FILE *f = fopen("/proc/self/status", "re");
  if (!f) return false;
  char line[256];
  unsigned long long effective = 0;
  while (fgets(line, sizeof line, f)) if (sscanf(line, "CapEff: %llx", &effective) == 1) break;
  fclose(f);
  return effective & (1ull << 21); // CAP_SYS_ADMIN
}

bool fuse_server_passes_through(struct fuse_server *s) {
  return atomic_load(&s->passthrough) == 1;
}

// libfuse 3.14 reads and writes the device through these (fuse_session_custom_io) once the mount
// is up, as it would itself: only so that an INIT whose kernel offers passthrough gets a reply that
// takes it (libfuse does not know the flag), with a stacking depth of 1 (the store's file system
// is not a FUSE or overlay mount itself).
static ssize_t device_read(int fd, void *buf, size_t length, void *data) {
  struct fuse_server *s = data;
  ssize_t n = read(fd, buf, length);
  const struct fuse_in_header *in = buf;
  if (n >= (ssize_t)(sizeof *in + sizeof(struct fuse_init_in)) && in->opcode == FUSE_INIT) {
    const struct fuse_init_in *init = (const void *)(in + 1);
    if (init->flags & FUSE_INIT_EXT && init->flags2 & PASSTHROUGH_FLAG2) s->init_unique = in->unique;
  }
  return n;
}

static ssize_t device_writev(int fd, struct iovec *iov, int count, void *data) {
  struct fuse_server *s = data;
  const struct fuse_out_header *out = iov[0].iov_base;
  if (s->init_unique && out->unique == s->init_unique && out->error == 0 && count == 2 && iov[1].iov_len >= INIT_OUT_MAX_STACK_DEPTH + 4) {
    uint8_t *init = iov[1].iov_base;
    uint32_t flags, flags2, depth = 1;
    memcpy(&flags, init + INIT_OUT_FLAGS, 4);
    memcpy(&flags2, init + INIT_OUT_FLAGS2, 4);
    flags |= FUSE_INIT_EXT;
    flags2 |= PASSTHROUGH_FLAG2;
    memcpy(init + INIT_OUT_FLAGS, &flags, 4);
    memcpy(init + INIT_OUT_FLAGS2, &flags2, 4);
    memcpy(init + INIT_OUT_MAX_STACK_DEPTH, &depth, 4);
    s->init_unique = 0;
    atomic_store(&s->passthrough, 1);
  }
  return writev(fd, iov, count);
}

static ssize_t device_splice(int in, off_t *in_at, int out, off_t *out_at, size_t length, unsigned int flags, void *data) {
  (void)data;
  return splice(in, in_at, out, out_at, length, flags);
}

// Inode `ino`'s backing id, registered with the kernel at its first passthrough open (under lock);
// 0 if it cannot be (passthrough is then off for the session: the store's file system or this
// process's privileges do not allow it).
static int32_t backing_of(struct fuse_server *s, fuse_ino_t ino) {
  if (s->backing[ino] > 0) return s->backing[ino];
  struct backing_map map = { .fd = s->file_fds[ino] };
  int id = ioctl(fuse_session_fd(s->se), BACKING_OPEN, &map);
  if (id <= 0) { atomic_store(&s->passthrough, 0); return 0; }
  return s->backing[ino] = id;
}

// Answers an open of `ino` whose file may be complete: in passthrough if it is and the inode has
// no open through the page cache (each open counted by its mode until its release); else through
// the page cache, which keeps its pages across opens (the content never changes).
void fuse_server_reply_open(struct fuse_server *s, fuse_req_t req, uint64_t ino) {
  const struct inode *n = table_get(&s->table, ino);
  bool counted = s->file_fds && n && s->file_fds[ino] >= 0;
  int32_t backing = 0;
  if (counted) {
    pthread_mutex_lock(&s->lock);
    if (s->open_modes[ino] > 0) backing = s->backing[ino]; // the kernel holds the inode in passthrough
    else if (s->open_modes[ino] == 0 && fuse_server_passes_through(s) && is_local(s, n->offset, n->size)) backing = backing_of(s, ino);
    s->open_modes[ino] += backing > 0 ? 1 : -1;
    pthread_mutex_unlock(&s->lock);
  }
  if (backing > 0) {
    // libfuse 3.14's fuse_reply_open cannot say passthrough: the reply written as the kernel reads it.
    struct fuse_open_out out = { .fh = FH_PASSTHROUGH, .open_flags = OPEN_PASSTHROUGH };
    memcpy(&out.padding, &backing, sizeof backing); // fuse_open_out's backing_id
    struct iovec iov = { &out, sizeof out };
    atomic_fetch_add_explicit(&s->passthrough_opens, 1, memory_order_relaxed);
    fuse_reply_iov(req, &iov, 1);
    return;
  }
  struct fuse_file_info fi;
  memset(&fi, 0, sizeof fi);
  fi.fh = counted ? FH_CACHED : FH_UNCOUNTED;
  fi.keep_cache = 1;
  fuse_reply_open(req, &fi);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  struct fuse_server *s = fuse_req_userdata(req);
  const struct inode *n = inode_of(req, ino, C_open);
  if (!n) return;
  if ((fi->flags & O_ACCMODE) != O_RDONLY || fi->flags & O_TRUNC) { fuse_reply_err(req, EROFS); return; }
  if (!S_ISREG(n->mode)) { fuse_reply_err(req, EISDIR); return; }
  // An incomplete file's open goes to JS, which decides when it returns (lib/fs.ts: by mode).
  if (n->size > 0 && !is_local(s, n->offset, n->size)) {
    forward(s, req, EV_OPEN, ino, 0, 0, 0);
    return;
  }
  fuse_server_reply_open(s, req, ino);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  struct fuse_server *s = fuse_req_userdata(req);
  count(s, C_release, 1);
  if (fi->fh != FH_UNCOUNTED && s->open_modes && ino <= s->table.count) {
    pthread_mutex_lock(&s->lock);
    s->open_modes[ino] += fi->fh == FH_PASSTHROUGH ? -1 : 1;
    pthread_mutex_unlock(&s->lock);
  }
  fuse_reply_err(req, 0);
}

// Answers `req` with the store's bytes [start, start + length) (length > 0); false, `req` left
// unanswered, if they are not all local. libfuse splices them from the store file through a pipe
// of this thread's to the device (replies under two pages, or a kernel without splice, it reads
// into memory and writes); a read of the store that fails answers with its errno.
bool fuse_server_reply_from_store(struct fuse_server *s, fuse_req_t req, uint64_t ino, uint64_t start, size_t length) {
  if (!is_local(s, start, length)) return false;
  struct fuse_bufvec bytes = FUSE_BUFVEC_INIT(length);
  bytes.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK | FUSE_BUF_FD_RETRY;
  const struct inode *n = table_get(&s->table, ino);
  bool own = s->file_fds && n && s->file_fds[ino] >= 0;
  bytes.buf[0].fd = own ? s->file_fds[ino] : s->store_fd;
  bytes.buf[0].pos = (off_t)(own ? start - n->offset : start);
  fuse_reply_data(req, &bytes, 0);
  return true;
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset, struct fuse_file_info *fi) {
  (void)fi;
  struct fuse_server *s = fuse_req_userdata(req);
  const struct inode *n = inode_of(req, ino, C_read);
  if (!n) return;
  // The kernel asks for whole pages past the end: clip to the file.
  if (offset < 0 || (uint64_t)offset >= n->size) { fuse_reply_buf(req, NULL, 0); return; }
  size_t length = n->size - (uint64_t)offset < size ? (size_t)(n->size - (uint64_t)offset) : size;
  uint64_t start = n->offset + (uint64_t)offset;
  if (fuse_server_reply_from_store(s, req, ino, start, length)) {
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
  struct fuse_server *s = fuse_req_userdata(req);
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
static int run_loop(struct fuse_server *s) {
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
  struct fuse_server *s = arg;
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
  // The device read and written as libfuse would, but for INIT's reply (device_writev): only where
  // the store has files of the set's own. Set before INIT is read: this thread reads it, below.
  // Without it (no memory), reads go through the page cache, as on a kernel without passthrough.
  const struct fuse_custom_io device = { .read = device_read, .writev = device_writev, .splice_send = device_splice, .splice_receive = device_splice };
  if (s->file_fds) fuse_session_custom_io(s->se, &device, fuse_session_fd(s->se));
  emit(s, EV_MOUNTED, 0, 0, 0, 0, NULL);
  int err = run_loop(s);
  uint64_t woken;
  if (read(s->wake_fd, &woken, sizeof woken) < 0) emit(s, EV_ENDED, 0, 0, 0, (uint32_t)err, strerror(err ? err : ENODEV));
  return NULL;
}


int fuse_server_init(struct fuse_server *s, const char *mount_point, const char *options, char *why, size_t why_size) {
  s->mount_point = strdup(mount_point);
  char *fuse_argv[] = { "p2prun", "-o", (char *)options, NULL };
  struct fuse_args args = FUSE_ARGS_INIT(3, fuse_argv);
  fuse_set_log_func(capture_log);
  last_log[0] = 0;
  s->se = fuse_session_new(&args, &ops, sizeof ops, s);
  fuse_opt_free_args(&args);
  s->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (s->file_fds) {
    s->backing = calloc(s->table.count + 1, sizeof *s->backing);
    s->open_modes = calloc(s->table.count + 1, sizeof *s->open_modes);
  }
  if (!s->mount_point || !s->se || s->wake_fd < 0 || (s->file_fds && (!s->backing || !s->open_modes))) {
    snprintf(why, why_size, "cannot start a FUSE session: %s", last_log[0] ? last_log : strerror(errno));
    if (s->se) fuse_session_destroy(s->se);
    s->se = NULL;
    return -1;
  }
  return 0;
}

int fuse_server_start(struct fuse_server *s) {
  // The host's signals (SIGTERM, SIGUSR1…) belong to its own thread.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int failed = pthread_create(&s->thread, NULL, serve, s);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (failed) return failed;
  s->thread_started = 1;
  return 0;
}

void fuse_server_stop(struct fuse_server *s) {
  pthread_mutex_lock(&s->lock);
  s->closing = 1;
  pthread_mutex_unlock(&s->lock);
  uint64_t one = 1;
  if (write(s->wake_fd, &one, sizeof one) < 0) {} // an eventfd write of 1 cannot fail
  if (s->thread_started) pthread_join(s->thread, NULL);
  s->thread_started = 0;
  if (s->mounted) fuse_session_unmount(s->se);
  s->mounted = 0;
  if (s->se) fuse_session_destroy(s->se);
  s->se = NULL;
}

void fuse_server_free(struct fuse_server *s) {
  table_free(&s->table);
  free(s->mount_point);
  free(s->pending);
  free(s->backing);
  free(s->open_modes);
  pthread_mutex_destroy(&s->lock);
  if (s->wake_fd >= 0) close(s->wake_fd);
}

fuse_req_t fuse_server_claim(struct fuse_server *s, uint32_t id, struct pending *taken) {
  struct pending found = { 0 };
  pthread_mutex_lock(&s->lock);
  if (s->closing || !take_pending(s, id, &found)) found.req = NULL;
  pthread_mutex_unlock(&s->lock);
  if (taken) *taken = found;
  return found.req;
}

bool fuse_server_reply_stored(struct fuse_server *s, uint32_t id) {
  struct pending p;
  fuse_req_t req = fuse_server_claim(s, id, &p);
  if (!req) return true;
  if (p.length == 0) { fuse_reply_buf(req, NULL, 0); return true; }
  if (fuse_server_reply_from_store(s, req, p.ino, p.start, p.length)) return true;
  fuse_reply_err(req, EIO);
  return false;
}

