// p2prun-agent node-agent --node NAME --launch-id ID [--expect N] [--until-stopped] -- P2PRUN...:
// a launch's node agent without Node, started detached by the node's first rank
// (native/rank-step.c, lib/session/node.ts's spawnAgent) or by Slurm's prolog, as `p2prun
// node-agent` would be. It serves a job spec (P2PRUN_JOB) whose launch chose the native agent
// (lib/session/head.ts resolves `agent`), with the description in it or, if not, fetched from peers
// or the head (description-fetch.c). For any other spec — or one it does not understand — it becomes `P2PRUN... node-agent` with the same
// arguments (exec: the same process, so whoever waits on it still does), and the Node agent does
// all of it and reports any trouble in its own words.
//
// It reads the spec (lib/session/job-spec.ts owns it) and writes the node state as
// lib/session/node-state.ts names it: failed.json (a FailureRecord) if it fails before its mount
// is up; else task-env (the spec's templates, rank-env.ts's expandTaskEnv) and then ready.json;
// it watches ranks/ (a pidfd per rank) and, once the ranks it expects have come and all ended (or,
// for Slurm, on SIGTERM), it unmounts, leaves the swarm and removes the state. With P2PRUN_DEBUG
// it keeps its log in RUN_DIR/logs/, ending with its counters, as the Node agent does.
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <zlib.h>
#include "agent.h"
#include "description-fetch.h"
#include "json.h"
#include "node-list.h"
#include "../base64.h"

#define SPEC_VERSION 3                // lib/session/job-spec.ts's JOB_SPEC_VERSION
#define MAX_SPEC_DESCRIPTION (1 << 20) // what job-spec.ts's descriptionOf inflates at most
#define MAX_ARGS (40 + 6 * MAX_ADDRESSES + 2 * MAX_LIST_PEERS)

static struct {
  const char *node, *launch, *expect;
  bool until_stopped;
  char **fallback;
  int debug;
  char dir[4096], run_dir[4096], safe_node[256];
  char mount_point[4096];
  const struct json *task_env;
  char start_cpu[200];
  struct node_list list;        // a launch by node list: its nodes, this one's place
  const char *peers[MAX_LIST_PEERS]; // the list's nodes this one dials
  int peer_count;
} agent;

// ---- the Node agent, for what this one does not serve
static int become_node_agent (void) {
  int n = 0;
  while (agent.fallback[n]) n++;
  char **argv = calloc((size_t)n + 10, sizeof *argv);
  if (!argv) return 127;
  memcpy(argv, agent.fallback, (size_t)n * sizeof *argv);
  const char *rest[] = { "node-agent", "--node", agent.node, "--launch-id", agent.launch, "--expect", agent.expect };
  for (size_t i = 0; i < sizeof rest / sizeof *rest; i++) argv[n++] = (char *)rest[i];
  if (agent.until_stopped) argv[n++] = "--until-stopped";
  execv(argv[0], argv);
  fprintf(stderr, "p2prun-agent: cannot run %s: %s (hint: check that p2prun is installed at the same path on every node)\n", argv[0], strerror(errno));
  return 127;
}

// ---- the spec
// The description the spec carries (base64 of raw deflate), checked against its infohash.
static bool spec_description (const struct json *spec, struct description *d) {
  const char *encoded = json_string(spec, "description"), *info_hash = json_string(spec, "infoHash");
  size_t size;
  char *deflated = encoded && info_hash ? base64_decode(encoded, false, &size) : NULL;
  if (!deflated) return false;
  memset(d, 0, sizeof *d);
  d->bytes = malloc(MAX_SPEC_DESCRIPTION);
  z_stream z = { .next_in = (Bytef *)deflated, .avail_in = (uInt)size, .next_out = d->bytes, .avail_out = MAX_SPEC_DESCRIPTION };
  bool inflated = d->bytes && inflateInit2(&z, -15) == Z_OK && inflate(&z, Z_FINISH) == Z_STREAM_END;
  if (d->bytes) inflateEnd(&z);
  free(deflated);
  d->size = z.total_out;
  char error[600];
  if (!inflated || description_parse(d, "P2PRUN_JOB's description", error, sizeof error) < 0) { description_free(d); return false; }
  char hex[41];
  hex_of(d->info_hash, 20, hex);
  if (strcmp(hex, info_hash) == 0) return true;
  description_free(d);
  return false;
}

