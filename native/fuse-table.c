// The immutable inode table of the native FUSE server (fuse-table.h), once its host filled it in
// (fuse-server.c from lib/fs.ts's flat arrays; the native agent from the description): indexes
// each directory's children, and hashes (parent, name) for lookup, the request the loader makes
// most (once per library and search-path directory).
#include <stdlib.h>
#include <string.h>
#include "fuse-table.h"

static uint32_t hash(uint32_t parent, const char *name) {
  uint32_t h = 2166136261u ^ parent; // FNV-1a over the parent and the name
  for (const unsigned char *p = (const unsigned char *)name; *p; p++) h = (h ^ *p) * 16777619u;
  return h;
}

int table_index(struct table *t) {
  uint32_t *filled = calloc(t->count + 1, sizeof *filled);
  t->children = malloc((t->count ? t->count : 1) * sizeof *t->children);
  if (!filled || !t->children) { free(filled); return 0; }
  for (uint32_t ino = 2; ino <= t->count; ino++) t->inodes[t->inodes[ino].parent].child_count++;
  uint32_t next = 0;
  for (uint32_t ino = 1; ino <= t->count; ino++) { t->inodes[ino].first_child = next; next += t->inodes[ino].child_count; }
  for (uint32_t ino = 2; ino <= t->count; ino++) {
    struct inode *p = &t->inodes[t->inodes[ino].parent];
    t->children[p->first_child + filled[t->inodes[ino].parent]++] = ino;
  }
  free(filled);
  uint32_t slots = 16;
  while (slots < 2 * t->count) slots *= 2;
  t->slots = calloc(slots, sizeof *t->slots);
  if (!t->slots) return 0;
  t->slot_mask = slots - 1;
  for (uint32_t ino = 2; ino <= t->count; ino++) {
    uint32_t s = hash(t->inodes[ino].parent, t->inodes[ino].name) & t->slot_mask;
    while (t->slots[s]) s = (s + 1) & t->slot_mask;
    t->slots[s] = ino;
  }
  return 1;
}

void table_free(struct table *t) {
  free(t->inodes);
  free(t->children);
  free(t->strings);
  free(t->slots);
  memset(t, 0, sizeof *t);
}

uint32_t table_lookup(const struct table *t, uint32_t parent, const char *name) {
  for (uint32_t s = hash(parent, name) & t->slot_mask; t->slots[s]; s = (s + 1) & t->slot_mask) {
    const struct inode *n = &t->inodes[t->slots[s]];
    if (n->parent == parent && strcmp(n->name, name) == 0) return t->slots[s];
  }
  return 0;
}

const struct inode *table_get(const struct table *t, uint64_t ino) {
  return ino >= 1 && ino <= t->count ? &t->inodes[ino] : NULL;
}

bool table_path(const struct table *t, uint32_t ino, char *out, size_t size) {
  if (size == 0 || ino < 1 || ino > t->count) return false;
  size_t at = size - 1;
  out[at] = 0;
  while (ino != 1) {
    const struct inode *n = &t->inodes[ino];
    size_t len = strlen(n->name);
    if (len + 1 > at) return false;
    at -= len;
    memcpy(out + at, n->name, len);
    if (n->parent != 1) out[--at] = '/';
    ino = n->parent;
  }
  memmove(out, out + at, size - at);
  return true;
}
