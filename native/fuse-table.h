// The library set's immutable inode table, as the native FUSE server holds it: built once from the
// flat arrays lib/fs.ts makes from the description, then only read (from any thread, unlocked).
#ifndef P2PRUN_FUSE_TABLE_H
#define P2PRUN_FUSE_TABLE_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct inode {
  uint32_t mode;        // S_IF* type bits | permission bits, as lib/fs.ts decided them
  uint32_t nlink;
  uint32_t parent;      // the root is its own parent
  uint32_t first_child; // into table.children: this directory's entries in description order
  uint32_t child_count;
  uint64_t size;
  uint64_t offset;      // of a file's first byte in the set (the store's layout)
  int64_t mtime_ms;
  const char *name;
  const char *target;   // symlinks only
};

struct table {
  uint32_t count;       // inodes 1..count; inodes[0] is unused, so an inode number indexes directly
  struct inode *inodes;
  uint32_t *children;
  char *strings;
  uint32_t *slots;      // open addressing by (parent, name); 0 = empty
  uint32_t slot_mask;
  uid_t uid;
  gid_t gid;
  uint64_t total_bytes;
};

// Indexes a filled table (count, inodes, strings): each directory's children, the lookup slots;
// 0 when out of memory.
int table_index(struct table *t);
void table_free(struct table *t);
// The child of `parent` called `name`, or 0.
uint32_t table_lookup(const struct table *t, uint32_t parent, const char *name);
const struct inode *table_get(const struct table *t, uint64_t ino);
// Inode `ino`'s path below the root ("a/b/c"; "" for the root) into out; false if it does not fit.
bool table_path(const struct table *t, uint32_t ino, char *out, size_t size);
#endif