static bool number_member (const struct json *object, const char *key, double *out) {
  const struct json *v = json_member(object, key);
  if (!v || v->kind != JSON_NUMBER) return false;
  *out = v->number;
  return true;
}

// Where the description is when the spec does not carry it (description-fetch.c): the spec's
// trackers and seeders, the head's URL; the job's secret (mount_args put it in P2PRUN_SECRET) in
// job.secret for the proofs. False for what this agent does not serve.
static bool description_source (const struct json *spec, struct description_source *source) {
  const char *info_hash = json_string(spec, "infoHash"), *url = json_string(spec, "descriptionUrl"), *secret = getenv("P2PRUN_SECRET");
  const struct json *trackers = json_member(spec, "trackers"), *seeders = json_member(spec, "seeders");
  double stall_ms;
  memset(source, 0, sizeof *source);
  if (!info_hash || !bytes_of_hex(info_hash, source->info_hash, 20) || !url || !trackers || trackers->kind != JSON_ARRAY || trackers->count > MAX_ADDRESSES ||
      !seeders || seeders->kind != JSON_ARRAY || seeders->count > MAX_ADDRESSES || !number_member(json_member(spec, "node"), "stallTimeoutMs", &stall_ms) ||
      (secret && *secret && job_secret_from_hex(secret) < 0)) return false;
  for (size_t i = 0; i < trackers->count; i++) if (trackers->items[i].kind == JSON_STRING) source->trackers[source->tracker_count++] = trackers->items[i].string;
  for (size_t i = 0; i < seeders->count; i++) if (seeders->items[i].kind == JSON_STRING) source->seeders[source->seeder_count++] = seeders->items[i].string;
  for (int i = 0; i < agent.peer_count; i++) source->peers[source->peer_count++] = agent.peers[i];
  source->url = url;
  source->timeout_ms = (uint64_t)stall_ms;
  source->node = agent.node;
  return true;
}

// `template` with each of `letters` after a percent sign replaced — %i: the infohash's first 16
// digits, %n: the node, %j: the launch, %m: the mount point, %%: a percent sign — as job-spec.ts's
// expandTemplate (MOUNT_TEMPLATE) and rank-env.ts's expandTaskEnv (TASK_ENV_TEMPLATE) do; false if
// it does not fit.
#define MOUNT_TEMPLATE "inj%"
#define TASK_ENV_TEMPLATE "m%"
static bool expand (const char *template, const char *letters, const char *info_hash, char *out, size_t size) {
  size_t used = 0;
  for (const char *p = template; *p; p++) {
    char piece[4096];
    if (*p != '%' || !p[1] || !strchr(letters, p[1])) { piece[0] = *p; piece[1] = 0; }
    else {
      char c = *++p;
      snprintf(piece, sizeof piece, "%.*s", c == 'i' ? 16 : (int)sizeof piece,
        c == 'i' ? info_hash : c == 'n' ? agent.node : c == 'j' ? agent.launch : c == 'm' ? agent.mount_point : "%");
    }
    size_t n = strlen(piece);
    if (used + n >= size) return false;
    memcpy(out + used, piece, n);
    used += n;
  }
  out[used] = 0;
  return true;
}

