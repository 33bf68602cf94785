#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "tree.h"

#define READ_EXECUTE_BITS 0555

// Paths seen so far, to find each entry's parent: entries are sorted, but a parent need not come
// right before its children ("a", "a-b", "a/c").
struct seen {
  uint32_t *slots;   // ino, 0 = empty
  uint32_t mask;
  const char **paths; // by ino
};

static uint32_t fnv (const char *s, size_t n) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
  return h;
}

static uint32_t seen_find (const struct seen *s, const char *path, size_t n) {
  for (uint32_t k = fnv(path, n) & s->mask; s->slots[k]; k = (k + 1) & s->mask) {
    const char *p = s->paths[s->slots[k]];
    if (strlen(p) == n && memcmp(p, path, n) == 0) return s->slots[k];
  }
  return 0;
}

static void seen_add (struct seen *s, uint32_t ino) {
  const char *p = s->paths[ino];
  uint32_t k = fnv(p, strlen(p)) & s->mask;
  while (s->slots[k]) k = (k + 1) & s->mask;
  s->slots[k] = ino;
}

static bool valid_path (const char *p) {
  if (!*p) return false;
  for (const char *part = p; part;) {
    const char *slash = strchr(part, '/');
    size_t n = slash ? (size_t)(slash - part) : strlen(part);
    if (n == 0 || (n == 1 && part[0] == '.') || (n == 2 && part[0] == '.' && part[1] == '.')) return false;
    part = slash ? slash + 1 : NULL;
  }
  return true;
}

// lib/tree.ts symlinkEscape: NULL, or how the link's target may leave the set.
static const char *escape_of (const char *link, const char *target) {
  if (target[0] == '/') return "is absolute";
  int levels = 0;
  for (const char *c = link; *c; c++) levels += *c == '/';
  bool descended = false;
  for (const char *part = target; part;) {
    const char *slash = strchr(part, '/');
    size_t n = slash ? (size_t)(slash - part) : strlen(part);
    bool up = n == 2 && part[0] == '.' && part[1] == '.';
    if (n == 0 || (n == 1 && part[0] == '.')) {} 
    else if (!up) descended = true;
    else if (descended) return "goes up (..) after a name, which may itself be a symlink";
    else if (--levels < 0) return "climbs above the top directory";
    part = slash ? slash + 1 : NULL;
  }
  return NULL;
}

#define FAIL(...) do { snprintf(error, error_size, __VA_ARGS__); goto failed; } while (0)

