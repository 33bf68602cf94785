// The immutable inode table of the native FUSE server (fuse-table.h): copies the flat arrays
// lib/fs.ts builds, indexes each directory's children, and hashes (parent, name) for lookup, the
// request the loader makes most (once per library and search-path directory).
#include <stdlib.h>
#include <string.h>
#include "fuse-table.h"

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

static uint32_t hash(uint32_t parent, const char *name) {
  uint32_t h = 2166136261u ^ parent; // FNV-1a over the parent and the name
  for (const unsigned char *p = (const unsigned char *)name; *p; p++) h = (h ^ *p) * 16777619u;
  return h;
}

static int index_children(struct table *t) {
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

int table_build(napi_env env, napi_value from, struct table *t) {
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
  if (!index_children(t)) { table_free(t); return fail(env, "out of memory for the inode table"); }
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
