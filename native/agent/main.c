// p2prun-agent: the native node agent's options, its loop, its timers and signals.
//   p2prun-agent mount DESCRIPTION|- MOUNTPOINT [--mode eager|block|file] [--tracker URL]... [--seeder HOST:PORT]...
//                [--store-dir DIR] [--port N] [--allow-other] [--owner UID[:GID]] [--max-conns N] [--numwant N]
//                [--stall-timeout SECONDS] [--source [NAME=]DIR]... [--fuse-device PATH] [--stats FILE] [--ready-file FILE]
//                [--node-name NAME] [--quiet] [--no-trackers] [--peer HOST:PORT]... [--head-fallback SECONDS]
//                [--no-passthrough]
// joins the job's swarm, mounts the set read-only at MOUNTPOINT and says `mounted infohash=…
// mode=MODE at=MOUNTPOINT` on stdout once it is up; fetches what the mode says (eager: the whole
// set, files opened and read first; block: what reads wait for, and an opened file's first and
// last pieces; file: an opened file whole before the open returns) and serves it to the other
// nodes until SIGTERM or SIGINT (SIGUSR1: its counters on stdout, one JSON line); then writes
// --stats, unmounts, tells the tracker it leaves, and ends. The options and lines are `p2prun
// mount`'s, so a launcher can start either agent. The job's secret comes from P2PRUN_SECRET
// (never a flag). A node list's peers (lib/swarm/node-list.ts picks them; `p2prun mount
// --node-list` passes them): --no-trackers, --peer for each (dialed until each is connected), and
// --head-fallback SECONDS for a node the list does not have dial the head at start: the seeders
// are dialed once a wait (a read, an open, eager mode's fetch) has had no block for that long.
// With CAP_SYS_ADMIN (root: the Slurm prolog's agents) the kernel reads and maps the set's large
// files straight from the store (FUSE passthrough: fuse-session.c, store.c), and eager mode then
// answers an open of such a file once it is complete; --no-passthrough serves every read itself.
// P2PRUN_DEBUG=1: a line on stderr per connection and announce. --version,
// --help: p2prun's version, the usage.
// For a parent that starts it (lib/native-agent.ts): DESCRIPTION "-" is read from standard input;
// --notify-fd FD says `ok` or the failure there (--daemon's pipe); --die-with-parent.
//   p2prun-agent node-agent --node NAME --launch-id ID [--expect N] [--until-stopped] -- P2PRUN...
// is a launch's node agent (node-agent.c): it serves a mount as `mount` does.
//   p2prun-agent seed DESCRIPTION|- --source [NAME=]DIR... [--host HOST] [--port N] [--tracker URL]...
// is the head's seeder (seed.c), which lib/swarm/native-seeder.ts starts.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/random.h>
#include <sys/signalfd.h>
#include <sys/vfs.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include "agent.h"
#include "mount.h"
#include "node-list.h"
#include "tree.h"

#ifndef P2PRUN_VERSION
#define P2PRUN_VERSION "unknown" // scripts/build.ts passes package.json's
#endif
#define TICK_MS 100
#define STOP_WAIT_MS 1000
#define MAX_DIALED 512
#define REDIAL_MS 1000
#define USAGE "p2prun-agent mount DESCRIPTION|- MOUNTPOINT [--mode eager|block|file] [--tracker URL] [--seeder HOST:PORT] [--store-dir DIR] [--port N] " \
  "[--allow-other] [--owner UID[:GID]] [--max-conns N] [--numwant N] [--stall-timeout SECONDS] [--source [NAME=]DIR] [--fuse-device PATH] " \
  "[--stats FILE] [--ready-file FILE] [--no-trackers] [--peer HOST:PORT] [--head-fallback SECONDS] [--no-passthrough]"

struct job job;
static int epfd;
static bool debugging;
static char *dialed[MAX_DIALED];
static int dialed_count;

void debug (const char *format, ...) {
  if (!debugging) return;
  va_list args;
  va_start(args, format);
  fprintf(stderr, "p2prun-agent: ");
  vfprintf(stderr, format, args);
  fputc('\n', stderr);
  va_end(args);
}