// A launch by node list (the spec's nodeList; lib/session/launch-nodes.ts's launchNodeList): the
// launch's nodes from the spec's names or Slurm's hostlist, this node's place, and `mount`'s
// flags for it as lib/native-agent.ts gives them: its own port, no tracker, the peers node-list.ts
// picks, the head held until a wait stalls unless this node is one that dials it. False where the
// Node agent must say what is wrong (no hostlist, the node not in it).
static bool list_args (const struct json *by_list, const char *info_hash, const char **argv, int *n) {
  static char fallback[32];
  const char *template = json_string(by_list, "host"), *names = json_string(by_list, "names");
  double port;
  uint8_t seed[20];
  if (!names) names = getenv("SLURM_STEP_NODELIST");
  if (!names || !*names) names = getenv("SLURM_JOB_NODELIST");
  if (!names || !*names) names = getenv("SLURM_NODELIST");
  if (!template || !names || !*names || !number_member(by_list, "port", &port) || !bytes_of_hex(info_hash, seed, 20) ||
      node_list_of(names, template, (long)port, agent.node, &agent.list) < 0) return false;
  char host[256];
  const char *own_port;
  if (!split_host_port(agent.list.nodes[agent.list.index], host, sizeof host, &own_port)) return false;
  const char *flags[] = { "--port", own_port, "--no-trackers" };
  for (size_t i = 0; i < sizeof flags / sizeof *flags; i++) argv[(*n)++] = flags[i];
  int places[MAX_LIST_PEERS];
  agent.peer_count = listed_peers(agent.list.count, agent.list.index, seed, places);
  for (int i = 0; i < agent.peer_count; i++) {
    agent.peers[i] = agent.list.nodes[places[i]];
    argv[(*n)++] = "--peer";
    argv[(*n)++] = agent.peers[i];
  }
  if (!dials_head(agent.list.count, agent.list.index)) {
    snprintf(fallback, sizeof fallback, "%g", HEAD_FALLBACK_MS / 1000.0);
    argv[(*n)++] = "--head-fallback";
    argv[(*n)++] = fallback;
  }
  return true;
}

// `mount`'s arguments for the spec's settings (job-spec.ts's NodeSettings; lib/native-agent.ts
// gives the same ones to a native agent under a Node one), with the secret in its environment;
// false for anything it does not serve.
static bool mount_args (const struct json *spec, const char **argv, int *argc) {
  static char numbers[3][32], owner[64];
  const struct json *node = json_member(spec, "node"), *list;
  const char *mode = json_string(node, "mode"), *store = json_string(node, "storeDir"), *device = json_string(node, "fuseDevice");
  const char *info_hash = json_string(spec, "infoHash"), *template = json_string(spec, "mountPoint");
  double max_conns, numwant, stall_ms;
  if (!mode || !store || !device || !info_hash || !template || !number_member(node, "maxConns", &max_conns) ||
      !number_member(node, "numwant", &numwant) || !number_member(node, "stallTimeoutMs", &stall_ms)) return false;
  if (!expand(template, MOUNT_TEMPLATE, info_hash, agent.mount_point, sizeof agent.mount_point)) return false;
  int n = 0;
  argv[n++] = "mount";
  argv[n++] = "P2PRUN_JOB's description";
  argv[n++] = agent.mount_point;
  snprintf(numbers[0], sizeof numbers[0], "%.0f", max_conns);
  snprintf(numbers[1], sizeof numbers[1], "%.0f", numwant);
  snprintf(numbers[2], sizeof numbers[2], "%g", stall_ms / 1000);
  const char *pairs[] = { "--mode", mode, "--store-dir", store, "--fuse-device", device, "--max-conns", numbers[0], "--numwant", numbers[1],
    "--stall-timeout", numbers[2] };
  for (size_t i = 0; i < sizeof pairs / sizeof *pairs; i++) argv[n++] = pairs[i];
  const struct json *who = json_member(node, "owner"), *allow = json_member(node, "allowOther");
  double uid, gid;
  if (who && number_member(who, "uid", &uid) && number_member(who, "gid", &gid)) {
    snprintf(owner, sizeof owner, "%.0f:%.0f", uid, gid);
    argv[n++] = "--owner";
    argv[n++] = owner;
  }
  if (allow && allow->kind == JSON_BOOL && allow->boolean) argv[n++] = "--allow-other";
  const struct json *by_list = json_member(spec, "nodeList");
  if (by_list && !list_args(by_list, info_hash, argv, &n)) return false;
  const char *lists[][2] = { { "trackers", "--tracker" }, { "seeders", "--seeder" } };
  for (size_t l = 0; l < 2; l++) {
    if (!(list = json_member(spec, lists[l][0])) || list->kind != JSON_ARRAY || list->count > MAX_ADDRESSES) return false;
    for (size_t i = 0; i < list->count; i++) {
      if (list->items[i].kind != JSON_STRING) return false;
      argv[n++] = lists[l][1];
      argv[n++] = list->items[i].string;
    }
  }
  // The fallback to the source directories (lib/agent-settings.ts's nodeOptions): NAME=DIR, or DIR for the set's one.
  const char *fallback = json_string(node, "fallback");
  if ((list = json_member(spec, "sources")) && fallback && strcmp(fallback, "auto") == 0) {
    if (list->kind != JSON_ARRAY || list->count > MAX_ADDRESSES) return false;
    for (size_t i = 0; i < list->count; i++) {
      const char *name = json_string(&list->items[i], "name"), *dir = json_string(&list->items[i], "dir");
      if (!name || !dir) return false;
      char *source;
      if (asprintf(&source, *name ? "%s=%s" : "%s%s", name, dir) < 0) return false;
      argv[n++] = "--source";
      argv[n++] = source;
    }
  }
  const char *secret = json_string(spec, "secret");
  if (secret ? setenv("P2PRUN_SECRET", secret, 1) != 0 : unsetenv("P2PRUN_SECRET") != 0) return false;
  argv[n] = NULL;
  *argc = n;
  return true;
}

