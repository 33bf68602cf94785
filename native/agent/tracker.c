// Announces to the job's HTTP trackers (BEP 3, compact peers of BEP 23), as lib/swarm/announce.ts
// does: at start, when the set is complete, at the tracker's interval, and when leaving; each
// carries the job proof. Non-blocking on the agent's loop: a slow tracker delays no peer.
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>
#include "agent.h"
#include "bencode.h"

#define TIMEOUT_MS 5000
#define RETRY_MS 1000
#define REPLY_MAX (256 * 1024)

struct tracker {
  struct watch w;
  const char *url;
  bool busy;
  enum announce_event sending, pending;
  bool has_pending;
  bool stop_after;          // a stop came while a completion waited: both are told, in turn
  uint64_t started_at, next_at;
  uint32_t interval_ms;
  char *io;                 // the request, then the reply
  size_t io_len, io_sent;
  bool reading;
};

static struct tracker trackers[MAX_ADDRESSES];
static int tracker_count;

static const char *const EVENTS[] = { "", "&event=started", "&event=completed", "&event=stopped" };

static void finish (struct tracker *t, bool ok) {
  debug("tracker %s: %s", t->url, ok ? "announced" : "failed");
  if (t->w.fd >= 0) { loop_del(&t->w); close(t->w.fd); t->w.fd = -1; }
  free(t->io);
  t->io = NULL;
  t->busy = false;
  uint64_t now = now_ms();
  if (!ok && (t->sending == EV_STARTED || t->sending == EV_COMPLETED) && !t->has_pending) {
    // What the tracker has not heard yet is told again.
    t->pending = t->sending;
    t->has_pending = true;
    t->next_at = now + RETRY_MS;
    return;
  }
  if (ok && t->sending == EV_COMPLETED && t->stop_after) {
    t->stop_after = false;
    t->pending = EV_STOPPED;
    t->has_pending = true;
  }
  // An event that came while this one was under way goes at the next tick, not an interval later:
  // a set complete before the started announce returned was told to the tracker 30 s on, or never.
  t->next_at = t->has_pending ? now : now + t->interval_ms;
}

static void take_reply (struct tracker *t) {
  char *body = t->io ? memmem(t->io, t->io_len, "\r\n\r\n", 4) : NULL;
  if (!body) { debug("tracker %s: no HTTP reply", t->url); finish(t, false); return; }
  body += 4;
  const uint8_t *at = (const uint8_t *)body;
  struct bval reply, peers, interval;
  if (!bdecode(&at, (const uint8_t *)t->io + t->io_len, &reply) || reply.kind != B_DICT || bdict_get(&reply, "failure reason", &peers)) {
    debug("tracker %s: %.*s", t->url, (int)(t->io + t->io_len - body), body);
    finish(t, false);
    return;
  }
  if (bdict_get(&reply, "interval", &interval) && interval.kind == B_INT && interval.i >= 5 && interval.i <= 3600) {
    t->interval_ms = (uint32_t)interval.i * 1000;
  }
  if (bdict_get(&reply, "peers", &peers) && peers.kind == B_STR) dial_compact(peers.str, peers.len, false);
  finish(t, true);
}

static void on_ready (struct watch *w, uint32_t events) {
  struct tracker *t = (struct tracker *)w;
  if (!t->reading) {
    if (events & (EPOLLERR | EPOLLHUP)) { finish(t, false); return; }
    ssize_t n = send(w->fd, t->io + t->io_sent, t->io_len - t->io_sent, MSG_NOSIGNAL);
    if (n < 0) { if (errno != EAGAIN) finish(t, false); return; }
    t->io_sent += (size_t)n;
    if (t->io_sent == t->io_len) { t->io_len = 0; t->reading = true; loop_mod(w, EPOLLIN); }
    return;
  }
  for (;;) {
    char *grown = realloc(t->io, t->io_len + 16384 + 1);
    if (!grown) { finish(t, false); return; }
    t->io = grown;
    ssize_t n = read(w->fd, t->io + t->io_len, 16384);
    if (n < 0 && errno == EAGAIN) return;
    if (n <= 0) { take_reply(t); return; }
    t->io_len += (size_t)n;
    if (t->io_len > REPLY_MAX) { finish(t, false); return; }
  }
}