uint64_t now_ms (void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int loop_add (struct watch *w, uint32_t events) {
  struct epoll_event ev = { .events = events, .data.ptr = w };
  return epoll_ctl(epfd, EPOLL_CTL_ADD, w->fd, &ev);
}

int loop_mod (struct watch *w, uint32_t events) {
  struct epoll_event ev = { .events = events, .data.ptr = w };
  return epoll_ctl(epfd, EPOLL_CTL_MOD, w->fd, &ev);
}

void loop_del (struct watch *w) {
  epoll_ctl(epfd, EPOLL_CTL_DEL, w->fd, NULL);
}

void job_proof (const char *purpose, const uint8_t *a, size_t alen, const uint8_t *b, size_t blen,
  const uint8_t *c, size_t clen, uint8_t out[32]) {
  size_t plen = strlen(purpose);
  uint8_t message[256];
  if (plen + alen + blen + clen > sizeof message) { memset(out, 0, 32); return; }
  memcpy(message, purpose, plen);
  memcpy(message + plen, a, alen);
  if (blen) memcpy(message + plen + alen, b, blen);
  if (clen) memcpy(message + plen + alen + blen, c, clen);
  unsigned int len = 32;
  HMAC(EVP_sha256(), job.secret, (int)job.secret_len, message, plen + alen + blen + clen, out, &len);
}

// An address to dial (the tracker's list, a peer's ut_pex, the seeders): each once.
void dial_once (const char *host_port) {
  for (int i = 0; i < dialed_count; i++) if (strcmp(dialed[i], host_port) == 0) return;
  if (dialed_count == MAX_DIALED || peer_count >= job.max_conns) return;
  dialed[dialed_count++] = strdup(host_port);
  peer_dial(host_port);
}

// Peers told of (a tracker's reply, a peer's ut_pex), dialed only while the node has fewer than
// numwant connections; others dial it too, so its degree ends near twice that. Dialing every one
// made the swarm a full mesh: at 32 nodes an agent spent 0.39-0.51 CPU-s against 0.34-0.37 with 8,
// the kernel's per-packet work for 31 slow streams and their haves instead of 8-16 fast ones
// (bench/README.md, 2026-12-04 18:28).
void dial_compact (const uint8_t *peers, size_t length, bool every) {
  if (job.head) return; // nodes dial the head; it dials no one (a tracker's reply, a peer's ut_pex)
  size_t count = length / 6, from = count ? (size_t)random() % count : 0;
  // From a random place: a peer's ut_pex lists its own peers in its order, the same for everyone it tells.
  for (size_t k = 0; k < count && (every || peer_count < job.numwant); k++) {
    const uint8_t *a = peers + (from + k) % count * 6;
    char host_port[32];
    snprintf(host_port, sizeof host_port, "%u.%u.%u.%u:%u", a[0], a[1], a[2], a[3], (unsigned)(a[4] << 8 | a[5]));
    dial_once(host_port);
  }
}

static const char *seeder_list[2 * MAX_ADDRESSES];
static int seeder_list_count;
static uint64_t next_redial;
static uint64_t head_fallback_ms; // 0: the seeders are dialed at start
static bool seeders_held;         // not dialed yet: head_fallback_ms of a wait without a block first
static const char *listed[MAX_LIST_PEERS];
static int listed_count;
static uint64_t next_listed_redial;

// Whether a connection is to the node that listens at `host_port`: one this node dialed there, or
// one it dialed from there (its extension handshake names its listening port).
static bool connected_to (const char *host_port) {
  char host[256], peer_host[256];
  const char *port, *peer_port;
  bool split = split_host_port(host_port, host, sizeof host, &port);
  for (int i = 0; i < peer_count; i++) {
    const struct peer *p = peers[i];
    if (p->phase == P_CLOSED) continue;
    if (strcmp(p->address, host_port) == 0) return true;
    if (split && p->listen_port == atol(port) && split_host_port(p->address, peer_host, sizeof peer_host, &peer_port) && strcmp(peer_host, host) == 0) return true;
  }
  return false;
}

// Each of `addresses` not connected is dialed again, once every REDIAL_MS at most (`next`), while
// fewer than `cap` connections are open.
static void redial (const char *const *addresses, int count, uint64_t *next, int cap) {
  uint64_t now = now_ms();
  if (count == 0 || now < *next) return;
  *next = now + REDIAL_MS;
  for (int i = 0; i < count && peer_count < cap; i++) if (!connected_to(addresses[i])) peer_dial(addresses[i]);
}

// The head past --max-conns too: MAX_PEERS keeps slots for it.
void redial_seeders (void) {
  if (!seeders_held) redial(seeder_list, seeder_list_count, &next_redial, MAX_PEERS);
}

static void dial_seeders (void) {
  seeders_held = false;
  for (int i = 0; i < seeder_list_count; i++) dial_once(seeder_list[i]);
}

// A node list's peers start when their nodes do: each is dialed again until it is connected
// (the tracker's peers come again with its next announce; these would not).
static void redial_listed (void) {
  redial(listed, listed_count, &next_listed_redial, job.max_conns);
}

// The head, for a node the list does not have dial it at start: once something waits (a read, an
// open, eager mode's fetch of the set) and no block has come for head_fallback_ms.
static void head_fallback (uint64_t since) {
  if (!seeders_held || !swarm_waiting()) return;
  uint64_t last = swarm_last_block_at() > since ? swarm_last_block_at() : since;
  if (now_ms() - last < head_fallback_ms) return;
  debug("no block for %llu ms while something waits: dialing the head", (unsigned long long)head_fallback_ms);
  dial_seeders();
}

static struct watch listener;

// Connections one remote address may have in their handshake at once (lib/swarm/connections.ts's
// SETTING_UP_PER_HOST): without it, anyone could hold every slot with idle sockets, each until its
// handshake times out; a node dials a peer once.
#define SETTING_UP_PER_HOST 8

static bool setting_up_full (const char *ip) {
  size_t len = strlen(ip);
  int count = 0;
  for (int i = 0; i < peer_count; i++) {
    const struct peer *p = peers[i];
    if (p->phase < P_OPEN && !p->outgoing && strncmp(p->address, ip, len) == 0 && p->address[len] == ':') count++;
  }
  return count >= SETTING_UP_PER_HOST;
}

int loop_init (void) {
  epfd = epoll_create1(EPOLL_CLOEXEC);
  return epfd < 0 ? -1 : 0;
}

int loop_wait (struct epoll_event *events, int max, int timeout_ms) {
  return epoll_wait(epfd, events, max, timeout_ms);
}

static void on_accept (struct watch *w, uint32_t events) {
  (void)events;
  for (;;) {
    struct sockaddr_storage from;
    socklen_t len = sizeof from;
    int fd = accept4(w->fd, (struct sockaddr *)&from, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;
    char address[48] = "?", ip[INET_ADDRSTRLEN] = "?";
    if (from.ss_family == AF_INET) {
      struct sockaddr_in *in = (struct sockaddr_in *)&from;
      inet_ntop(AF_INET, &in->sin_addr, ip, sizeof ip);
      snprintf(address, sizeof address, "%s:%u", ip, ntohs(in->sin_port));
    }
    if (peer_count >= job.max_conns || setting_up_full(ip)) { close(fd); continue; }
    peer_accept(fd, address);
  }
}

int listen_on (const char *host, uint16_t port) {
  struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_ANY) };
  if (host && inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
    struct addrinfo hints = { .ai_family = AF_INET, .ai_socktype = SOCK_STREAM }, *ai;
    if (getaddrinfo(host, NULL, &hints, &ai) != 0) { errno = EADDRNOTAVAIL; return -1; }
    addr.sin_addr = ((struct sockaddr_in *)ai->ai_addr)->sin_addr;
    freeaddrinfo(ai);
  }
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  if (fd < 0) return -1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  socklen_t len = sizeof addr;
  if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(fd, 1024) < 0 ||
      getsockname(fd, (struct sockaddr *)&addr, &len) < 0) {
    close(fd);
    return -1;
  }
  job.listen_port = ntohs(addr.sin_port);
  listener = (struct watch){ .ready = on_accept, .fd = fd };
  return loop_add(&listener, EPOLLIN);
}

