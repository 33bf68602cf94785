// p2prun-audit.so, an LD_AUDIT module. The dynamic linker shows la_objsearch every path it is
// about to open (absolute DT_NEEDED or dlopen, RPATH, RUNPATH, LD_LIBRARY_PATH, ld.so.cache,
// default dirs); a path inside a served directory is sent to the same path under the node's
// read-only mount (P2PRUN_AUDIT_MOUNT). Directories served whole (P2PRUN_AUDIT_WHOLE: --libs DIR)
// answer every lookup from the mount, misses included, without asking the shared file system. Of
// the others (P2PRUN_AUDIT_SOME: where the program's load closure was found) the mount holds only
// some files: a path goes there only if the mount has it, so a library the closure did not hold (a
// plugin loaded by name) still loads from where it lies. Which files it has there is read once per
// directory from the mount's own listing, not asked file by file: a 200-library program whose
// DT_RPATH names such a directory looks up 200 names in it.
//
// It runs in ld.so's audit namespace, where a libc of its own would be loaded, relocated and
// initialised again for every rank: measured, that was two thirds of the module's cost to a
// 200-library start (+2.7 of +3.8 %). So on x86-64 and AArch64 it uses no libc at all: system
// calls directly, the environment read from /proc/self/environ once (in la_version, as getenv would
// have seen it), memory from mmap. Elsewhere it is built against libc (the SYS_* functions below).
// No TLS, no constructors, no stdio either way.
#define _GNU_SOURCE
#include <fcntl.h>
#include <link.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__aarch64__)
#define FREESTANDING 1
static long sys6(long n, long a, long b, long c, long d, long e, long f) {
#if defined(__x86_64__)
  register long r10 __asm__("r10") = d, r8 __asm__("r8") = e, r9 __asm__("r9") = f;
  long ret;
  __asm__ volatile("syscall" : "=a"(ret) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9) : "rcx", "r11", "memory");
  return ret;
#else
  register long x8 __asm__("x8") = n, x0 __asm__("x0") = a, x1 __asm__("x1") = b, x2 __asm__("x2") = c,
    x3 __asm__("x3") = d, x4 __asm__("x4") = e, x5 __asm__("x5") = f;
  __asm__ volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x5) : "memory");
  return x0;
#endif
}
static int sys_open(const char *path) { return (int)sys6(SYS_openat, AT_FDCWD, (long)path, O_RDONLY | O_CLOEXEC, 0, 0, 0); }
static long sys_read(int fd, char *buf, size_t n) { return sys6(SYS_read, fd, (long)buf, (long)n, 0, 0, 0); }
static void sys_close(int fd) { sys6(SYS_close, fd, 0, 0, 0, 0, 0); }
static int sys_exists(const char *path) { return sys6(SYS_faccessat, AT_FDCWD, (long)path, F_OK, 0, 0, 0) == 0; }
static int sys_open_dir(const char *path) { return (int)sys6(SYS_openat, AT_FDCWD, (long)path, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0, 0, 0); }
static long sys_getdents(int fd, char *buf, size_t n) { return sys6(SYS_getdents64, fd, (long)buf, (long)n, 0, 0, 0); }
static void sys_writev(const struct iovec *v, int n) { sys6(SYS_writev, 2, (long)v, n, 0, 0, 0); }
static void *sys_map(size_t n) {
  long p = sys6(SYS_mmap, 0, (long)n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  return p < 0 && p > -4096 ? NULL : (void *)p;
}
// What the compiler may call for copies and zeroing, here since no libc provides it.
__attribute__((visibility("hidden"))) void *memcpy(void *dst, const void *src, size_t n) {
  char *d = dst;
  const char *s = src;
  while (n--) *d++ = *s++;
  return dst;
}
__attribute__((visibility("hidden"))) void *memset(void *dst, int c, size_t n) {
  char *d = dst;
  while (n--) *d++ = (char)c;
  return dst;
}
#else
static int sys_open(const char *path) { return open(path, O_RDONLY | O_CLOEXEC); }
static long sys_read(int fd, char *buf, size_t n) { return read(fd, buf, n); }
static void sys_close(int fd) { close(fd); }
static int sys_exists(const char *path) { return access(path, F_OK) == 0; }
static int sys_open_dir(const char *path) { return open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC); }
static long sys_getdents(int fd, char *buf, size_t n) { return syscall(SYS_getdents64, fd, buf, n); }
static void sys_writev(const struct iovec *v, int n) { ssize_t r = writev(2, v, n); (void)r; }
static void *sys_map(size_t n) {
  void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  return p == MAP_FAILED ? NULL : p;
}
#endif

static size_t str_len(const char *s) {
  size_t n = 0;
  while (s[n]) n++;
  return n;
}

