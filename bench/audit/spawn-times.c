// Times a program's start-up under several environments, taking turns run by run so the host's
// stolen CPU falls on every variant alike. Each variant is the inherited environment plus its
// NAME=VALUE assignments; the program's output goes to /dev/null, a failure stops the run.
//   spawn-times RUNS PROGRAM [ARGS...] -- LABEL [NAME=VALUE...] -- LABEL [NAME=VALUE...] ...
// Prints per variant: median, minimum, and the median's difference to the first variant's.
#define _GNU_SOURCE
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

struct variant { const char *label; char **env; double *ms; };

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

// environ with NAME=VALUE pairs set (replacing an inherited NAME).
static char **with(char **set, int nset) {
  int n = 0;
  while (environ[n]) n++;
  char **env = calloc((size_t)(n + nset + 1), sizeof *env);
  int k = 0;
  for (int i = 0; i < n; i++) {
    int replaced = 0;
    for (int j = 0; j < nset && !replaced; j++) {
      size_t len = (size_t)(strchr(set[j], '=') - set[j]);
      replaced = strncmp(environ[i], set[j], len) == 0 && environ[i][len] == '=';
    }
    if (!replaced) env[k++] = environ[i];
  }
  for (int j = 0; j < nset; j++) env[k++] = set[j];
  return env;
}

int main(int argc, char **argv) {
  if (argc < 5) {
    fprintf(stderr, "usage: spawn-times RUNS PROGRAM [ARGS...] -- LABEL [NAME=VALUE...] [-- LABEL ...]\n");
    return 2;
  }
  int runs = atoi(argv[1]);
  int p = 2;
  while (p < argc && strcmp(argv[p], "--") != 0) p++;
  char **prog = calloc((size_t)(p - 1), sizeof *prog);
  for (int i = 2; i < p; i++) prog[i - 2] = argv[i];
  struct variant v[16];
  int nv = 0;
  while (p < argc && nv < 16) {
    int start = ++p; // after "--": LABEL, then assignments up to the next "--"
    while (p < argc && strcmp(argv[p], "--") != 0) {
      if (p > start && !strchr(argv[p], '=')) { fprintf(stderr, "spawn-times: %s is not NAME=VALUE\n", argv[p]); return 2; }
      p++;
    }
    if (start >= argc) break;
    v[nv].label = argv[start];
    v[nv].env = with(argv + start + 1, p - start - 1);
    v[nv].ms = calloc((size_t)runs, sizeof(double));
    nv++;
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  for (int r = 0; r < runs; r++) {
    for (int i = 0; i < nv; i++) {
      struct timespec a, b;
      pid_t pid;
      int status;
      clock_gettime(CLOCK_MONOTONIC, &a);
      if (posix_spawn(&pid, prog[0], &fa, NULL, prog, v[i].env) != 0) { perror("spawn-times: spawn"); return 1; }
      waitpid(pid, &status, 0);
      clock_gettime(CLOCK_MONOTONIC, &b);
      if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) { fprintf(stderr, "spawn-times: %s failed under %s\n", prog[0], v[i].label); return 1; }
      v[i].ms[r] = (double)(b.tv_sec - a.tv_sec) * 1e3 + (double)(b.tv_nsec - a.tv_nsec) / 1e6;
    }
  }
  double base = 0;
  for (int i = 0; i < nv; i++) {
    qsort(v[i].ms, (size_t)runs, sizeof(double), cmp);
    double median = v[i].ms[runs / 2];
    if (i == 0) base = median;
    printf("%-24s median %7.3f ms  min %7.3f ms  %+6.1f %%\n", v[i].label, median, v[i].ms[0], (median / base - 1) * 100);
  }
  return 0;
}