int job_secret_from_hex (const char *hex) {
  size_t n = strlen(hex);
  if (n < 32 || n % 2 || n / 2 > sizeof job.secret || !bytes_of_hex(hex, job.secret, n / 2)) return -1;
  job.secret_len = n / 2;
  return 0;
}

#define STR(x) STR_(x)
#define STR_(x) #x

bool whole_number (const char *text, long min, long max, long *out) {
  char *end;
  errno = 0;
  long v = strtol(text, &end, 10);
  if (!*text || *end || errno || v < min || v > max) return false;
  *out = v;
  return true;
}

// --notify-fd: the pipe a parent waits on (lib/session/process.ts's readyLine): `ok` once mounted,
// or `error` and the failure as lib/errors.ts's FailureRecord, then closed.
static int notify_fd = -1;

void notify (const char *line) {
  if (notify_fd < 0) return;
  size_t left = strlen(line);
  while (left > 0) {
    ssize_t n = write(notify_fd, line, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    line += n;
    left -= (size_t)n;
  }
  close(notify_fd);
  notify_fd = -1;
}

// The one line of a failure: to a parent waiting on --notify-fd (which tells it), else on stderr;
// the exit code of a bad input.
static const struct serve_hooks *hooks;

int fail_as (const char *code, const char *what, const char *hint) {
  if (notify_fd < 0) {
    fprintf(stderr, "p2prun-agent: %s (hint: %s)\n", what, hint);
    if (hooks) hooks->failed(code, what, hint); // after the line: it may keep the log
    return 2;
  }
  char message[1400], hint_json[700], line[2200];
  json_escape(message, sizeof message, what);
  json_escape(hint_json, sizeof hint_json, hint);
  snprintf(line, sizeof line, "error {\"code\":\"%s\",\"message\":\"%s\",\"hint\":\"%s\"}\n", code, message, hint_json);
  notify(line);
  return 2;
}

static int fail (const char *what, const char *hint) {
  return fail_as("USAGE", what, hint);
}

// This process's CPU and context switches so far, as lib/session/node.ts counts a Node agent's.
void usage_json (char *out, size_t size) {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  snprintf(out, size, "{\"user\":%.6f,\"system\":%.6f,\"voluntary\":%ld,\"involuntary\":%ld}",
    (double)u.ru_utime.tv_sec + u.ru_utime.tv_usec / 1e6, (double)u.ru_stime.tv_sec + u.ru_stime.tv_usec / 1e6, u.ru_nvcsw, u.ru_nivcsw);
}

// What the agent moved and served, as `p2prun mount --stats` writes it (the members both have),
// `extra` members first, and what it cost: its whole life's CPU.
void write_stats (FILE *f, const char *extra) {
  char counters[1024], cpu[200];
  mount_counters_json(counters, sizeof counters);
  usage_json(cpu, sizeof cpu);
  fprintf(f, "{%s\"swarm\":{\"fromHead\":%llu,\"fromPeers\":%llu,\"fromSource\":%llu,\"uploaded\":%llu,\"piecesHave\":%u,\"pieceCount\":%u,\"failedPieces\":%llu,\"requests\":%llu,\"rejected\":%llu,\"rejectedByHead\":%llu},\"fs\":{%s},\"cpu\":%s}\n",
    extra, (unsigned long long)stats.from_head, (unsigned long long)stats.from_peers, (unsigned long long)stats.from_source,
    (unsigned long long)stats.uploaded, swarm_have_count(), job.desc.piece_count, (unsigned long long)stats.failed_pieces,
    (unsigned long long)stats.requests, (unsigned long long)stats.rejected, (unsigned long long)stats.rejected_by_head, counters, cpu);
  fflush(f);
}

static void write_stats_file (const char *file) {
  FILE *f = fopen(file, "w");
  if (!f) { fprintf(stderr, "p2prun-agent: cannot write %s: %s\n", file, strerror(errno)); return; }
  write_stats(f, "");
  fclose(f);
}

// A size as lib/description.ts's formatBytes writes it (its messages and these read alike).
static void format_bytes (uint64_t n, char *out, size_t size) {
  static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB" };
  double v = (double)n;
  int i = 0;
  while (v >= 1024 && i < 4) { v /= 1024; i++; }
  if (i == 0) snprintf(out, size, "%llu B", (unsigned long long)n);
  else snprintf(out, size, "%.*f %s", v < 10 ? 2 : 1, v, units[i]);
}

// File systems by statfs f_type that put a network (or a user-space server) behind every call: the
// store must not live on them. lib/file-systems.ts's REMOTE_FS_TYPES (test/native-agent.test.ts
// checks that the two lists match).
static const struct { unsigned long type; const char *name; } REMOTE_FS_TYPES[] = {
  { 0x65735546, "FUSE" }, { 0x6969, "NFS" }, { 0xff534d42, "CIFS" }, { 0xfe534d42, "SMB2" }, { 0x517b, "SMB" },
  { 0x0bd00bd0, "Lustre" }, { 0x47504653, "GPFS" }, { 0x00c36400, "CephFS" }, { 0x19830326, "BeeGFS" },
  { 0x5346414f, "AFS" }, { 0x01021997, "9P" }, { 0xaad7aaea, "PanFS" }, { 0x20030528, "OrangeFS" }
};

static const char *remote_kind (unsigned long type) {
  for (size_t i = 0; i < sizeof REMOTE_FS_TYPES / sizeof *REMOTE_FS_TYPES; i++) if (REMOTE_FS_TYPES[i].type == type) return REMOTE_FS_TYPES[i].name;
  return NULL;
}

static enum { STARTING, MOUNTED, FAILED } state = STARTING;
static const char *mount_arg, *ready_file;
const char *const MODE_NAMES[] = { [MODE_EAGER] = "eager", [MODE_BLOCK] = "block", [MODE_FILE] = "file" };

void hex_of (const uint8_t *bytes, size_t n, char *out) {
  for (size_t i = 0; i < n; i++) sprintf(out + 2 * i, "%02x", bytes[i]);
  out[2 * n] = 0;
}

bool bytes_of_hex (const char *hex, uint8_t *out, size_t n) {
  if (strlen(hex) != 2 * n) return false;
  for (size_t i = 0; i < n; i++) {
    unsigned v;
    if (sscanf(hex + 2 * i, "%2x", &v) != 1) return false;
    out[i] = (uint8_t)v;
  }
  return true;
}

void url_escape (const uint8_t *bytes, size_t n, char *out) {
  for (size_t i = 0; i < n; i++) out += sprintf(out, "%%%02X", bytes[i]);
}

// The host in [start, end) into `host`, an IPv6 address's brackets dropped; false if it does not fit.
static bool host_of (const char *start, const char *end, char *host, size_t host_size) {
  if (*start == '[' && end > start && end[-1] == ']') { start++; end--; }
  if ((size_t)(end - start) >= host_size) return false;
  snprintf(host, host_size, "%.*s", (int)(end - start), start);
  return true;
}

bool split_host_port (const char *host_port, char *host, size_t host_size, const char **port) {
  const char *colon = strrchr(host_port, ':');
  if (!colon || strchr(colon, ']') || !host_of(host_port, colon, host, host_size)) return false;
  *port = colon + 1;
  return true;
}

bool http_url_parse (const char *url, struct http_url *out) {
  if (strncmp(url, "http://", 7) != 0) return false;
  const char *authority = url + 7, *slash = strchr(authority, '/');
  size_t length = slash ? (size_t)(slash - authority) : strlen(authority);
  // A port after the host, not a colon of an IPv6 address in brackets.
  const char *colon = memrchr(authority, ':', length), *bracket = memrchr(authority, ']', length);
  if (colon && bracket && colon < bracket) colon = NULL;
  size_t port_length = colon ? (size_t)(authority + length - colon - 1) : 2;
  if (port_length >= sizeof out->port || !host_of(authority, colon ? colon : authority + length, out->host, sizeof out->host)) return false;
  snprintf(out->port, sizeof out->port, "%.*s", (int)port_length, colon ? colon + 1 : "80");
  out->authority = authority;
  out->authority_length = (int)length;
  out->path = slash ? slash : "/";
  return true;
}

int dial_tcp (const char *host, const char *port) {
  struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV }, *ai;
  if (getaddrinfo(host, port, &hints, &ai) != 0) return DIAL_UNRESOLVED;
  int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int r = fd < 0 ? -1 : connect(fd, ai->ai_addr, ai->ai_addrlen);
  int error = r == 0 ? 0 : errno;
  freeaddrinfo(ai);
  if (fd >= 0 && r < 0 && error != EINPROGRESS) { close(fd); fd = -1; }
  errno = error;
  return fd;
}

