// agent-linger without Node, as lib/session/warm-agent.ts does it for the Node agent: once its
// launch has ended, the node agent stays `agent-linger` seconds, listening on
// RUN_DIR/agent-NODE.sock (lib/session/node-state.ts names it and the record beside it), and the
// node's next launch by the same user is handed to it (warm-agent.ts owns the hand-off;
// native/rank-step.c and lib/session/rank.ts send it). What lingering saves a native agent is not
// its start (0.01 CPU-s) but the set: the store of the set it served last stays with it, and the
// same set's next launch on the node fetches nothing.
//
// Every launch, its own first one too, is served by a child forked for it from this small process,
// which serves none itself: each child starts from a clean state, its CPU is its launch's alone, and
// launches served at once do not share a loop. A child that served hands its store (the descriptor,
// over a socket pair, with the pieces it verified) back to this process, which hands it to the next
// launch of the same set. One store is kept: a launch of another set drops it. The store is
// unlinked: an agent killed while it lingers leaves none behind.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include "agent.h"
#include "json.h"

#define HANDOFF_MAGIC "p2prun-launch 1" // warm-agent.ts's HANDOFF_MAGIC
#define HANDOFF_MAX (4u << 20)          // its HANDOFF_MAX: a hand-off carries the rank's environment
#define HANDOFF_TIMEOUT_MS 10000        // its HANDOFF_TIMEOUT_MS: a connection that sends nothing must not keep the agent
#define MAX_WAITING 16                  // hand-offs being read at once
#define MAX_LAUNCHES 64                 // launches served at once

struct launch_child {
  pid_t pid;
  int channel;     // this end of the socket pair the child hands its store back on
  bool first;      // this process's own launch
  char dir[4400];  // the launch's node state
};
struct handoff {
  int fd;
  char *bytes;
  size_t length;
  uint64_t since;
};

static struct launch_child children[MAX_LAUNCHES];
static int child_count;
static struct handoff waiting[MAX_WAITING];
static int waiting_count;
static struct kept_store kept = { .fd = -1 };
static int listen_fd = -1, signals_fd = -1;
static bool leaving;
static char socket_path[sizeof ((struct sockaddr_un *)0)->sun_path], record_path[4400];
static const char *slurm_job; // the Slurm job whose launch started it: it serves no other job's
static const char *run_dir;
static int keep_channel = -1; // in a child: its end of the socket pair
static sigset_t old_mask;

// ---- the kept store
static void drop_kept (void) {
  if (kept.fd >= 0) close(kept.fd);
  free(kept.bits);
  kept = (struct kept_store){ .fd = -1 };
}

// A child's keep hook: its store and the pieces verified in it, to this process. One message:
// the infohash, the piece count, the bitfield, and the descriptor.
static void send_store (int store_fd) {
  uint32_t bytes = (job.desc.piece_count + 7) / 8;
  size_t size = 24 + bytes;
  uint8_t *message = malloc(size);
  if (!message) return;
  memcpy(message, job.desc.info_hash, 20);
  memcpy(message + 20, &job.desc.piece_count, 4);
  swarm_bitfield(message + 24);
  char control[CMSG_SPACE(sizeof(int))];
  memset(control, 0, sizeof control);
  struct iovec iov = { message, size };
  struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control };
  struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(c), &store_fd, sizeof(int));
  sendmsg(keep_channel, &msg, MSG_NOSIGNAL); // the lingering process gone: nothing to keep it for
  free(message);
}

// What an ended child handed back, if it did: the kept store from now on.
static void take_store (int channel) {
  ssize_t size = recv(channel, NULL, 0, MSG_PEEK | MSG_TRUNC | MSG_DONTWAIT);
  if (size < 24) return;
  uint8_t *message = malloc((size_t)size);
  char control[CMSG_SPACE(sizeof(int))];
  struct iovec iov = { message, (size_t)size };
  struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control };
  ssize_t n = message ? recvmsg(channel, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC) : -1;
  int fd = -1;
  struct cmsghdr *c = n > 0 ? CMSG_FIRSTHDR(&msg) : NULL;
  if (c && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) memcpy(&fd, CMSG_DATA(c), sizeof(int));
  uint32_t pieces = 0;
  if (n == size) memcpy(&pieces, message + 20, 4);
  if (fd < 0 || n != size || (size_t)size != 24 + ((uint64_t)pieces + 7) / 8) {
    if (fd >= 0) close(fd);
    free(message);
    return;
  }
  drop_kept();
  kept.fd = fd;
  memcpy(kept.info_hash, message, 20);
  kept.piece_count = pieces;
  kept.bits = message;
  memmove(kept.bits, message + 24, (size_t)size - 24);
}

