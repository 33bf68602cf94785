// What the agent needs of a description file (lib/description.ts owns the format and writes it):
// the infohash, the pieces, and where to find the swarm. The bytes stay in memory; the piece
// hashes point into them.
#ifndef P2PRUN_DESCRIPTION_H
#define P2PRUN_DESCRIPTION_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "bencode.h"

#define MAX_ADDRESSES 16

struct description {
  uint8_t *bytes;
  size_t size;
  uint8_t info_hash[20];
  uint32_t piece_length;
  uint32_t piece_count;
  uint64_t total_bytes;
  const uint8_t *piece_hashes;       // 20 bytes per piece, in `bytes`
  char *trackers[MAX_ADDRESSES];     // announce URLs
  int tracker_count;
  char *seeders[MAX_ADDRESSES];      // host:port
  int seeder_count;
  // The tree (tree.c reads it): info.p2prun.entries, p2prun.mtimes beside it, the torrent's file list.
  struct bval entries, mtimes, files;
  bool single_file;                  // the torrent is one file, named `name`
  struct bval name;
};

// Reads and checks `file`; on failure returns -1 with a one-line reason in `error`.
int description_read (const char *file, struct description *d, char *error, size_t error_size);
// Checks the bytes in d->bytes (d->size of them, malloc'd: `d` owns them from here), named `file`
// in messages; as description_read.
int description_parse (struct description *d, const char *file, char *error, size_t error_size);
void description_free (struct description *d);
// The size of piece `index` (the last one may be shorter).
uint32_t piece_size (const struct description *d, uint32_t index);
#endif