bool new_peer_id (uint8_t out[20]) {
  static bool seeded;
  uint8_t random_bytes[6];
  if (getrandom(random_bytes, sizeof random_bytes, 0) != sizeof random_bytes) return false;
  char id[21];
  snprintf(id, sizeof id, "%s%02x%02x%02x%02x%02x%02x", job.head ? "-P2H020-" : "-P2N020-", random_bytes[0], random_bytes[1], random_bytes[2],
    random_bytes[3], random_bytes[4], random_bytes[5]);
  memcpy(out, id, 20);
  if (!seeded) srandom(random_bytes[0] | random_bytes[1] << 8 | (unsigned)random_bytes[2] << 16);
  seeded = true;
  return true;
}

static void write_ready (FILE *f, const void *arg) {
  (void)arg;
  char escaped[8192];
  json_escape(escaped, sizeof escaped, mount_path());
  fprintf(f, "{\"pid\":%d,\"mountPoint\":\"%s\"}", (int)getpid(), escaped);
}

// --ready-file: {"pid","mountPoint"} once mounted, as `p2prun mount --ready-file` writes it
// (written whole, then renamed into place); removed when the agent ends.
static void write_ready_file (void) {
  if (!write_atomic(ready_file, false, write_ready, NULL)) fprintf(stderr, "p2prun-agent: cannot write %s: %s\n", ready_file, strerror(errno));
}