static int starts_with(const char *s, const char *prefix, size_t n) {
  for (size_t i = 0; i < n; i++) if (s[i] != prefix[i]) return 0;
  return 1;
}

// Memory that lives as long as the process (ld.so may keep a returned name as the object's).
static char *arena;
static size_t arena_left;
static void *keep(size_t n) {
  n = (n + 15) & ~(size_t)15;
  if (n > arena_left) {
    size_t size = n > 65536 ? n : 65536;
    if (!(arena = sys_map(size))) return NULL;
    arena_left = size;
  }
  void *p = arena;
  arena += n;
  arena_left -= n;
  return p;
}

static char *mount_point; // NULL: not configured, every name passes unchanged
static size_t mount_len;
// A served directory. Of one served in part (some), the names the mount holds directly in it, as a
// hash set (open addressing, a power of two of slots, NULL: empty), read on its first lookup;
// `names` stays NULL if the listing could not be read: then each lookup asks the mount.
static struct dir {
  const char *path;
  size_t len;
  int some, listed;
  const char **names;
  size_t slots;
} *dirs;
static size_t ndirs;
static int debug;

// Trailing slashes dropped: "/" becomes "", which then matches every absolute path.
static size_t trimmed_len(const char *s, size_t n) {
  while (n > 0 && s[n - 1] == '/') n--;
  return n;
}

// The value of NAME in the environment block (NUL-separated NAME=VALUE strings), or NULL.
static char *env_value(char *env, size_t len, const char *name) {
  size_t n = str_len(name);
  for (char *s = env; s < env + len; s += str_len(s) + 1) {
    if (starts_with(s, name, n) && s[n] == '=') return s + n + 1;
  }
  return NULL;
}

// The environment this process started with (getenv's, before anything changed it); NULL if unreadable.
static char *read_environment(size_t *len) {
  int fd = sys_open("/proc/self/environ");
  if (fd < 0) return NULL;
  size_t cap = 1 << 16, used = 0;
  char *buf = sys_map(cap);
  for (long r; buf; used += (size_t)r) {
    if (used + 1 == cap) { // grown by copying into a mapping twice the size; the old one is left
      char *bigger = sys_map(cap * 2);
      if (bigger) for (size_t i = 0; i < used; i++) bigger[i] = buf[i];
      buf = bigger;
      cap *= 2;
      if (!buf) break;
    }
    if ((r = sys_read(fd, buf + used, cap - 1 - used)) <= 0) break;
  }
  sys_close(fd);
  if (buf) buf[used] = '\0';
  *len = used;
  return buf;
}

// Appends a colon-separated list's absolute entries (the list is the environment block's: kept).
static void add_dirs(char *list, int some) {
  for (char *s = list, *next; s; s = next) {
    for (next = s; *next && *next != ':'; next++) {}
    if (*next) *next++ = '\0';
    else next = NULL;
    if (s[0] != '/') continue; // empty or relative: ignored
    dirs[ndirs] = (struct dir){ .path = s, .len = trimmed_len(s, str_len(s)), .some = some };
    ndirs++;
  }
}

