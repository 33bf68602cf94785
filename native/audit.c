// p2prun-audit.so, an LD_AUDIT module. The dynamic linker shows la_objsearch every path it is
// about to open (absolute DT_NEEDED or dlopen, RPATH, RUNPATH, LD_LIBRARY_PATH, ld.so.cache,
// default dirs); a path inside a served directory is sent to the same path under the node's
// read-only mount (P2PRUN_AUDIT_MOUNT). Directories served whole (P2PRUN_AUDIT_WHOLE: --libs DIR)
// answer every lookup from the mount, misses included, without asking the shared file system. Of
// the others (P2PRUN_AUDIT_SOME: where the program's load closure was found) the mount holds only
// some files: a path goes there only if the mount has it, so a library the closure did not hold (a
// plugin loaded by name) still loads from where it lies.
// It runs in ld.so's audit namespace, with its own libc: no TLS of its own, no constructors, no
// stdio; the environment is read once, in la_version.
#define _GNU_SOURCE
#include <link.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

static char *mount_point; // NULL: not configured, every name passes unchanged
static size_t mount_len;
static struct { const char *path; size_t len; int some; } *dirs;
static size_t ndirs;
static int debug;

// Trailing slashes dropped: "/" becomes "", which then matches every absolute path.
static size_t trimmed_len(const char *s) {
  size_t n = strlen(s);
  while (n > 0 && s[n - 1] == '/') n--;
  return n;
}

// Appends a colon-separated list's absolute entries (kept for good: dirs point into it).
static void add_dirs(const char *list, int some) {
  char *copy = list ? strdup(list) : NULL;
  for (char *s = copy, *next; s; s = next) {
    if ((next = strchr(s, ':'))) *next++ = '\0';
    if (s[0] == '/') dirs[ndirs].path = s, dirs[ndirs].some = some, dirs[ndirs++].len = trimmed_len(s); // empty or relative: ignored
  }
}

static void configure(void) {
  const char *m = getenv("P2PRUN_AUDIT_MOUNT"), *g = getenv("P2PRUN_AUDIT_DEBUG");
  const char *whole = getenv("P2PRUN_AUDIT_WHOLE"), *some = getenv("P2PRUN_AUDIT_SOME");
  if (!m || m[0] != '/') return;
  size_t max = 2;
  for (const char *p = whole ? whole : ""; *p; p++) max += *p == ':';
  for (const char *p = some ? some : ""; *p; p++) max += *p == ':';
  if (!(dirs = malloc(max * sizeof *dirs))) return;
  add_dirs(whole, 0);
  add_dirs(some, 1);
  mount_len = trimmed_len(m);
  // A copy, not the environment's string: some programs overwrite that (setproctitle).
  if (ndirs > 0) mount_point = strndup(m, mount_len);
  debug = g && strcmp(g, "1") == 0;
}

unsigned int la_version(unsigned int version) {
  if (version == 0) return 0;
  if (!dirs) configure();
  // Never more than this ld.so speaks, so a build on a newer glibc still loads on older nodes.
  return version < LAV_CURRENT ? version : LAV_CURRENT;
}

// No LA_FLG_BIND* flags: no symbol-binding callbacks, PLT calls stay direct.
unsigned int la_objopen(struct link_map *map, Lmid_t lmid, uintptr_t *cookie) {
  (void)map, (void)lmid, (void)cookie;
  return 0;
}

static int under(const char *path, const char *dir, size_t len) {
  return strncmp(path, dir, len) == 0 && (path[len] == '/' || path[len] == '\0');
}

// RUNPATH "$ORIGIN/../lib" reaches us as ".../bin/../lib/libx.so": drop "." and "//", resolve ".."
// lexically, so what must lie in a served dir is where the name points, not how it is spelled.
// 0 if ".." climbs above "/" or the result is "/".
static size_t resolve(const char *name, char *out) {
  size_t o = 0;
  for (const char *p = name, *e; *p; p = e) {
    while (*p == '/') p++;
    for (e = p; *e && *e != '/'; e++) {}
    size_t len = (size_t)(e - p);
    if (len == 0 || (len == 1 && p[0] == '.')) continue;
    if (len == 2 && p[0] == '.' && p[1] == '.') {
      if (o == 0) return 0;
      while (out[--o] != '/') {}
      continue;
    }
    out[o++] = '/';
    memcpy(out + o, p, len);
    o += len;
  }
  out[o] = '\0';
  return o;
}

char *la_objsearch(const char *name, uintptr_t *cookie, unsigned int flag) {
  (void)cookie, (void)flag;
  char path[4096];
  size_t n = strlen(name);
  if (!mount_point || name[0] != '/' || under(name, mount_point, mount_len)) return (char *)name;
  if (n >= sizeof path || !(n = resolve(name, path)) || under(path, mount_point, mount_len)) return (char *)name;
  for (size_t i = 0; i < ndirs; i++) {
    if (strncmp(path, dirs[i].path, dirs[i].len) != 0 || path[dirs[i].len] != '/') continue; // (resolved: no trailing '/')
    char *out = malloc(mount_len + n + 1); // never freed: ld.so may keep it as the object's name
    if (!out) return (char *)name;
    memcpy(out, mount_point, mount_len);
    memcpy(out + mount_len, path, n + 1);
    // The mount answers at once: its lookups are served natively, its misses cached by the kernel.
    if (dirs[i].some && access(out, F_OK) != 0) { free(out); continue; }
    if (debug) { // one writev: lines of concurrent processes do not interleave
      struct iovec v[] = { { "p2prun-audit: ", 14 }, { (char *)name, strlen(name) }, { " -> ", 4 }, { out, mount_len + n }, { "\n", 1 } };
      ssize_t r = writev(2, v, 5);
      (void)r;
    }
    return out;
  }
  return (char *)name;
}