// ---- the node state (lib/session/node-state.ts names its files)
static void path_in (char *out, size_t size, const char *name) {
  snprintf(out, size, "%s/%s", agent.dir, name);
}

static void json_quote (FILE *f, const char *s) {
  char escaped[8192];
  json_escape(escaped, sizeof escaped, s);
  fprintf(f, "\"%s\"", escaped);
}

// A record of the node state, put in place whole.
static bool write_record (const char *name, bool exclusive, void (*write) (FILE *f, const void *arg), const void *arg) {
  char file[4200];
  path_in(file, sizeof file, name);
  return write_atomic(file, exclusive, write, arg);
}

// RUN_DIR/logs/LAUNCH-NODE.log (node-state.ts's keepLog).
static void keep_log (void) {
  if (agent.debug < 1) return;
  char logs[4200], from[4200], to[4600];
  snprintf(logs, sizeof logs, "%s/logs", agent.run_dir);
  mkdir(logs, 0700);
  path_in(from, sizeof from, "agent.log");
  snprintf(to, sizeof to, "%s/%s-%s.log", logs, agent.launch, agent.safe_node);
  rename(from, to);
}

static bool failed; // the state stays for the ranks to read, and the last of them removes it

static void on_failed (const char *code, const char *message, const char *hint) {
  failed = true;
  node_state_fail(agent.dir, code, message, hint);
  keep_log();
}

// task-env: NAME=VALUE sets, NAME^=VALUE goes before the task's own, NAME+=VALUE after it.
static void write_task_env (FILE *f, const void *arg) {
  (void)arg;
  for (size_t i = 0; i < agent.task_env->count; i++) {
    const struct json *e = &agent.task_env->items[i];
    const char *name = json_string(e, "name"), *op = json_string(e, "op"), *value = json_string(e, "value");
    char expanded[8192];
    if (!name || !op || !value || !expand(value, TASK_ENV_TEMPLATE, "", expanded, sizeof expanded)) continue;
    fprintf(f, "%s%s%s\n", name, strcmp(op, "prepend") == 0 ? "^=" : strcmp(op, "append") == 0 ? "+=" : "=", expanded);
  }
}

static void write_ready (FILE *f, const void *arg) {
  (void)arg;
  fputs("{\"mountPoint\":", f);
  json_quote(f, agent.mount_point);
  fprintf(f, ",\"pid\":%d}", (int)getpid());
}

// ---- the ranks: each one's end through a pidfd, new ones through inotify on ranks/; polled
// each tick where the kernel has neither
struct rank { struct watch w; pid_t pid; bool ended; };
static struct rank **ranks;
static size_t rank_count, rank_capacity;
static struct watch ranks_dir = { .fd = -1 };
static bool polling, watching_ranks;