static void on_mounted (const char *failure) {
  if (failure) {
    char what[600];
    snprintf(what, sizeof what, "cannot mount %s: %s", mount_arg, failure);
    fail_as("FUSE", what, "check that /dev/fuse and fusermount3 are there, and the mount point is yours");
    state = FAILED;
    return;
  }
  state = MOUNTED;
  char hex[41];
  hex_of(job.desc.info_hash, 20, hex);
  if (ready_file) write_ready_file();
  if (hooks) hooks->ready();
  printf("mounted infohash=%s mode=%s at=%s\n", hex, MODE_NAMES[job.mode], mount_path());
  char line[220];
  usage_json(line + 3, sizeof line - 4);
  memcpy(line, "ok ", 3);
  strcat(line, "\n");
  notify(line); // with what starting cost, for the parent's counters
}

static bool stop_requested;

struct watch *stop_signals_watch (void) {
  static struct watch stop;
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGUSR1); // not a stop: the counters so far, on stdout
  sigprocmask(SIG_BLOCK, &signals, NULL);
  stop = (struct watch){ .ready = NULL, .fd = signalfd(-1, &signals, SFD_NONBLOCK | SFD_CLOEXEC) };
  return stop.fd < 0 || loop_add(&stop, EPOLLIN) < 0 ? NULL : &stop;
}

void agent_stop (void) {
  stop_requested = true;
}