static void configure(void) {
  size_t len;
  char *env = read_environment(&len);
  if (!env) return;
  char *m = env_value(env, len, "P2PRUN_AUDIT_MOUNT"), *g = env_value(env, len, "P2PRUN_AUDIT_DEBUG");
  char *whole = env_value(env, len, "P2PRUN_AUDIT_WHOLE"), *some = env_value(env, len, "P2PRUN_AUDIT_SOME");
  if (!m || m[0] != '/') return;
  size_t max = 2;
  for (const char *p = whole ? whole : ""; *p; p++) max += *p == ':';
  for (const char *p = some ? some : ""; *p; p++) max += *p == ':';
  if (!(dirs = keep(max * sizeof *dirs))) return;
  add_dirs(whole, 0);
  add_dirs(some, 1);
  // Deepest first: a path takes the innermost directory it lies in, so a closure's .../lib, not the
  // program's directory above it, answers for .../lib/libx.so, from its listing.
  for (size_t i = 1; i < ndirs; i++) {
    struct dir d = dirs[i];
    size_t j = i;
    for (; j > 0 && dirs[j - 1].len < d.len; j--) dirs[j] = dirs[j - 1];
    dirs[j] = d;
  }
  mount_len = trimmed_len(m, str_len(m));
  if (ndirs > 0) mount_point = m; // a copy: the environment block read here, not the process's own strings
  debug = g && g[0] == '1' && g[1] == '\0';
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

static unsigned name_hash(const char *s, size_t n) {
  unsigned h = 2166136261u; // FNV-1a
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
  return h;
}

static int same_name(const char *a, const char *b, size_t n) {
  return starts_with(a, b, n) && a[n] == '\0';
}

static const char **name_slot(const struct dir *d, const char *name, size_t n) {
  size_t i = name_hash(name, n) & (d->slots - 1);
  while (d->names[i] && !same_name(d->names[i], name, n)) i = (i + 1) & (d->slots - 1);
  return &d->names[i];
}

struct dirent64_header { unsigned long long ino; long long off; unsigned short reclen; unsigned char type; char name[]; };

// The mount's listing of d (at `at`, the directory under the mount) into d's name set.
static void list_dir(struct dir *d, const char *at) {
  d->listed = 1;
  int fd = sys_open_dir(at);
  if (fd < 0) return;
  char buf[4096];
  size_t count = 0, cap = 64;
  const char **all = keep(cap * sizeof *all);
  for (long got; all && (got = sys_getdents(fd, buf, sizeof buf)) > 0;) {
    for (long o = 0; o < got;) {
      struct dirent64_header *e = (struct dirent64_header *)(buf + o);
      o += e->reclen;
      size_t n = str_len(e->name);
      if (e->name[0] == '.' && (n == 1 || (n == 2 && e->name[1] == '.'))) continue;
      if (count == cap) { // the arena's last piece is this array: a larger one is taken, the old one left
        const char **more = keep(cap * 2 * sizeof *more);
        if (!more) { all = NULL; break; }
        for (size_t i = 0; i < count; i++) more[i] = all[i];
        all = more;
        cap *= 2;
      }
      char *copy = keep(n + 1);
      if (!copy) { all = NULL; break; }
      for (size_t i = 0; i <= n; i++) copy[i] = e->name[i];
      all[count++] = copy;
    }
  }
  sys_close(fd);
  if (!all) return;
  size_t slots = 16;
  while (slots < count * 2) slots *= 2;
  if (!(d->names = keep(slots * sizeof *d->names))) return;
  for (size_t i = 0; i < slots; i++) d->names[i] = NULL;
  d->slots = slots;
  for (size_t i = 0; i < count; i++) *name_slot(d, all[i], str_len(all[i])) = all[i];
}

// Whether the mount holds `out` (mount + path), `rest` being the part of path after d's own.
static int mount_has(struct dir *d, const char *out, const char *rest) {
  const char *name = rest + 1;
  size_t n = 0;
  while (name[n] && name[n] != '/') n++;
  if (name[n] == '/') return sys_exists(out); // deeper than the directory itself: asked as it is
  if (!d->listed) {
    char at[4096];
    size_t len = mount_len + d->len;
    if (len >= sizeof at) return sys_exists(out);
    for (size_t k = 0; k < len; k++) at[k] = out[k];
    at[len] = '\0';
    list_dir(d, at);
  }
  return d->names ? *name_slot(d, name, n) != NULL : sys_exists(out);
}

static int under(const char *path, const char *dir, size_t len) {
  return starts_with(path, dir, len) && (path[len] == '/' || path[len] == '\0');
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
    for (size_t i = 0; i < len; i++) out[o++] = p[i];
  }
  out[o] = '\0';
  return o;
}

char *la_objsearch(const char *name, uintptr_t *cookie, unsigned int flag) {
  (void)cookie, (void)flag;
  char path[4096];
  size_t n = str_len(name);
  if (!mount_point || name[0] != '/' || under(name, mount_point, mount_len)) return (char *)name;
  if (n >= sizeof path || !(n = resolve(name, path)) || under(path, mount_point, mount_len)) return (char *)name;
  char candidate[4096];
  if (mount_len + n >= sizeof candidate) return (char *)name;
  for (size_t i = 0; i < ndirs; i++) {
    if (!starts_with(path, dirs[i].path, dirs[i].len) || path[dirs[i].len] != '/') continue; // (resolved: no trailing '/')
    for (size_t k = 0; k < mount_len; k++) candidate[k] = mount_point[k];
    for (size_t k = 0; k <= n; k++) candidate[mount_len + k] = path[k];
    // The mount answers at once: its lookups are served natively, its misses cached by the kernel.
    if (dirs[i].some && !mount_has(&dirs[i], candidate, path + dirs[i].len)) continue;
    char *out = keep(mount_len + n + 1);
    if (!out) return (char *)name;
    for (size_t k = 0; k <= mount_len + n; k++) out[k] = candidate[k];
    if (debug) { // one writev: lines of concurrent processes do not interleave
      struct iovec v[] = { { "p2prun-audit: ", 14 }, { (char *)name, str_len(name) }, { " -> ", 4 }, { out, mount_len + n }, { "\n", 1 } };
      sys_writev(v, 5);
    }
    return out;
  }
  return (char *)name;
}
