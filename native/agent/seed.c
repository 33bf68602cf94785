// The head's seeder, native (lib/swarm/native-seeder.ts starts it; lib/swarm/seeder.ts is the Node
// one, whose rules it keeps):
//   p2prun-agent seed DESCRIPTION|- --source [NAME=]DIR... [--host HOST] [--port N] [--tracker URL]...
//                [--max-conns N] [--defer-ms MS] [--verify] [--notify-fd FD] [--control-fd FD] [--die-with-parent]
// serves the set from the directories it was described from: each file opened read-only, blocks
// sent from the source's page cache (sendfile), nothing copied or written. It says `ok {"port":N}`
// on --notify-fd once it listens, announces to the trackers to be listed (it dials no one), and
// prints its counters on stdout as one JSON line whenever they changed (at most every tick), on
// SIGUSR1 and when it ends (SIGTERM, SIGINT, or its control pipe closed).
// Why native: on the bench's 32-node cluster the Node seeder took 1.0-1.2 CPU-s of two shared
// cores while the nodes fetched, ~10 % of them (bench/README.md, 2026-12-05).
// The rules, as seeder.ts has them:
// - every piece is hashed against the description before it is first sent, and before every send
//   once a file it spans changed after the head opened it: a file changed after it was described
//   (same size and mtime, other bytes) would otherwise be sent to every node, refused by each, and
//   asked for again without end. Such pieces are turned down, said once on stderr.
// - the head sends each piece to one node at a time (--defer-ms, lib/swarm/fan-out.ts): another
//   node asking for it within that time, or until the first says it has it (at most
//   CONFIRM_WAIT_MAX_MS), gets a BEP 6 reject and a referral to that node (ut_pex).
// - the description (p2prun_desc) goes to a few peers (peer.c), and to anyone while the control
//   pipe's last byte was '1': the parent says so when no node that has it is left.
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <signal.h>
#include <unistd.h>
#include "agent.h"
#include "tree.h"
#include "../fuse-table.h"

#define TICK_MS 100
#define STOP_WAIT_MS 1000
#define CONFIRM_WAIT_MAX_MS 10000 // a node's own wait for an answer (lib/swarm/seeder.ts)
#define SEED_USAGE "p2prun-agent seed DESCRIPTION|- --source [NAME=]DIR [--host HOST] [--port N] [--tracker URL] " \
  "[--max-conns N] [--defer-ms MS] [--verify] [--notify-fd FD] [--control-fd FD] [--die-with-parent]"

static struct table table;
static uint64_t defer_ms = 2000;
static struct { uint32_t serial; uint64_t at; } *sent_to; // per piece: the node the head last sent it to
static uint8_t *checked;  // per piece: hashed against the description, its files unchanged since
static uint8_t *differs;  // per piece: its source has other bytes now, turned down from then on
static uint8_t *piece;    // a piece's bytes for its check
static bool warned;
static uint32_t joined, connected;
static uint64_t most_to_one; // of the peers gone

// Once: every node would otherwise stall on the piece without knowing why.
static void warn_differs (uint32_t index) {
  if (warned) return;
  warned = true;
  uint64_t start = (uint64_t)index * job.desc.piece_length, end = start + piece_size(&job.desc, index);
  char files[1024] = "";
  size_t used = 0;
  for (uint32_t ino = 2; ino <= table.count && used < sizeof files - 1; ino++) {
    const struct inode *n = &table.inodes[ino];
    char rel[4096];
    if (!S_ISREG(n->mode) || n->size == 0 || n->offset >= end || n->offset + n->size <= start || !table_path(&table, ino, rel, sizeof rel)) continue;
    used += (size_t)snprintf(files + used, sizeof files - used, "%s%s", used ? ", " : "", rel);
  }
  fprintf(stderr, "p2prun-agent: the source no longer matches the description: piece %u (%s) has other bytes; such pieces are not served "
    "(describe the directory again and restart the job)\n", index, files);
}