int main (int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  signal(SIGPIPE, SIG_IGN);
  debugging = getenv("P2PRUN_DEBUG") && *getenv("P2PRUN_DEBUG");
  if (argc == 2 && strcmp(argv[1], "--version") == 0) { printf("%s\n", P2PRUN_VERSION); return 0; }
  if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) { printf("usage: %s\n", USAGE); return 0; }
  // Read first: every failure after this goes to the parent waiting on it too.
  for (int i = 2; i + 1 < argc; i++) {
    long fd;
    if (strcmp(argv[i], "--notify-fd") == 0 && whole_number(argv[i + 1], 3, 1023, &fd)) notify_fd = (int)fd;
  }
  if (argc >= 2 && strcmp(argv[1], "node-agent") == 0) return node_agent(argc - 1, argv + 1);
  if (argc >= 2 && strcmp(argv[1], "seed") == 0) return agent_seed(argc - 1, argv + 1);
  if (argc < 2 || strcmp(argv[1], "mount") != 0) return fail("expected a command: mount DESCRIPTION MOUNTPOINT", USAGE);
  return agent_mount(argc - 1, argv + 1, NULL);
}

int agent_mount (int argc, char **argv, const struct serve_hooks *node_hooks) {
  hooks = node_hooks;
  const char *desc_file = NULL, *store_dir = "/dev/shm", *stats_file = NULL, *fuse_device = "/dev/fuse";
  long port = 0, uid = getuid(), gid = getgid();
  double stall_seconds = 60; // lib/config.ts's defaults, as for the Node agent
  job.max_conns = 100;
  job.numwant = 8;
  bool allow_other = false, no_passthrough = false;
  const char *trackers[MAX_ADDRESSES], *seeders[MAX_ADDRESSES];
  int tracker_count = 0, seeder_count = 0;
  bool no_trackers = false;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *value = i + 1 < argc ? argv[i + 1] : NULL;
    char what[160];
    long n;
    if (strcmp(a, "--store-dir") == 0 && value) { store_dir = value; i++; }
    else if (strcmp(a, "--stats") == 0 && value) { stats_file = value; i++; }
    else if (strcmp(a, "--fuse-device") == 0 && value) { fuse_device = value; i++; }
    else if (strcmp(a, "--ready-file") == 0 && value) { ready_file = value; i++; }
    else if (strcmp(a, "--notify-fd") == 0 && value && notify_fd >= 0) i++;
    else if (strcmp(a, "--die-with-parent") == 0) {
      // A launch's agent (lib/native-agent.ts) lives inside a Node agent's life: a parent killed
      // with SIGKILL must not leave it serving (the epilog and umount stop the parent only).
      if (prctl(PR_SET_PDEATHSIG, SIGTERM) < 0 || getppid() == 1) return fail_as("LAUNCH", "the parent agent is gone", "start the agent from `p2prun mount`");
    }
    else if (strcmp(a, "--port") == 0 && value) {
      if (!whole_number(value, 0, 65535, &port)) return fail("--port takes a port number", "--port 6881, or 0 for any");
      i++;
    }
    else if (strcmp(a, "--max-conns") == 0 && value) {
      if (!whole_number(value, 1, MAX_CONNS, &n)) return fail("--max-conns takes a number of connections from 1 to " STR(MAX_CONNS), "use `p2prun mount` for more");
      job.max_conns = (int)n;
      i++;
    }
    else if (strcmp(a, "--numwant") == 0 && value) {
      if (!whole_number(value, 1, 100000, &n)) return fail("--numwant takes a number of peers", "--numwant 8");
      job.numwant = (int)n;
      i++;
    }
    else if (strcmp(a, "--stall-timeout") == 0 && value) {
      char *end;
      stall_seconds = strtod(value, &end);
      if (*end || !(stall_seconds >= 1 && stall_seconds <= 1e6)) return fail("--stall-timeout takes seconds, at least 1", "--stall-timeout 60");
      i++;
    }
    else if (strcmp(a, "--owner") == 0 && value) {
      char *colon = strchr(value, ':');
      if (colon) *colon = 0;
      if (!whole_number(value, 0, 0xfffffffeL, &uid) || (colon && !whole_number(colon + 1, 0, 0xfffffffeL, &gid))) {
        return fail("--owner takes UID[:GID] in numbers", "--owner 1000:1000");
      }
      if (!colon) gid = uid;
      i++;
    }
    else if (strcmp(a, "--source") == 0 && value) {
      if (source_add(value, what, sizeof what) < 0) return fail(what, "--source /the/directory/described, or NAME=/dir for one of several");
      i++;
    }
    else if (strcmp(a, "--tracker") == 0 && value && tracker_count < MAX_ADDRESSES) { trackers[tracker_count++] = value; i++; }
    else if (strcmp(a, "--seeder") == 0 && value && seeder_count < MAX_ADDRESSES) { seeders[seeder_count++] = value; i++; }
    else if (strcmp(a, "--no-trackers") == 0) no_trackers = true;
    else if (strcmp(a, "--peer") == 0 && value) {
      char host[sizeof peers[0]->address];
      const char *listed_port;
      if (!split_host_port(value, host, sizeof host, &listed_port) || !*host || !whole_number(listed_port, 1, 65535, &n) || strlen(value) >= sizeof host) {
        snprintf(what, sizeof what, "--peer takes HOST:PORT, not '%s'", value);
        return fail(what, "--peer 10.0.0.7:6881");
      }
      if (listed_count == MAX_LIST_PEERS) return fail("more than " STR(MAX_LIST_PEERS) " --peer addresses", "a node list's node dials log2(N) + 3 of its nodes");
      listed[listed_count++] = value;
      i++;
    }
    else if (strcmp(a, "--head-fallback") == 0 && value) {
      char *end;
      double seconds = strtod(value, &end);
      if (*end || !(seconds >= 0 && seconds <= 1e6)) return fail("--head-fallback takes seconds", "--head-fallback 3");
      head_fallback_ms = (uint64_t)(seconds * 1000);
      seeders_held = true;
      i++;
    }
    else if (strcmp(a, "--mode") == 0 && value) {
      if (strcmp(value, "eager") == 0) job.mode = MODE_EAGER;
      else if (strcmp(value, "block") == 0) job.mode = MODE_BLOCK;
      else if (strcmp(value, "file") == 0) job.mode = MODE_FILE;
      else {
        snprintf(what, sizeof what, "--mode takes eager, block or file, not '%s'", value);
        return fail(what, "--mode eager");
      }
      i++;
    }
    else if (strcmp(a, "--node-name") == 0 && value) i++; // a label for the Node agent's mount point template; this one needs MOUNTPOINT
    else if (strcmp(a, "--quiet") == 0) {}
    else if (strcmp(a, "--allow-other") == 0) allow_other = true;
    else if (strcmp(a, "--no-passthrough") == 0) no_passthrough = true;
    else if ((a[0] != '-' || strcmp(a, "-") == 0) && !desc_file) desc_file = a;
    else if (a[0] != '-' && !mount_arg) mount_arg = a;
    else { snprintf(what, sizeof what, "unknown or incomplete option '%s'", a); return fail(what, USAGE); }
  }
  job.stall_ms = (uint64_t)(stall_seconds * 1000);
  if (no_trackers && tracker_count > 0) return fail("--no-trackers and --tracker exclude each other", "a node list's peers come from --peer");
  if (!desc_file || !mount_arg) return fail("mount needs a description and a mount point", USAGE);
  const char *secret = getenv("P2PRUN_SECRET");
  if (secret && *secret && job_secret_from_hex(secret) < 0) return fail("P2PRUN_SECRET is not a job secret: expected at least 16 bytes in hex", "make one with `openssl rand -hex 32`");

  char error[600] = "";
  if (hooks && hooks->description) job.desc = *hooks->description;
  else if (description_read(desc_file, &job.desc, error, sizeof error) < 0) return fail_as("DESCRIPTION", error, "make one with `p2prun describe DIR -o FILE`");
  struct table table;
  char tree_error[500];
  if (tree_table(&job.desc, (uid_t)uid, (gid_t)gid, &table, tree_error, sizeof tree_error) < 0) {
    snprintf(error, sizeof error, "description %s %s", desc_file, tree_error);
    return fail_as("DESCRIPTION", error, "describe the directory again with `p2prun describe DIR -o FILE`");
  }
  if (access(fuse_device, R_OK | W_OK) < 0) {
    snprintf(error, sizeof error, "FUSE is not available: %s is missing or not accessible (%s)", fuse_device, strerror(errno));
    return fail_as("FUSE", error, "load the fuse kernel module (modprobe fuse), or give the container --device /dev/fuse");
  }
  if (tracker_count > 0 || no_trackers) {
    for (int i = 0; i < job.desc.tracker_count; i++) free(job.desc.trackers[i]);
    for (int i = 0; i < tracker_count; i++) job.desc.trackers[i] = strdup(trackers[i]);
    job.desc.tracker_count = tracker_count;
  }
  if (!new_peer_id(job.peer_id)) return fail_as("LAUNCH", "no random bytes for a peer id", "check /dev/urandom");

  struct watch *stop = loop_init() < 0 ? NULL : stop_signals_watch();
  if (!stop) return fail_as("LAUNCH", strerror(errno), "the agent needs epoll and signalfd (Linux)");
  struct statfs fs;
  bool looked = statfs(store_dir, &fs) == 0; // if it cannot be, making the store below says why
  const char *remote = looked ? remote_kind((unsigned long)fs.f_type) : NULL;
  if (remote) {
    snprintf(error, sizeof error, "the store directory %s is on %s: the node agent reads and writes its store without waiting", store_dir, remote);
    return fail_as("SWARM", error, "pass --store-dir on node-local memory or disk (the default is /dev/shm)");
  }
  const struct kept_store *kept = hooks ? hooks->kept : NULL;
  if (looked && !kept && (uint64_t)fs.f_bavail * fs.f_bsize < job.desc.total_bytes) {
    char free_text[32], set_text[32];
    format_bytes((uint64_t)fs.f_bavail * fs.f_bsize, free_text, sizeof free_text);
    format_bytes(job.desc.total_bytes, set_text, sizeof set_text);
    snprintf(error, sizeof error, "the store directory %s has %s free and the set needs %s", store_dir, free_text, set_text);
    return fail_as("SWARM", error, "pass --store-dir with room for it, or serve less (--libs DIR, or --libs-policy network)");
  }
  // Large files in files of their own when the kernel may serve them from there (FUSE passthrough),
  // unless the store is to be kept for a next launch: linger.c hands over one file.
  bool own_files = !no_passthrough && !kept && !(hooks && hooks->keep) && mount_may_pass_through();
  if (swarm_init(store_dir, kept ? kept->fd : -1, own_files ? &table : NULL) < 0) {
    snprintf(error, sizeof error, "cannot make a store of %llu bytes in %s: %s", (unsigned long long)job.desc.total_bytes, store_dir, strerror(errno));
    return fail_as("SWARM", error, "--store-dir takes a writable directory with room for the set, such as /dev/shm");
  }
  if (listen_on(NULL, (uint16_t)port) < 0) {
    snprintf(error, sizeof error, "cannot listen on port %ld: %s", port, strerror(errno));
    return fail_as("SWARM", error, "choose another --port, or 0 for any");
  }
  if (mount_start(mount_arg, &table, allow_other, on_mounted, error, sizeof error) < 0) {
    mount_stop();
    return fail_as("FUSE", error, "give an empty directory you own as the mount point");
  }
  if (kept) swarm_adopt(kept->bits);

  tracker_announce(EV_STARTED);
  for (int i = 0; i < job.desc.seeder_count; i++) seeder_list[seeder_list_count++] = job.desc.seeders[i];
  for (int i = 0; i < seeder_count; i++) seeder_list[seeder_list_count++] = seeders[i];
  if (!seeders_held) dial_seeders();
  for (int i = 0; i < listed_count; i++) dial_once(listed[i]);
  uint64_t started = now_ms();
  bool stopping = false;
  uint64_t next_tick = now_ms() + TICK_MS, stop_by = 0;
  while (state != FAILED) {
    if (!stopping && (mount_gone() || stop_requested)) { stopping = true; stop_by = now_ms() + STOP_WAIT_MS; debug("stopping"); tracker_announce(EV_STOPPED); }
    if (stopping && (!tracker_busy() || now_ms() >= stop_by)) break;
    uint64_t now = now_ms(), wake = swarm_wake_at() < next_tick ? swarm_wake_at() : next_tick;
    int timeout = now >= wake ? 0 : (int)(wake - now);
    struct epoll_event events[64];
    int n = loop_wait(events, 64, timeout);
    for (int i = 0; i < n; i++) {
      struct watch *w = events[i].data.ptr;
      if (w != stop) { w->ready(w, events[i].events); continue; }
      struct signalfd_siginfo info;
      bool stop_asked = false;
      while (read(stop->fd, &info, sizeof info) > 0) {
        if (info.ssi_signo == SIGUSR1) write_stats(stdout, ""); else stop_asked = true;
      }
      if (!stop_asked) continue;
      if (!stopping) { stopping = true; stop_by = now_ms() + STOP_WAIT_MS; debug("stopping"); tracker_announce(EV_STOPPED); }
    }
    if (now_ms() >= swarm_wake_at()) swarm_wake();
    peers_flush();
    peers_bury();
    if (now_ms() >= next_tick) {
      peers_tick();
      swarm_tick();
      tracker_tick();
      mount_tick(swarm_last_block_at());
      redial_listed();
      head_fallback(started);
      if (hooks && hooks->tick) hooks->tick();
      peers_bury();
      next_tick = now_ms() + TICK_MS;
    }
  }
  if (ready_file && state == MOUNTED) unlink(ready_file);
  if (stats_file && strcmp(stats_file, "-") == 0) write_stats(stdout, ""); // a parent's socket: not reopened by name
  else if (stats_file) write_stats_file(stats_file);
  mount_stop();
  if (hooks && state != FAILED) hooks->ended();
  debug("from the head %llu, from peers %llu, uploaded %llu bytes; %llu pieces failed their check",
    (unsigned long long)stats.from_head, (unsigned long long)stats.from_peers, (unsigned long long)stats.uploaded,
    (unsigned long long)stats.failed_pieces);
  if (hooks && hooks->keep && state != FAILED) hooks->keep(store_fd);
  swarm_close();
  return state == FAILED ? 1 : 0;
}
