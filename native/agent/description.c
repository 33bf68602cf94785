#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <openssl/sha.h>
#include "bencode.h"
#include "description.h"

#define MAX_DESCRIPTION (256 << 20)
#define FAIL(...) do { snprintf(error, error_size, __VA_ARGS__); description_free(d); return -1; } while (0)

static char *copy_str (const struct bval *v) {
  char *s = malloc(v->len + 1);
  if (!s) return NULL;
  memcpy(s, v->str, v->len);
  s[v->len] = 0;
  return s;
}

static void add_tracker (struct description *d, const struct bval *url) {
  if (url->kind != B_STR || d->tracker_count == MAX_ADDRESSES) return;
  for (int i = 0; i < d->tracker_count; i++) {
    if (strlen(d->trackers[i]) == url->len && memcmp(d->trackers[i], url->str, url->len) == 0) return;
  }
  char *s = copy_str(url);
  if (s) d->trackers[d->tracker_count++] = s;
}

uint32_t piece_size (const struct description *d, uint32_t index) {
  if (index >= d->piece_count) return 0;
  uint64_t start = (uint64_t)index * d->piece_length;
  uint64_t left = d->total_bytes - start;
  return left < d->piece_length ? (uint32_t)left : d->piece_length;
}

int description_read (const char *file, struct description *d, char *error, size_t error_size) {
  memset(d, 0, sizeof *d);
  // Read to the end, not by its size: "-" is standard input, a pipe from the launch's agent.
  int fd = strcmp(file, "-") == 0 ? dup(0) : open(file, O_RDONLY | O_CLOEXEC);
  if (fd < 0) FAIL("cannot read description %s: %s", file, strerror(errno));
  size_t capacity = 0;
  for (;;) {
    if (d->size == capacity) {
      uint8_t *grown = capacity < MAX_DESCRIPTION ? realloc(d->bytes, capacity = capacity ? 2 * capacity : 65536) : NULL;
      if (!grown) { close(fd); FAIL("description %s is larger than %d MiB", file, MAX_DESCRIPTION >> 20); }
      d->bytes = grown;
    }
    ssize_t n = read(fd, d->bytes + d->size, capacity - d->size);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) { int e = errno; close(fd); FAIL("cannot read description %s: %s", file, strerror(e)); }
    if (n == 0) break;
    d->size += (size_t)n;
  }
  close(fd);
  if (!d->bytes || d->size == 0) FAIL("cannot read description %s", file);
  return description_parse(d, file, error, error_size);
}

int description_parse (struct description *d, const char *file, char *error, size_t error_size) {
  const uint8_t *at = d->bytes;
  struct bval torrent, info, v;
  if (!bdecode(&at, d->bytes + d->size, &torrent) || torrent.kind != B_DICT || at != d->bytes + d->size) {
    FAIL("description %s is not a torrent file (malformed bencode)", file);
  }
  if (!bdict_get(&torrent, "info", &info) || info.kind != B_DICT) FAIL("description %s is not a torrent file (no info dictionary)", file);
  if (!bdict_get(&info, "p2prun", &v) || v.kind != B_DICT) FAIL("description %s is a torrent but not a p2prun description", file);
  if (!bdict_get(&v, "entries", &d->entries) || d->entries.kind != B_LIST) FAIL("description %s has no tree entries", file);
  if (!bdict_get(&info, "name", &d->name) || d->name.kind != B_STR) FAIL("description %s has no name", file);
  SHA1(info.start, (size_t)(info.end - info.start), d->info_hash);

  if (!bdict_get(&info, "piece length", &v) || v.kind != B_INT || v.i < 16384 || v.i > (1 << 26) || (v.i & (v.i - 1)) != 0) {
    FAIL("description %s has an invalid piece length", file);
  }
  d->piece_length = (uint32_t)v.i;
  if (bdict_get(&info, "length", &v) && v.kind == B_INT && v.i >= 0) {
    d->total_bytes = (uint64_t)v.i;
    d->single_file = true;
  } else if (bdict_get(&info, "files", &v) && v.kind == B_LIST) {
    d->files = v;
    const uint8_t *it = NULL;
    struct bval entry, length;
    while (bnext(&v, &it, NULL, &entry)) {
      if (entry.kind != B_DICT || !bdict_get(&entry, "length", &length) || length.kind != B_INT || length.i < 0) {
        FAIL("description %s has a malformed file list", file);
      }
      d->total_bytes += (uint64_t)length.i;
    }
  } else {
    FAIL("description %s lists no files", file);
  }
  uint64_t count = (d->total_bytes + d->piece_length - 1) / d->piece_length;
  if (!bdict_get(&info, "pieces", &v) || v.kind != B_STR || v.len != 20 * count || count > UINT32_MAX) {
    FAIL("description %s has piece hashes that do not match its size", file);
  }
  d->piece_count = (uint32_t)count;
  d->piece_hashes = v.str;

  if (bdict_get(&torrent, "announce", &v)) add_tracker(d, &v);
  if (bdict_get(&torrent, "announce-list", &v) && v.kind == B_LIST) {
    const uint8_t *tier_at = NULL;
    struct bval tier, url;
    while (bnext(&v, &tier_at, NULL, &tier)) {
      const uint8_t *url_at = NULL;
      if (tier.kind == B_LIST) while (bnext(&tier, &url_at, NULL, &url)) add_tracker(d, &url);
    }
  }
  struct bval outer, seeders, seeder;
  if (bdict_get(&torrent, "p2prun", &outer) && bdict_get(&outer, "mtimes", &d->mtimes) && d->mtimes.kind != B_LIST) d->mtimes.kind = B_INT;
  if (bdict_get(&torrent, "p2prun", &outer) && bdict_get(&outer, "seeders", &seeders) && seeders.kind == B_LIST) {
    const uint8_t *it = NULL;
    while (bnext(&seeders, &it, NULL, &seeder) && d->seeder_count < MAX_ADDRESSES) {
      if (seeder.kind == B_STR && (d->seeders[d->seeder_count] = copy_str(&seeder))) d->seeder_count++;
    }
  }
  return 0;
}

void description_free (struct description *d) {
  for (int i = 0; i < d->tracker_count; i++) free(d->trackers[i]);
  for (int i = 0; i < d->seeder_count; i++) free(d->seeders[i]);
  free(d->bytes);
  memset(d, 0, sizeof *d);
}