static void check_ranks (void) {
  long expect = atol(agent.expect);
  if (rank_count < (size_t)(expect > 1 ? expect : 1)) return;
  for (size_t i = 0; i < rank_count; i++) if (!ranks[i]->ended) return;
  agent_stop();
}

static void on_rank_end (struct watch *w, uint32_t events) {
  (void)events;
  struct rank *r = (struct rank *)w;
  loop_del(w);
  close(w->fd);
  r->ended = true;
  check_ranks();
}

static bool gone (pid_t pid) {
  return kill(pid, 0) < 0 && errno == ESRCH;
}

static void scan_ranks (void) {
  char dir_name[4200];
  path_in(dir_name, sizeof dir_name, "ranks");
  DIR *dir = opendir(dir_name);
  if (!dir) return;
  struct dirent *e;
  while ((e = readdir(dir))) {
    char *end;
    long pid = strtol(e->d_name, &end, 10);
    if (*end || pid <= 0) continue;
    bool known = false;
    for (size_t i = 0; i < rank_count && !known; i++) known = ranks[i]->pid == pid;
    if (known) continue;
    if (rank_count == rank_capacity) {
      struct rank **grown = realloc(ranks, (rank_capacity = rank_capacity ? 2 * rank_capacity : 16) * sizeof *ranks);
      if (!grown) break;
      ranks = grown;
    }
    struct rank *r = calloc(1, sizeof *r);
    if (!r) break;
    r->pid = (pid_t)pid;
    r->w = (struct watch){ .ready = on_rank_end, .fd = polling ? -1 : (int)syscall(SYS_pidfd_open, (pid_t)pid, 0) };
    if (r->w.fd >= 0 && loop_add(&r->w, EPOLLIN) < 0) { close(r->w.fd); r->w.fd = -1; }
    if (r->w.fd < 0 && !polling && errno != ESRCH) polling = true; // no pidfds (Linux before 5.3)
    if (r->w.fd < 0) r->ended = gone(r->pid);
    ranks[rank_count++] = r;
  }
  closedir(dir);
  if (polling) for (size_t i = 0; i < rank_count; i++) if (!ranks[i]->ended) ranks[i]->ended = gone(ranks[i]->pid);
  check_ranks();
}

static void on_ranks_dir (struct watch *w, uint32_t events) {
  (void)events;
  char buffer[4096];
  while (read(w->fd, buffer, sizeof buffer) > 0) {}
  scan_ranks();
}

static void watch_ranks (void) {
  char dir_name[4200];
  path_in(dir_name, sizeof dir_name, "ranks");
  ranks_dir = (struct watch){ .ready = on_ranks_dir, .fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC) };
  if (ranks_dir.fd < 0 || inotify_add_watch(ranks_dir.fd, dir_name, IN_CREATE | IN_MOVED_TO) < 0 || loop_add(&ranks_dir, EPOLLIN) < 0) {
    polling = true; // looked at each tick instead
  }
  watching_ranks = true;
  scan_ranks();
}

// ---- the hooks into the agent's life (main.c)
static void on_ready (void) {
  usage_json(agent.start_cpu, sizeof agent.start_cpu);
  if (!write_record("task-env", false, write_task_env, NULL) || !write_record("ready.json", false, write_ready, NULL)) {
    char message[4400];
    snprintf(message, sizeof message, "cannot write the node state in %s: %s", agent.dir, strerror(errno));
    fprintf(stderr, "p2prun-agent: %s\n", message);
    on_failed("LAUNCH", message, "check that the run directory (run-dir) is writable and not full");
    agent_stop();
    return;
  }
  fprintf(stderr, "p2prun node-agent: %s ready for the ranks on %s\n", agent.mount_point, agent.node);
  if (!agent.until_stopped) watch_ranks();
}

