// The fallback when the swarm stalls (lib/swarm/node.ts's fallBack, lib/swarm/source-files.ts):
// the pieces reads wait for, read from the directories the set was described from if this node
// can read them, each checked against its hash like a peer's. lib/source-layout.ts owns how a
// described path maps to a source file; the launch hands the agent its layout as --source
// options: one directory (the set itself), or several, each NAME=DIR for the set's top directory
// NAME. The reads block the loop: it waits on a stalled swarm anyway, and the FUSE thread keeps
// taking requests meanwhile.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "agent.h"
#include "../fuse-table.h"

static struct { char *name; const char *dir; } dirs[MAX_ADDRESSES];
static int dir_count;

int source_add (const char *arg, char *error, size_t error_size) {
  // NAME holds no '/' (it is a directory's base name): the first "=/" ends it.
  const char *split = arg[0] == '/' ? NULL : strstr(arg, "=/");
  if (arg[0] != '/' && !split) { snprintf(error, error_size, "--source takes an absolute directory, not '%s'", arg); return -1; }
  bool named = split != NULL;
  if (dir_count == MAX_ADDRESSES || (dir_count > 0 && (!named || dirs[0].name[0] == 0))) {
    snprintf(error, error_size, "--source is one directory, or at most %d named ones", MAX_ADDRESSES);
    return -1;
  }
  dirs[dir_count].name = named ? strndup(arg, (size_t)(split - arg)) : strdup("");
  dirs[dir_count].dir = named ? split + 1 : arg;
  dir_count++;
  return 0;
}

bool source_given (void) {
  return dir_count > 0;
}

// The source file behind a described path (lib/source-layout.ts's sourcePath); false if none is.
static bool source_path (const char *rel, char *out, size_t size) {
  for (int i = 0; i < dir_count; i++) {
    size_t len = strlen(dirs[i].name);
    if (len == 0) return (size_t)snprintf(out, size, "%s/%s", dirs[i].dir, rel) < size;
    if (strncmp(rel, dirs[i].name, len) == 0 && (rel[len] == '/' || rel[len] == 0)) {
      return (size_t)snprintf(out, size, "%s%s", dirs[i].dir, rel + len) < size;
    }
  }
  return false;
}

int source_open (const struct table *t, uint32_t ino, struct stat *st, char *error, size_t error_size) {
  char rel[4096], file[4096 + 256];
  if (!table_path(t, ino, rel, sizeof rel) || !source_path(rel, file, sizeof file)) {
    snprintf(error, error_size, "%s lies outside the source directories", rel);
    return -1;
  }
  int fd = open(file, O_RDONLY | O_CLOEXEC);
  if (fd < 0 || fstat(fd, st) < 0 || (uint64_t)st->st_size != t->inodes[ino].size) {
    if (fd < 0) snprintf(error, error_size, "%s: %s", file, strerror(errno));
    else snprintf(error, error_size, "%s has %lld bytes, the description says %llu", file, (long long)st->st_size, (unsigned long long)t->inodes[ino].size);
    if (fd >= 0) close(fd);
    return -1;
  }
  return fd;
}

int source_read_piece (const struct table *t, uint32_t index, uint8_t *out, char *error, size_t error_size) {
  uint64_t start = (uint64_t)index * job.desc.piece_length, end = start + piece_size(&job.desc, index), covered = 0;
  for (uint32_t ino = 2; ino <= t->count; ino++) {
    const struct inode *n = &t->inodes[ino];
    if (!S_ISREG(n->mode) || n->offset >= end || n->offset + n->size <= start) continue;
    uint64_t from = n->offset > start ? n->offset : start, to = n->offset + n->size < end ? n->offset + n->size : end;
    char rel[4096], file[4096 + 256];
    if (!table_path(t, ino, rel, sizeof rel) || !source_path(rel, file, sizeof file)) {
      snprintf(error, error_size, "%s lies outside the source directories", rel);
      return -1;
    }
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    ssize_t got = fd < 0 ? -1 : pread(fd, out + (from - start), to - from, (off_t)(from - n->offset));
    int e = errno;
    if (fd >= 0) close(fd);
    if (got != (ssize_t)(to - from)) {
      snprintf(error, error_size, "%s: %s", file, got < 0 ? strerror(e) : "shorter than described");
      return -1;
    }
    covered += to - from;
  }
  if (covered < end - start) { snprintf(error, error_size, "piece %u is not in the described files", index); return -1; }
  return 0;
}
