// The node's store: the set's bytes, each at its offset in the set. One file holds them (made and
// unlinked at once in --store-dir: nothing is left behind however the agent ends), except that a
// file of the set may have a file of its own, holding its bytes from offset 0; its range in the
// first file stays a hole. That is what the kernel's FUSE passthrough needs to serve a file
// straight from the store (fuse-session.c): the programs that load it then map the store's pages
// themselves, with no second copy in the mount's page cache and no read through this agent. A file
// of its own costs a descriptor and splits the writes and sends that cross its edges, so only files
// of OWN_FILE_MIN bytes or more get one: the loader's libraries, not a Python tree's small modules.
// The head's seeder has no store file: each of the set's files is its source file, opened
// read-only (store_open_source), and sends go from the source's page cache.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>
#include "agent.h"
#include "../fuse-table.h"

#define OWN_FILE_MIN (64u * 1024)
#define SPARE_DESCRIPTORS 512 // for sockets, the FUSE device, the tracker, the state files

struct own_file {
  uint64_t start, length;
  int fd;
  struct timespec mtime, ctime; // a source file's when it was opened (the head's)
};

int store_fd = -1;
static struct own_file *own;  // by start
static uint32_t own_count;
static uint64_t total;

// An unlinked file of `length` bytes in `dir`; -1 with errno set.
static int unlinked_file (const char *dir, uint64_t length) {
  char path[4096];
  snprintf(path, sizeof path, "%s/p2prun-store-XXXXXX", dir);
  int fd = mkostemp(path, O_CLOEXEC);
  if (fd < 0) return -1;
  unlink(path);
  if (ftruncate(fd, (off_t)length) == 0) return fd;
  int err = errno;
  close(fd);
  errno = err;
  return -1;
}

static int by_start (const void *a, const void *b) {
  const struct own_file *x = a, *y = b;
  return x->start < y->start ? -1 : x->start > y->start;
}

// Room for `count` more descriptors: the soft limit raised to the hard one if it must be.
static bool descriptors_for (uint32_t count) {
  struct rlimit r;
  if (getrlimit(RLIMIT_NOFILE, &r) != 0) return false;
  rlim_t want = (rlim_t)count + SPARE_DESCRIPTORS;
  if (r.rlim_cur >= want) return true;
  if (r.rlim_max != RLIM_INFINITY && r.rlim_max < want) return false;
  r.rlim_cur = want;
  return setrlimit(RLIMIT_NOFILE, &r) == 0;
}

// The table's regular files of OWN_FILE_MIN bytes or more, each in a file of its own; false if the
// descriptors for them cannot be had (then there are none: one file holds all).
static bool make_own_files (const char *dir, const struct table *t) {
  uint32_t count = 0;
  for (uint32_t i = 1; i <= t->count; i++) count += S_ISREG(t->inodes[i].mode) && t->inodes[i].size >= OWN_FILE_MIN;
  if (count == 0 || !descriptors_for(count)) return false;
  own = calloc(count, sizeof *own);
  if (!own) return false;
  for (uint32_t i = 1; i <= t->count; i++) {
    const struct inode *n = &t->inodes[i];
    if (!S_ISREG(n->mode) || n->size < OWN_FILE_MIN) continue;
    int fd = unlinked_file(dir, n->size);
    if (fd < 0) return false;
    own[own_count++] = (struct own_file){ .start = n->offset, .length = n->size, .fd = fd };
  }
  qsort(own, own_count, sizeof *own, by_start);
  return true;
}

static void drop_own_files (void) {
  for (uint32_t i = 0; i < own_count; i++) close(own[i].fd);
  free(own);
  own = NULL;
  own_count = 0;
}

int store_open (const char *dir, uint64_t total_bytes, int kept_fd, const struct table *own_files_of) {
  total = total_bytes;
  if (kept_fd >= 0) {
    struct stat st;
    if (fstat(kept_fd, &st) < 0 || (uint64_t)st.st_size != total_bytes) { errno = EINVAL; return -1; }
    store_fd = kept_fd;
    return 0;
  }
  store_fd = unlinked_file(dir, total_bytes);
  if (store_fd < 0) return -1;
  if (own_files_of && !make_own_files(dir, own_files_of)) drop_own_files();
  return 0;
}