// ---- launches, each in a child
// Serves a launch in a child of its own. `env`: the handing rank's environment (NULL: this
// process's); `handed`: the hand-off's connection, which the child holds until its launch ends (the
// rank then knows if its agent died before its mount was up), or -1. `info_hash`: the launch's set.
static bool start_launch (const char *node, const char *launch, const char *expect, char **env, int handed, const char *info_hash) {
  if (child_count == MAX_LAUNCHES) return false;
  char kept_hex[41] = "";
  if (kept.fd >= 0) hex_of(kept.info_hash, 20, kept_hex);
  bool give = kept.fd >= 0 && strcmp(kept_hex, info_hash) == 0;
  if (kept.fd >= 0 && !give) drop_kept(); // a launch of another set: one store is kept
  struct launch_child *c = &children[child_count];
  *c = (struct launch_child){ .first = handed < 0 };
  node_state_dir(run_dir, launch, node, c->dir, sizeof c->dir);
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0) return false;
  fflush(NULL); // nothing buffered here is written twice
  pid_t pid = fork();
  if (pid < 0) { close(pair[0]); close(pair[1]); return false; }
  if (pid == 0) {
    // Nothing of this process but the launch's own: its connection, its set's kept store.
    if (listen_fd >= 0) close(listen_fd);
    close(signals_fd);
    close(pair[0]);
    for (int i = 0; i < child_count; i++) close(children[i].channel);
    for (int i = 0; i < waiting_count; i++) close(waiting[i].fd);
    sigprocmask(SIG_SETMASK, &old_mask, NULL);
    keep_channel = pair[1];
    // Held by whatever serves the launch, the Node agent too if this one becomes it (exec).
    if (handed >= 0) fcntl(handed, F_SETFD, 0);
    if (env) {
      clearenv();
      for (char **e = env; *e; e++) putenv(*e);
      // Its output to the launch's log (node-state.ts's logFile), as an agent started for it has.
      char log[4500];
      snprintf(log, sizeof log, "%s/agent.log", c->dir);
      int fd = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
      if (fd >= 0) { dup2(fd, 1); dup2(fd, 2); close(fd); }
    }
    exit(node_agent_serve(node, launch, expect, give ? &kept : NULL, send_store));
  }
  close(pair[1]);
  c->pid = pid;
  c->channel = pair[0];
  child_count++;
  if (give) drop_kept(); // the child's now
  return true;
}

// ---- the hand-off
static void end_handoff (int i, const char *answer) {
  if (answer) { ssize_t ignored = write(waiting[i].fd, answer, strlen(answer)); (void)ignored; }
  close(waiting[i].fd);
  free(waiting[i].bytes);
  waiting[i] = waiting[--waiting_count];
}

// A whole hand-off (up to its closing NUL): taken, or refused with the reason, as warm-agent.ts does.
static void take_handoff (int i) {
  struct handoff *h = &waiting[i];
  const char *fields[4] = { NULL };
  size_t env_count = 0, at = 0;
  char **env = calloc(h->length / 2 + 2, sizeof *env);
  if (!env) { end_handoff(i, "no out of memory\n"); return; }
  const char *job_spec = NULL, *its_slurm_job = NULL;
  for (int f = 0; at < h->length && h->bytes[at]; f++) {
    char *s = h->bytes + at;
    at += strlen(s) + 1;
    if (f < 4) { fields[f] = s; continue; }
    char *eq = strchr(s, '=');
    if (!eq || eq == s) continue;
    env[env_count++] = s;
    if (strncmp(s, "P2PRUN_JOB=", 11) == 0) job_spec = s + 11;
    if (strncmp(s, "SLURM_JOB_ID=", 13) == 0) its_slurm_job = s + 13;
  }
  char reason[300], info_hash[41];
  const char *refusal = NULL;
  if (!fields[0] || strcmp(fields[0], HANDOFF_MAGIC) != 0) refusal = "not a hand-off of this p2prun";
  else if (!fields[1] || !*fields[1] || !fields[2] || !*fields[2] || !fields[3] || !*fields[3] || strspn(fields[3], "0123456789") != strlen(fields[3])) {
    refusal = "a hand-off without its node, launch id or rank count";
  } else if ((slurm_job == NULL) != (its_slurm_job == NULL) || (slurm_job && strcmp(slurm_job, its_slurm_job) != 0)) {
    // Started by a Slurm job's launch, the agent ends with that job (its epilog): another job's launch must not depend on it.
    if (slurm_job) snprintf(reason, sizeof reason, "this agent serves Slurm job %.100s", slurm_job);
    else snprintf(reason, sizeof reason, "this agent serves launches outside Slurm jobs");
    refusal = reason;
  } else {
    refusal = node_agent_spec_set(job_spec, info_hash, sizeof info_hash);
  }
  if (refusal) {
    char answer[sizeof reason + 8];
    snprintf(answer, sizeof answer, "no %s\n", refusal);
    free(env);
    end_handoff(i, answer);
    return;
  }
  ssize_t ignored = write(h->fd, "ok\n", 3);
  (void)ignored;
  int fd = h->fd;
  char *bytes = h->bytes;
  waiting[i] = waiting[--waiting_count];
  if (!start_launch(fields[1], fields[2], fields[3], env, fd, info_hash)) {
    // Taken, but not served: the rank sees the connection end before its mount is up, and says so.
    char dir[4400];
    node_state_dir(run_dir, fields[2], fields[1], dir, sizeof dir);
    node_state_fail(dir, "LAUNCH", "the lingering node agent could not start the launch's agent", "stop it (its record in the run directory names it), or set P2PRUN_AGENT_LINGER=0");
  }
  close(fd);
  free(bytes);
  free(env);
}