// Whether piece `index` as the source has it now still hashes to the description.
static bool source_matches (uint32_t index) {
  if (differs[index]) return false;
  uint64_t at = (uint64_t)index * job.desc.piece_length;
  bool changed = store_source_changed(at, piece_size(&job.desc, index));
  if (checked[index] && !changed) return true;
  if (swarm_piece_matches(index, piece)) { checked[index] = !changed; return true; }
  differs[index] = 1;
  warn_differs(index);
  return false;
}

static struct peer *open_peer_of (uint32_t serial) {
  for (int i = 0; i < peer_count; i++) if (peers[i]->serial == serial && peers[i]->phase == P_OPEN) return peers[i];
  return NULL;
}

// Tells p where `to` listens, once per connection (its ring of the last 16 told).
static void refer (struct peer *p, const struct peer *to) {
  for (int i = 0; i < 16; i++) if (p->referred[i] == to->serial) return;
  p->referred[p->referred_next] = to->serial;
  p->referred_next = (uint8_t)((p->referred_next + 1) % 16);
  peer_send_referral(p, to);
}

bool seed_may_send (struct peer *p, uint32_t index) {
  if (!source_matches(index)) return false;
  if (defer_ms == 0 || !p->fast) return true; // only a BEP 6 peer can be turned down
  uint64_t now = now_ms();
  struct peer *to = sent_to[index].serial ? open_peer_of(sent_to[index].serial) : NULL;
  uint64_t since = now - sent_to[index].at;
  if (to == p) return true;
  if (to && (since < defer_ms || (since < CONFIRM_WAIT_MAX_MS && !to->has[index]))) { refer(p, to); return false; }
  sent_to[index].serial = p->serial;
  sent_to[index].at = now;
  return true;
}

void seed_joined (struct peer *p) {
  p->told_pieces = true;
  joined++;
  connected++;
}

void seed_left (struct peer *p) {
  if (p->told_pieces) connected--;
  if (p->uploaded > most_to_one) most_to_one = p->uploaded;
}

// The counters lib/swarm/native-seeder.ts reads, if they changed since they were last printed, or
// `asked` for (SIGUSR1: the line says so, the parent waits for it) or `always`.
static void print_counters (bool always, bool asked) {
  static uint64_t last_uploaded = UINT64_MAX, last_description;
  static uint32_t last_joined, last_connected;
  if (!always && !asked && stats.uploaded == last_uploaded && stats.description_sent == last_description && joined == last_joined && connected == last_connected) return;
  last_uploaded = stats.uploaded;
  last_description = stats.description_sent;
  last_joined = joined;
  last_connected = connected;
  uint64_t most = most_to_one;
  for (int i = 0; i < peer_count; i++) if (peers[i]->uploaded > most) most = peers[i]->uploaded;
  char cpu[200];
  usage_json(cpu, sizeof cpu);
  printf("{\"uploaded\":%llu,\"maxToOnePeer\":%llu,\"descriptionBytes\":%llu,\"joined\":%u,\"connected\":%u,\"asked\":%s,\"cpu\":%s}\n",
    (unsigned long long)stats.uploaded, (unsigned long long)most, (unsigned long long)stats.description_sent, joined, connected, asked ? "true" : "false", cpu);
}

// --control-fd: '1' hands the description to anyone, '0' to a few again; its end (the parent
// gone) stops the seeder.
static bool control_closed;

static void on_control (struct watch *w, uint32_t events) {
  (void)events;
  char bytes[64];
  ssize_t n = read(w->fd, bytes, sizeof bytes);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (n <= 0) { control_closed = true; loop_del(w); return; }
  job.desc_to_anyone = bytes[n - 1] == '1';
}

// The trackers told the seeder leaves; when it goes whether or not they heard.
static uint64_t stop_telling_trackers (void) {
  tracker_announce(EV_STOPPED);
  return now_ms() + STOP_WAIT_MS;
}

