#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "mount-point.h"

// Whether a mount table line's field `field` (space-separated, octal escapes) is `target`.
static bool table_has (FILE *table, int field, const char *target) {
  char line[4096];
  while (fgets(line, sizeof line, table)) {
    char *f = line;
    for (int i = 0; i < field && f; i++) { f = strchr(f, ' '); if (f) f++; }
    if (!f) continue;
    char unescaped[4096];
    size_t n = 0;
    for (; *f && *f != ' ' && *f != '\n' && n + 1 < sizeof unescaped; f++) {
      if (f[0] == '\\' && f[1] >= '0' && f[1] <= '7' && f[2] && f[3]) { unescaped[n++] = (char)strtol((char[]){ f[1], f[2], f[3], 0 }, NULL, 8); f += 3; }
      else unescaped[n++] = *f;
    }
    unescaped[n] = 0;
    if (strcmp(unescaped, target) == 0) return true;
  }
  return false;
}

static bool mounted_here (const char *path) {
  FILE *f = fopen("/proc/self/mounts", "r");
  bool found = f && table_has(f, 1, path);
  if (f) fclose(f);
  return found;
}

static bool mounted_elsewhere (const char *path) {
  char self[64] = "";
  if (readlink("/proc/self/ns/mnt", self, sizeof self - 1) < 0) return false;
  char (*seen)[64] = NULL;
  size_t seen_count = 0;
  bool found = false;
  DIR *proc = opendir("/proc");
  struct dirent *e;
  while (proc && !found && (e = readdir(proc))) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    char link[64] = "", where[300];
    snprintf(where, sizeof where, "/proc/%s/ns/mnt", e->d_name);
    // Processes of other users and processes that just ended are skipped.
    if (readlink(where, link, sizeof link - 1) < 0 || strcmp(link, self) == 0) continue;
    bool known = false;
    for (size_t i = 0; i < seen_count && !known; i++) known = strcmp(seen[i], link) == 0;
    if (known) continue;
    char (*grown)[64] = realloc(seen, (seen_count + 1) * sizeof *seen);
    if (!grown) break;
    seen = grown;
    strcpy(seen[seen_count++], link);
    snprintf(where, sizeof where, "/proc/%s/mountinfo", e->d_name);
    FILE *f = fopen(where, "r");
    if (f) { found = table_has(f, 4, path); fclose(f); }
  }
  if (proc) closedir(proc);
  free(seen);
  return found;
}

// Whether `dir` holds nothing but the marker (only_marker: and the marker itself).
static bool holds_only_marker (const char *dir, bool need_marker) {
  DIR *d = opendir(dir);
  if (!d) return false;
  struct dirent *e;
  bool only = true, marker = false;
  while (only && (e = readdir(d))) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    if (strcmp(e->d_name, MADE_MARKER) == 0) marker = true; else only = false;
  }
  closedir(d);
  return only && (marker || !need_marker);
}

static void mark (const char *dir) {
  char marker[4200];
  snprintf(marker, sizeof marker, "%s/%s", dir, MADE_MARKER);
  int fd = open(marker, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  if (fd >= 0) close(fd);
}

// mkdir -p that marks every directory it made.
static int make (const char *path) {
  if (mkdir(path, 0755) == 0) { mark(path); return 0; }
  if (errno == EEXIST) return 0;
  if (errno != ENOENT) return -1;
  char parent[4096];
  snprintf(parent, sizeof parent, "%s", path);
  char *slash = strrchr(parent, '/');
  if (!slash || slash == parent) return -1;
  *slash = 0;
  if (make(parent) < 0) return -1;
  if (mkdir(path, 0755) < 0 && errno != EEXIST) return -1;
  mark(path);
  return 0;
}

int mount_point_prepare (const char *path, char *error, size_t error_size) {
  struct stat st;
  if (stat(path, &st) < 0) {
    if (errno == ENOTCONN) { snprintf(error, error_size, "%s is a dead FUSE mount (hint: remove it with `p2prun umount %s`)", path, path); return -1; }
    if (errno != ENOENT || make(path) < 0) { snprintf(error, error_size, "cannot make mount point %s: %s", path, strerror(errno)); return -1; }
    return 0;
  }
  if (!S_ISDIR(st.st_mode)) { snprintf(error, error_size, "mount point %s is not a directory", path); return -1; }
  if (mounted_here(path)) { snprintf(error, error_size, "mount point %s is busy: something is mounted there", path); return -1; }
  if (!holds_only_marker(path, false)) { snprintf(error, error_size, "mount point %s is not empty", path); return -1; }
  return 0;
}

void mount_point_remove (const char *path) {
  char dir[4096], marker[4200];
  snprintf(dir, sizeof dir, "%s", path);
  if (!holds_only_marker(dir, true) || mounted_elsewhere(dir)) return;
  // Then the parents p2prun made, while nothing but their marker is left in them.
  for (;;) {
    snprintf(marker, sizeof marker, "%s/%s", dir, MADE_MARKER);
    unlink(marker);
    if (rmdir(dir) < 0) return; // another agent leaving at the same moment may have removed it
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir) return;
    *slash = 0;
    if (!holds_only_marker(dir, true)) return;
  }
}