static void read_handoff (int i) {
  struct handoff *h = &waiting[i];
  for (;;) {
    char chunk[65536];
    ssize_t n = read(h->fd, chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;
    if (n <= 0) { end_handoff(i, NULL); return; } // the rank left before its hand-off was whole
    if (h->length + (size_t)n > HANDOFF_MAX) { end_handoff(i, "no a hand-off of more than 4194304 bytes\n"); return; }
    char *grown = realloc(h->bytes, h->length + (size_t)n + 1);
    if (!grown) { end_handoff(i, "no out of memory\n"); return; }
    h->bytes = grown;
    memcpy(h->bytes + h->length, chunk, (size_t)n);
    h->length += (size_t)n;
    h->bytes[h->length] = 0;
    if (memmem(h->bytes, h->length, "\0\0", 2)) { take_handoff(i); return; }
  }
}

// ---- the socket and the record (node-state.ts's warmAgentFiles, WarmAgentRecord)
static void write_record (FILE *f, const void *arg) {
  (void)arg;
  char escaped[sizeof socket_path * 2];
  json_escape(escaped, sizeof escaped, socket_path);
  fprintf(f, "{\"pid\":%d,\"socket\":\"%s\"", (int)getpid(), escaped);
  if (slurm_job) {
    char job_id[300];
    json_escape(job_id, sizeof job_id, slurm_job);
    fprintf(f, ",\"slurmJob\":\"%s\"", job_id);
  }
  fputs("}", f);
}

// A dead Node agent's record may name the store it kept (a directory): removed with its socket.
static void remove_dead_store (void) {
  char *text = read_record(record_path);
  struct json *record = text ? json_parse(text) : NULL;
  free(text);
  const char *store = json_string(record, "store");
  if (store && *store) remove_tree(store);
  json_free(record);
}

static bool answers (const struct sockaddr_un *addr) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  bool live = fd >= 0 && connect(fd, (const struct sockaddr *)addr, sizeof *addr) == 0;
  if (fd >= 0) close(fd);
  return live;
}

// Listens on the node's socket, in a dead agent's place if one left it; false if a live agent
// listens there (or the path is too long for a socket): this one then serves its launch alone.
static bool listen_unix (const char *safe_node) {
  struct sockaddr_un addr = { .sun_family = AF_UNIX };
  if (snprintf(addr.sun_path, sizeof addr.sun_path, "%s/agent-%s.sock", run_dir, safe_node) >= (int)sizeof addr.sun_path) return false;
  snprintf(socket_path, sizeof socket_path, "%s", addr.sun_path);
  snprintf(record_path, sizeof record_path, "%s/agent-%s.json", run_dir, safe_node);
  for (int attempt = 0; ; attempt++) {
    listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (listen_fd < 0) return false;
    if (bind(listen_fd, (struct sockaddr *)&addr, sizeof addr) == 0) break;
    int err = errno;
    close(listen_fd);
    listen_fd = -1;
    if (err != EADDRINUSE || attempt > 0 || answers(&addr)) return false;
    remove_dead_store();
    unlink(addr.sun_path);
  }
  if (chmod(socket_path, 0600) < 0 || listen(listen_fd, MAX_WAITING) < 0 || !write_atomic(record_path, false, write_record, NULL)) {
    unlink(socket_path);
    close(listen_fd);
    listen_fd = -1;
    return false;
  }
  return true;
}

// Takes no more launches: a rank whose connection was still queued sees it end unanswered and
// starts an agent of its own. The path goes before the socket closes, so it is never another's.
static void leave (void) {
  if (leaving) return;
  leaving = true;
  unlink(record_path);
  unlink(socket_path);
  close(listen_fd);
  listen_fd = -1;
  while (waiting_count > 0) end_handoff(0, NULL);
}