int tree_table (const struct description *d, uid_t uid, gid_t gid, struct table *t, char *error, size_t error_size) {
  memset(t, 0, sizeof *t);
  struct seen seen = { 0 };
  char *strings = NULL;
  uint32_t count = 0;
  size_t strings_size = 0;
  const uint8_t *at = NULL;
  struct bval key, item;
  while (bnext(&d->entries, &at, &key, &item)) { count++; strings_size += (size_t)(item.end - item.start) + 2; }
  if (count == 0) FAIL("has no tree entries");
  t->count = count;
  t->uid = uid;
  t->gid = gid;
  t->total_bytes = d->total_bytes;
  t->inodes = calloc(count + 1, sizeof *t->inodes);
  // Each entry's path, its name and its link target are within its own bytes: this bounds them all.
  strings = t->strings = malloc(2 * strings_size + 1);
  uint32_t slots = 16;
  while (slots < 2 * count) slots *= 2;
  seen.slots = calloc(slots, sizeof *seen.slots);
  seen.mask = slots - 1;
  seen.paths = calloc(count + 1, sizeof *seen.paths);
  if (!t->inodes || !strings || !seen.slots || !seen.paths) FAIL("is too large to hold in memory");

  size_t used = 0;
  const uint8_t *mt_at = NULL, *file_at = NULL;
  uint64_t offset = 0;
  uint32_t ino = 0;
  const char *prev = NULL;
  at = NULL;
  while (bnext(&d->entries, &at, &key, &item)) {
    ino++;
    struct bval p, type, mode, v, mtime;
    if (item.kind != B_DICT || !bdict_get(&item, "p", &p) || p.kind != B_STR || memchr(p.str, 0, p.len) ||
        !bdict_get(&item, "t", &type) || type.kind != B_STR || type.len != 1 || !bdict_get(&item, "m", &mode) ||
        mode.kind != B_INT || mode.i < 0 || mode.i > 07777) FAIL("has a malformed tree entry #%u", ino - 1);
    char *path = strings + used;
    memcpy(path, p.str, p.len);
    path[p.len] = 0;
    used += p.len + 1;
    seen.paths[ino] = path;
    char kind = (char)type.str[0];
    if (kind != 'd' && kind != 'f' && kind != 'l') FAIL("has a malformed entry for '%s'", path);
    struct inode *n = &t->inodes[ino];
    const char *slash = strrchr(path, '/');
    if (ino == 1) {
      if (*path || kind != 'd') FAIL("has an invalid path '%s'", path);
      n->parent = 1;
      n->name = path;
    } else {
      if (!valid_path(path)) FAIL("has an invalid path '%s'", path);
      if (strcmp(prev, path) >= 0) FAIL("has tree entries out of order at '%s'", path);
      uint32_t parent = slash ? seen_find(&seen, path, (size_t)(slash - path)) : 1;
      if (!parent || !S_ISDIR(t->inodes[parent].mode)) FAIL("has '%s' without its parent directory", path);
      n->parent = parent;
      n->name = slash ? slash + 1 : path;
    }
    prev = path;
    seen_add(&seen, ino);
    if (d->mtimes.kind == B_LIST && bnext(&d->mtimes, &mt_at, NULL, &mtime) && mtime.kind == B_INT) n->mtime_ms = mtime.i;
    n->target = n->name;
    if (kind == 'd') {
      n->mode = S_IFDIR | ((uint32_t)mode.i & 0777 & READ_EXECUTE_BITS);
      n->nlink += 2;
      if (ino > 1) t->inodes[n->parent].nlink++; // a subdirectory's ".."
      n->size = 4096;
    } else if (kind == 'l') {
      if (!bdict_get(&item, "l", &v) || v.kind != B_STR || v.len == 0 || memchr(v.str, 0, v.len)) FAIL("has symlink '%s' without a target", path);
      char *target = strings + used;
      memcpy(target, v.str, v.len);
      target[v.len] = 0;
      used += v.len + 1;
      const char *escape = escape_of(path, target);
      if (escape) FAIL("has symlink '%s' -> '%s' that can point outside the set: its target %s", path, target, escape);
      n->mode = S_IFLNK | 0777;
      n->nlink = 1;
      n->size = v.len;
      n->target = target;
    } else {
      struct bval size, hash, file, length, parts, part;
      if (!bdict_get(&item, "s", &size) || size.kind != B_INT || size.i < 0 || !bdict_get(&item, "h", &hash) ||
          hash.kind != B_STR || hash.len != 32) FAIL("has a malformed file entry '%s'", path);
      n->mode = S_IFREG | ((uint32_t)mode.i & 0777 & READ_EXECUTE_BITS);
      n->nlink = 1;
      n->size = (uint64_t)size.i;
      if (size.i > 0) {
        // The next file of the torrent's list must be this one: its bytes lie there.
        bool matches;
        if (d->single_file) {
          matches = file_at == NULL && (uint64_t)size.i == d->total_bytes;
          file_at = d->name.end;
        } else {
          matches = bnext(&d->files, &file_at, NULL, &file) && bdict_get(&file, "length", &length) && length.i == size.i &&
            bdict_get(&file, "path", &parts) && parts.kind == B_LIST;
          // Its path, joined with '/', must be this entry's.
          const char *rest = path;
          const uint8_t *part_at = NULL;
          while (matches && bnext(&parts, &part_at, NULL, &part)) {
            matches = part.kind == B_STR && strlen(rest) >= part.len && memcmp(rest, part.str, part.len) == 0 &&
              (rest[part.len] == '/' || rest[part.len] == 0);
            if (matches) rest += part.len + (rest[part.len] == '/');
          }
          matches = matches && *rest == 0;
        }
        if (!matches) FAIL("does not match its own torrent file list at '%s'", path);
        n->offset = offset;
        offset += (uint64_t)size.i;
      }
    }
  }
  if (offset != d->total_bytes) FAIL("lists torrent files that are not in its tree");
  free(seen.slots);
  free(seen.paths);
  if (!table_index(t)) { snprintf(error, error_size, "is too large to hold in memory"); table_free(t); return -1; }
  return 0;
failed:
  free(seen.slots);
  free(seen.paths);
  table_free(t);
  return -1;
}