// Its counters as node.ts logs them (lib/native-agent.ts's shape: what the mount is first).
static void log_stats (void) {
  char extra[8600], escaped[8200], hex[41];
  json_escape(escaped, sizeof escaped, agent.mount_point);
  hex_of(job.desc.info_hash, 20, hex);
  snprintf(extra, sizeof extra, "\"infoHash\":\"%s\",\"mode\":\"%s\",\"mountPoint\":\"%s\",\"startCpu\":%s,", hex,
    MODE_NAMES[job.mode], escaped, agent.start_cpu[0] ? agent.start_cpu : "null");
  fputs("p2prun node-agent: stats ", stderr);
  write_stats(stderr, extra);
}

#define DEBUG_STATS_MS 5000 // node.ts's: counters every few seconds at P2PRUN_DEBUG=2

static void on_tick (void) {
  static uint64_t next_stats;
  if (watching_ranks && polling) scan_ranks();
  if (agent.debug >= 2 && now_ms() >= next_stats) {
    if (next_stats) log_stats();
    next_stats = now_ms() + DEBUG_STATS_MS;
  }
}

static int remove_entry (const char *path, const struct stat *st, int type, struct FTW *ftw) {
  (void)st; (void)type; (void)ftw;
  remove(path);
  return 0;
}

