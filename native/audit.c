// p2prun-audit.so, an LD_AUDIT module. The dynamic linker shows la_objsearch every path it is
// about to open (absolute DT_NEEDED or dlopen, RPATH, RUNPATH, LD_LIBRARY_PATH, ld.so.cache,
// default dirs); a path inside a served directory is sent to the same path under the node's
// read-only mount (P2PRUN_AUDIT_MOUNT). Directories served whole (P2PRUN_AUDIT_WHOLE: --libs DIR)
// answer every lookup from the mount, misses included, without asking the shared file system. Of
// the others (P2PRUN_AUDIT_SOME: where the program's load closure was found) the mount holds only
// some files: a path goes there only if the mount has it, so a library the closure did not hold (a
// plugin loaded by name) still loads from where it lies.
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

// Gives back the last keep(n): a candidate name the mount did not have.
static void unkeep(size_t n) {
  n = (n + 15) & ~(size_t)15;
  arena -= n;
  arena_left += n;
}

static char *mount_point; // NULL: not configured, every name passes unchanged
static size_t mount_len;
static struct dir { const char *path; size_t len; int some; } *dirs;
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
    if (s[0] == '/') dirs[ndirs].path = s, dirs[ndirs].some = some, dirs[ndirs++].len = trimmed_len(s, str_len(s)); // empty or relative: ignored
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
  for (size_t i = 0; i < ndirs; i++) {
    if (!starts_with(path, dirs[i].path, dirs[i].len) || path[dirs[i].len] != '/') continue; // (resolved: no trailing '/')
    char *out = keep(mount_len + n + 1);
    if (!out) return (char *)name;
    for (size_t k = 0; k < mount_len; k++) out[k] = mount_point[k];
    for (size_t k = 0; k <= n; k++) out[mount_len + k] = path[k];
    // The mount answers at once: its lookups are served natively, its misses cached by the kernel.
    if (dirs[i].some && !sys_exists(out)) {
      unkeep(mount_len + n + 1);
      continue;
    }
    if (debug) { // one writev: lines of concurrent processes do not interleave
      struct iovec v[] = { { "p2prun-audit: ", 14 }, { (char *)name, str_len(name) }, { " -> ", 4 }, { out, mount_len + n }, { "\n", 1 } };
      sys_writev(v, 5);
    }
    return out;
  }
  return (char *)name;
}