// Pieces of the source that do not hash to the description, all read.
static uint32_t mismatches (void) {
  uint32_t bad = 0;
  for (uint32_t i = 0; i < job.desc.piece_count; i++) {
    if (swarm_piece_matches(i, piece)) checked[i] = 1; else bad++;
  }
  return bad;
}

int agent_seed (int argc, char **argv) {
  const char *desc_file = NULL, *host = NULL, *trackers[MAX_ADDRESSES];
  int tracker_count = 0;
  long port = 0, control_fd = -1, n;
  bool verify = false;
  char what[600], sources[1024] = "";
  job.head = true;
  job.max_conns = MAX_HEAD_CONNS;
  job.numwant = 1; // listed, not to dial: dial_compact dials no one for the head
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *value = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "--source") == 0 && value) {
      if (source_add(value, what, sizeof what) < 0) return fail_as("USAGE", what, "--source /the/directory/described, or NAME=/dir for one of several");
      size_t used = strlen(sources);
      const char *named = value[0] == '/' ? NULL : strstr(value, "=/"); // NAME=DIR: the directory
      snprintf(sources + used, sizeof sources - used, "%s%s", used ? ", " : "", named ? named + 1 : value);
      i++;
    }
    else if (strcmp(a, "--host") == 0 && value) { host = value; i++; }
    else if (strcmp(a, "--port") == 0 && value) {
      if (!whole_number(value, 0, 65535, &port)) return fail_as("USAGE", "--port takes a port number", "--port 6882, or 0 for any");
      i++;
    }
    else if (strcmp(a, "--tracker") == 0 && value) {
      if (tracker_count == MAX_ADDRESSES) return fail_as("USAGE", "more --tracker URLs than the seeder takes", "list at most 16");
      trackers[tracker_count++] = value;
      i++;
    }
    else if (strcmp(a, "--max-conns") == 0 && value) {
      if (!whole_number(value, 1, MAX_HEAD_CONNS, &n)) return fail_as("USAGE", "--max-conns takes a number of connections from 1 to 1000", "--max-conns 1000");
      job.max_conns = (int)n;
      i++;
    }
    else if (strcmp(a, "--defer-ms") == 0 && value) {
      if (!whole_number(value, 0, 3600000, &n)) return fail_as("USAGE", "--defer-ms takes milliseconds", "--defer-ms 2000, or 0 for off");
      defer_ms = (uint64_t)n;
      i++;
    }
    else if (strcmp(a, "--control-fd") == 0 && value) {
      if (!whole_number(value, 3, 1023, &control_fd)) return fail_as("USAGE", "--control-fd takes a descriptor", "--control-fd 4");
      i++;
    }
    else if (strcmp(a, "--notify-fd") == 0 && value) i++; // main() took it
    else if (strcmp(a, "--verify") == 0) verify = true;
    else if (strcmp(a, "--die-with-parent") == 0) {
      if (prctl(PR_SET_PDEATHSIG, SIGTERM) < 0 || getppid() == 1) return fail_as("LAUNCH", "the parent head is gone", "start the seeder from `p2prun serve`");
    }
    else if ((a[0] != '-' || strcmp(a, "-") == 0) && !desc_file) desc_file = a;
    else { snprintf(what, sizeof what, "unknown or incomplete option '%s'", a); return fail_as("USAGE", what, SEED_USAGE); }
  }
  if (!desc_file || !source_given()) return fail_as("USAGE", "seed needs a description and --source", SEED_USAGE);
  const char *secret = getenv("P2PRUN_SECRET");
  if (secret && *secret && job_secret_from_hex(secret) < 0) return fail_as("USAGE", "P2PRUN_SECRET is not a job secret: expected at least 16 bytes in hex", "make one with `openssl rand -hex 32`");
  char error[700] = "";
  if (description_read(desc_file, &job.desc, error, sizeof error) < 0) return fail_as("DESCRIPTION", error, "make one with `p2prun describe DIR -o FILE`");
  if (tree_table(&job.desc, getuid(), getgid(), &table, error, sizeof error) < 0) {
    snprintf(what, sizeof what, "description %s %s", desc_file, error);
    return fail_as("DESCRIPTION", what, "describe the directory again with `p2prun describe DIR -o FILE`");
  }
  for (int i = 0; i < job.desc.tracker_count; i++) free(job.desc.trackers[i]);
  for (int i = 0; i < tracker_count; i++) job.desc.trackers[i] = strdup(trackers[i]);
  job.desc.tracker_count = tracker_count;
  if (!new_peer_id(job.peer_id)) return fail_as("LAUNCH", "no random bytes for a peer id", "check /dev/urandom");
  uint32_t count = job.desc.piece_count ? job.desc.piece_count : 1;
  sent_to = calloc(count, sizeof *sent_to);
  checked = calloc(count, 1);
  differs = calloc(count, 1);
  piece = malloc(job.desc.piece_length ? job.desc.piece_length : 1);
  uint8_t *all = malloc((count + 7) / 8);
  if (!sent_to || !checked || !differs || !piece || !all) return fail_as("LAUNCH", "out of memory", "free some memory on the head");
  if (swarm_init_head(&table, error, sizeof error) < 0) {
    return fail_as("SOURCE", error, "pass the directory the description was made from (a set of many files: raise ulimit -n, or set agent to node)");
  }
  uint32_t bad = verify ? mismatches() : 0;
  if (bad > 0) {
    snprintf(what, sizeof what, "%s does not match the description: %u of %u pieces differ", sources, bad, job.desc.piece_count);
    return fail_as("SOURCE", what, "describe the directory again, or point --source at the directory it was described from");
  }
  memset(all, 0xff, (count + 7) / 8);
  swarm_adopt(all);
  free(all);
  struct watch *stop = loop_init() < 0 ? NULL : stop_signals_watch();
  if (!stop) return fail_as("LAUNCH", strerror(errno), "the seeder needs epoll and signalfd (Linux)");
  if (listen_on(host, (uint16_t)port) < 0) {
    snprintf(what, sizeof what, "cannot listen on %s:%ld: %s", host ? host : "*", port, strerror(errno));
    return fail_as("SWARM", what, "choose another port (seeder-port), or 0 for any");
  }
  struct watch control = { .ready = on_control, .fd = (int)control_fd };
  if (control_fd >= 0 && loop_add(&control, EPOLLIN) < 0) return fail_as("USAGE", "--control-fd is not a pipe it can read", "--control-fd 4");
  tracker_announce(EV_STARTED);
  char line[64];
  snprintf(line, sizeof line, "ok {\"port\":%u}\n", job.listen_port);
  notify(line);
  // Stopping: the trackers are told, and given STOP_WAIT_MS to hear it.
  uint64_t next_tick = now_ms() + TICK_MS, stop_by = 0;
  for (;;) {
    if (!stop_by && control_closed) stop_by = stop_telling_trackers();
    if (stop_by && (!tracker_busy() || now_ms() >= stop_by)) break;
    uint64_t now = now_ms();
    struct epoll_event events[64];
    int ready = loop_wait(events, 64, now >= next_tick ? 0 : (int)(next_tick - now));
    for (int i = 0; i < ready; i++) {
      struct watch *w = events[i].data.ptr;
      if (w != stop) { w->ready(w, events[i].events); continue; }
      struct signalfd_siginfo info;
      while (read(stop->fd, &info, sizeof info) > 0) {
        if (info.ssi_signo == SIGUSR1) print_counters(false, true);
        else if (!stop_by) stop_by = stop_telling_trackers();
      }
    }
    peers_flush();
    peers_bury();
    if (now_ms() >= next_tick) {
      peers_tick();
      tracker_tick();
      peers_bury();
      print_counters(false, false);
      next_tick = now_ms() + TICK_MS;
    }
  }
  print_counters(true, false);
  swarm_close();
  return 0;
}