void remove_tree (const char *path) {
  nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void on_ended (void) {
  if (agent.debug >= 1) log_stats();
  keep_log();
  if (!failed) remove_tree(agent.dir);
}

// The job spec `raw` (P2PRUN_JOB's value) if it is one this agent serves — of this version, and
// it chose the native agent — else NULL: the Node agent's.
static struct json *native_spec (const char *raw) {
  size_t size;
  char *text = raw ? base64_decode(raw, true, &size) : NULL;
  struct json *spec = text ? json_parse(text) : NULL;
  free(text);
  const struct json *node = json_member(spec, "node"), *version = json_member(spec, "version"), *task_env = json_member(spec, "taskEnv");
  const char *choice = json_string(node, "agent"), *run_dir = json_string(node, "runDir");
  if (version && version->kind == JSON_NUMBER && version->number == SPEC_VERSION && choice && strcmp(choice, "native") == 0 &&
      run_dir && task_env && task_env->kind == JSON_ARRAY && json_string(spec, "infoHash")) return spec;
  json_free(spec);
  return NULL;
}

const char *node_agent_spec_set (const char *raw, char *info_hash, size_t size) {
  struct json *spec = native_spec(raw);
  if (!spec) return "this agent serves launches that chose the native agent";
  snprintf(info_hash, size, "%s", json_string(spec, "infoHash"));
  json_free(spec);
  return NULL;
}

// The node's name made a file name (node-state.ts's safeName).
static void safe_name (const char *node, char *out, size_t size) {
  size_t k = 0;
  for (const char *c = node; *c && k < size - 1; c++) out[k++] = strchr("_.-", *c) || (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ? *c : '_';
  out[k] = 0;
}

void node_state_dir (const char *run_dir, const char *launch, const char *node, char *out, size_t size) {
  char safe[256];
  safe_name(node, safe, sizeof safe);
  snprintf(out, size, "%s/job-%s-%s", run_dir, launch, safe);
}

static void state_dir (const char *run_dir) {
  safe_name(agent.node, agent.safe_node, sizeof agent.safe_node);
  snprintf(agent.run_dir, sizeof agent.run_dir, "%s", run_dir);
  node_state_dir(run_dir, agent.launch, agent.node, agent.dir, sizeof agent.dir);
}

// Serves the launch agent.* names with the environment's spec, a native one: the exit code.
static int serve (struct json *spec, const struct kept_store *kept, void (*keep) (int store_fd)) {
  agent.task_env = json_member(spec, "taskEnv");
  const char *args[MAX_ARGS];
  int count;
  struct description desc;
  struct description_source source;
  bool in_spec = json_string(spec, "description") != NULL;
  if (!mount_args(spec, args, &count) || (in_spec ? !spec_description(spec, &desc) : !description_source(spec, &source))) return become_node_agent();
  state_dir(json_string(json_member(spec, "node"), "runDir"));
  const char *route = "the job spec";
  char error[1000];
  if (!in_spec && description_fetch(&source, &desc, &route, error, sizeof error) < 0) {
    const char *hint = "check that the submitting host (or --seeder) is reachable from this node";
    fprintf(stderr, "p2prun-agent: %s (hint: %s)\n", error, hint);
    on_failed("LAUNCH", error, hint);
    json_free(spec);
    return 1;
  }
  if (agent.debug >= 2) {
    // node.ts's lines: the description's route, where peers come from, which agent serves.
    const struct json *trackers = json_member(spec, "trackers");
    fprintf(stderr, "p2prun node-agent: description: from %s\n", route);
    if (agent.list.nodes) {
      fprintf(stderr, "p2prun node-agent: peers: from the node list (%d nodes; this is %s)\n", agent.list.count, agent.list.nodes[agent.list.index]);
    } else {
      fprintf(stderr, "p2prun node-agent: peers: from the tracker");
      for (size_t t = 0; t < trackers->count; t++) fprintf(stderr, " %s", trackers->items[t].string);
      fputc('\n', stderr);
    }
    fprintf(stderr, "p2prun node-agent: agent: native, no Node process%s\n", kept ? ", the store the last launch kept" : "");
  }
  // Another set's store, or one of another size, is not this one's.
  if (kept && (memcmp(kept->info_hash, desc.info_hash, 20) != 0 || kept->piece_count != desc.piece_count)) kept = NULL;
  struct serve_hooks hooks = { .description = &desc, .ready = on_ready, .failed = on_failed, .tick = on_tick, .ended = on_ended, .kept = kept, .keep = keep };
  int code = agent_mount(count, (char **)args, &hooks);
  json_free(spec);
  node_list_free(&agent.list);
  return code;
}

int node_agent_serve (const char *node, const char *launch, const char *expect, const struct kept_store *kept, void (*keep) (int store_fd)) {
  agent.node = node;
  agent.launch = launch;
  agent.expect = expect;
  struct json *spec = native_spec(getenv("P2PRUN_JOB"));
  return spec ? serve(spec, kept, keep) : become_node_agent();
}

int node_agent (int argc, char **argv) {
  agent.expect = "0";
  int i = 1;
  for (; i < argc; i++) {
    const char *a = argv[i], *value = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "--node") == 0 && value) { agent.node = value; i++; }
    else if (strcmp(a, "--launch-id") == 0 && value) { agent.launch = value; i++; }
    else if (strcmp(a, "--expect") == 0 && value && strspn(value, "0123456789") == strlen(value) && *value) { agent.expect = value; i++; }
    else if (strcmp(a, "--until-stopped") == 0) agent.until_stopped = true;
    else if (strcmp(a, "--") == 0) break;
    else { fprintf(stderr, "p2prun-agent: node-agent: unknown or incomplete option '%s' (hint: it is started by p2prun's rank step)\n", a); return 2; }
  }
  if (!agent.node || !agent.launch || i + 1 >= argc) {
    fprintf(stderr, "p2prun-agent: node-agent needs --node, --launch-id and, after --, the p2prun command (hint: it is started by p2prun's rank step)\n");
    return 2;
  }
  agent.fallback = argv + i + 1;
  const char *debug = getenv("P2PRUN_DEBUG");
  agent.debug = !debug || !*debug || strcmp(debug, "0") == 0 ? 0 : strcmp(debug, "2") == 0 ? 2 : 1; // lib/debug.ts's levels

  struct json *spec = native_spec(getenv("P2PRUN_JOB"));
  if (!spec) return become_node_agent();
  // agent-linger: this process stays for the node's next launches, each served by a child of its
  // own (linger.c); Slurm's prolog's agent (--until-stopped) serves the job and does not linger.
  double linger_ms;
  if (!agent.until_stopped && number_member(json_member(spec, "node"), "agentLingerMs", &linger_ms) && linger_ms > 0) {
    state_dir(json_string(json_member(spec, "node"), "runDir"));
    json_free(spec);
    return linger(agent.node, agent.launch, agent.expect, agent.run_dir, agent.safe_node, (uint64_t)linger_ms);
  }
  return serve(spec, NULL, NULL);
}