// Ended children: their stores taken back; one that died before its mount was up is its node's
// failure (as a spawned agent's exit is, node.ts's agentLost), unless it recorded one itself.
static int reap (int *first_code) {
  int status;
  pid_t pid;
  int ended = 0;
  while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
    int i = 0;
    while (i < child_count && children[i].pid != pid) i++;
    if (i == child_count) continue;
    struct launch_child *c = &children[i];
    take_store(c->channel);
    close(c->channel);
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    char ready[4500];
    snprintf(ready, sizeof ready, "%s/ready.json", c->dir);
    if (code != 0 && access(ready, F_OK) != 0) {
      char message[128], hint[4500];
      if (WIFSIGNALED(status)) snprintf(message, sizeof message, "the node agent exited (SIG%s) before its mount was ready", sigabbrev_np(WTERMSIG(status)) ? sigabbrev_np(WTERMSIG(status)) : "?");
      else snprintf(message, sizeof message, "the node agent exited (code %d) before its mount was ready", code);
      snprintf(hint, sizeof hint, "see %s/agent.log", c->dir);
      node_state_fail(c->dir, "LAUNCH", message, hint);
    }
    if (c->first) {
      *first_code = code;
      if (code != 0) leave(); // an agent that could not serve its own launch is no agent to hand launches to
    }
    children[i] = children[--child_count];
    ended++;
  }
  return ended;
}

int linger (const char *node, const char *launch, const char *expect, const char *runs, const char *safe_node, uint64_t linger_ms) {
  run_dir = runs;
  slurm_job = getenv("SLURM_JOB_ID");
  if (!listen_unix(safe_node)) return node_agent_serve(node, launch, expect, NULL, NULL);
  // It outlives the launch: it keeps no directory busy (the spec's paths are absolute); if it
  // cannot leave it, it stays there.
  if (chdir("/") < 0) debug("lingering: cannot change to /: %s", strerror(errno));
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGCHLD);
  sigprocmask(SIG_BLOCK, &signals, &old_mask);
  signals_fd = signalfd(-1, &signals, SFD_NONBLOCK | SFD_CLOEXEC);
  int first_code = 0;
  if (signals_fd < 0 || !start_launch(node, launch, expect, NULL, -1, "")) { // nothing kept yet: no set to match
    leave();
    if (signals_fd >= 0) close(signals_fd);
    sigprocmask(SIG_SETMASK, &old_mask, NULL);
    return node_agent_serve(node, launch, expect, NULL, NULL);
  }
  uint64_t idle_since = 0;
  while (!leaving || child_count > 0) {
    uint64_t now = now_ms();
    if (!leaving && child_count == 0 && now - idle_since >= linger_ms) { leave(); continue; }
    for (int i = 0; i < waiting_count;) {
      if (now - waiting[i].since >= HANDOFF_TIMEOUT_MS) end_handoff(i, "no no hand-off in 10 s\n"); else i++;
    }
    struct pollfd fds[2 + MAX_WAITING];
    int n = 0;
    fds[n++] = (struct pollfd){ .fd = signals_fd, .events = POLLIN };
    bool listening = listen_fd >= 0 && waiting_count < MAX_WAITING;
    if (listening) fds[n++] = (struct pollfd){ .fd = listen_fd, .events = POLLIN };
    int first_waiting = n;
    for (int i = 0; i < waiting_count; i++) fds[n++] = (struct pollfd){ .fd = waiting[i].fd, .events = POLLIN };
    uint64_t wake = UINT64_MAX;
    if (!leaving && child_count == 0) wake = idle_since + linger_ms;
    for (int i = 0; i < waiting_count; i++) if (waiting[i].since + HANDOFF_TIMEOUT_MS < wake) wake = waiting[i].since + HANDOFF_TIMEOUT_MS;
    int timeout = wake == UINT64_MAX ? -1 : wake <= now ? 0 : (int)(wake - now);
    if (poll(fds, (nfds_t)n, timeout) < 0 && errno != EINTR) break;
    // Hand-offs first, from the last: ending one moves the last into its place.
    for (int i = waiting_count - 1; i >= 0; i--) if (fds[first_waiting + i].revents) read_handoff(i);
    if (listening && fds[1].revents & POLLIN) {
      int fd;
      while (waiting_count < MAX_WAITING && (fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK)) >= 0) {
        waiting[waiting_count++] = (struct handoff){ .fd = fd, .since = now_ms() };
      }
    }
    if (fds[0].revents & POLLIN) {
      struct signalfd_siginfo info;
      while (read(signals_fd, &info, sizeof info) == sizeof info) {
        if (info.ssi_signo == SIGCHLD) continue;
        // Stopped: every launch it serves ends (unmounted, its ranks' agents gone), then it does.
        leave();
        for (int i = 0; i < child_count; i++) kill(children[i].pid, SIGTERM);
      }
      if (reap(&first_code) > 0 && child_count == 0) idle_since = now_ms();
    }
  }
  drop_kept();
  close(signals_fd);
  return first_code;
}