void store_close (void) {
  drop_own_files();
  if (store_fd >= 0) close(store_fd);
  store_fd = -1;
}

bool store_has_own_files (void) {
  return own_count > 0;
}

// The first own file that ends past `at` (own_count: none).
static uint32_t own_past (uint64_t at) {
  uint32_t lo = 0, hi = own_count;
  while (lo < hi) {
    uint32_t mid = (lo + hi) / 2;
    if (own[mid].start + own[mid].length <= at) lo = mid + 1; else hi = mid;
  }
  return lo;
}

// Where byte `at` of the set lies: a descriptor, the offset there, and how many bytes from `at` on
// lie there in a row.
static int locate (uint64_t at, off_t *pos, uint64_t *run) {
  uint32_t lo = own_past(at);
  if (lo < own_count && own[lo].start <= at) {
    *pos = (off_t)(at - own[lo].start);
    *run = own[lo].start + own[lo].length - at;
    return own[lo].fd;
  }
  *pos = (off_t)at;
  *run = (lo < own_count ? own[lo].start : total) - at;
  return store_fd;
}

int store_file_of (uint64_t start, uint64_t length) {
  off_t pos;
  uint64_t run;
  int fd = locate(start, &pos, &run);
  return fd != store_fd && pos == 0 && run == length ? fd : -1;
}

// pwrite or pread of the set's bytes from `at` on, file by file (`bytes` is only read when writing).
static ssize_t transfer (bool write, uint8_t *bytes, size_t length, uint64_t at) {
  size_t done = 0;
  while (done < length) {
    off_t pos;
    uint64_t run;
    int fd = locate(at + done, &pos, &run);
    size_t part = run < length - done ? (size_t)run : length - done;
    ssize_t n = write ? pwrite(fd, bytes + done, part, pos) : pread(fd, bytes + done, part, pos);
    if (n <= 0) return done > 0 ? (ssize_t)done : n;
    done += (size_t)n;
  }
  return (ssize_t)done;
}

ssize_t store_write (const void *data, size_t length, uint64_t at) {
  return transfer(true, (uint8_t *)data, length, at);
}

ssize_t store_read (void *out, size_t length, uint64_t at) {
  return transfer(false, out, length, at);
}

ssize_t store_send (int socket, uint64_t at, size_t length) {
  off_t pos;
  uint64_t run;
  int fd = locate(at, &pos, &run);
  return sendfile(socket, fd, &pos, run < length ? (size_t)run : length);
}

int store_open_source (const struct table *t, char *error, size_t error_size) {
  uint32_t count = 0;
  for (uint32_t i = 1; i <= t->count; i++) count += S_ISREG(t->inodes[i].mode) && t->inodes[i].size > 0;
  total = t->total_bytes;
  if (!descriptors_for(count) || !(own = calloc(count ? count : 1, sizeof *own))) {
    snprintf(error, error_size, "no room for a descriptor per file of the set (%u): %s", count, strerror(errno ? errno : EMFILE));
    return -1;
  }
  for (uint32_t i = 1; i <= t->count; i++) {
    const struct inode *n = &t->inodes[i];
    if (!S_ISREG(n->mode) || n->size == 0) continue;
    struct stat st;
    int fd = source_open(t, i, &st, error, error_size);
    if (fd < 0) {
      drop_own_files();
      return -1;
    }
    own[own_count++] = (struct own_file){ .start = n->offset, .length = n->size, .fd = fd, .mtime = st.st_mtim, .ctime = st.st_ctim };
  }
  qsort(own, own_count, sizeof *own, by_start);
  return 0;
}

// A write changes a file's mtime and ctime (ctime too when the mtime is set back, as cp -p does).
bool store_source_changed (uint64_t at, uint64_t length) {
  for (uint32_t i = own_past(at); i < own_count && own[i].start < at + length; i++) {
    const struct own_file *f = &own[i];
    struct stat st;
    if (fstat(f->fd, &st) < 0 || (uint64_t)st.st_size != f->length || st.st_mtim.tv_sec != f->mtime.tv_sec ||
        st.st_mtim.tv_nsec != f->mtime.tv_nsec || st.st_ctim.tv_sec != f->ctime.tv_sec || st.st_ctim.tv_nsec != f->ctime.tv_nsec) return true;
  }
  return false;
}