static void start (struct tracker *t, enum announce_event event) {
  struct http_url u;
  if (!http_url_parse(t->url, &u)) { t->next_at = UINT64_MAX; return; } // not an HTTP tracker: not this agent's to ask

  char info_hash[61], peer_id[61], auth[80] = "";
  url_escape(job.desc.info_hash, 20, info_hash);
  url_escape(job.peer_id, 20, peer_id);
  if (job.secret_len) {
    uint8_t proof[32];
    job_proof("announce", job.desc.info_hash, 20, job.peer_id, 20, NULL, 0, proof);
    strcpy(auth, "&p2prun_auth=");
    hex_of(proof, 32, auth + 13);
  }
  uint64_t left = swarm_left();
  t->io = malloc(strlen(u.path) + (size_t)u.authority_length + 512);
  if (!t->io) return;
  sprintf(t->io, "GET %s%sinfo_hash=%s&peer_id=%s&port=%u&uploaded=%llu&downloaded=%llu&left=%llu&compact=1&numwant=%d%s%s HTTP/1.0\r\nHost: %.*s\r\n\r\n",
    u.path, strchr(u.path, '?') ? "&" : "?", info_hash, peer_id, job.listen_port, (unsigned long long)stats.uploaded,
    (unsigned long long)(stats.from_head + stats.from_peers), (unsigned long long)left, event == EV_STOPPED ? 0 : job.numwant,
    EVENTS[event], auth, u.authority_length, u.authority);
  t->io_len = strlen(t->io);
  t->io_sent = 0;
  t->reading = false;
  // A name, not an address, is resolved here once per announce: trackers are few, and announces rare.
  t->w.fd = dial_tcp(u.host, u.port);
  t->busy = true;
  t->sending = event;
  t->started_at = now_ms();
  if (t->w.fd < 0 || loop_add(&t->w, EPOLLOUT) < 0) finish(t, false);
}

void tracker_announce (enum announce_event event) {
  if (tracker_count == 0) {
    for (int i = 0; i < job.desc.tracker_count; i++) {
      trackers[i] = (struct tracker){ .w = { .ready = on_ready, .fd = -1 }, .url = job.desc.trackers[i], .interval_ms = 30000 };
    }
    tracker_count = job.desc.tracker_count;
  }
  for (int i = 0; i < tracker_count; i++) {
    struct tracker *t = &trackers[i];
    // A stop must not replace a completion the tracker has not heard: it counts the nodes that had
    // the whole set (a small set is complete before the started announce returns, and its rank may
    // end at once).
    if (t->has_pending && t->pending == EV_COMPLETED && event == EV_STOPPED) {
      t->stop_after = true;
      if (!t->busy) { t->has_pending = false; start(t, EV_COMPLETED); }
      continue;
    }
    if (t->busy) { t->pending = event; t->has_pending = true; continue; }
    t->has_pending = false;
    start(t, event);
  }
}

// Every 100 ms: timeouts, events still to tell, and the regular announce that finds new peers.
void tracker_tick (void) {
  uint64_t now = now_ms();
  for (int i = 0; i < tracker_count; i++) {
    struct tracker *t = &trackers[i];
    if (t->busy && now - t->started_at > TIMEOUT_MS) finish(t, false);
    if (t->busy || now < t->next_at) continue;
    enum announce_event event = t->has_pending ? t->pending : EV_NONE;
    t->has_pending = false;
    start(t, event);
  }
}

bool tracker_busy (void) {
  for (int i = 0; i < tracker_count; i++) if (trackers[i].busy || trackers[i].has_pending || trackers[i].stop_after) return true;
  return false;
}
