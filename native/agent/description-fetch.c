// The description a launch's job spec does not carry (`--description-route peers`, or a set whose
// description does not fit): from peers of the job's swarm, then from the head over HTTP, as
// lib/session/node.ts's descriptionFor does. It runs before the agent mounts, when nothing is
// served yet, so each step blocks within a deadline of its own. Peers hand the description on
// under BEP 9's messages named p2prun_desc (lib/swarm/description-exchange.ts; peer.c's take_desc
// serves it): the node asks the trackers for peers without registering (everyone registered has
// it), or takes a node list's peers for it, dials them one at a time with the job's proof, and
// checks what it gets against the infohash.
// The head's seeders come last: the head hands it to its first few askers only.
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include "agent.h"
#include "bencode.h"
#include "description-fetch.h"

#define PEER_TIMEOUT_MS 3000          // one peer, dial to last piece (description-exchange.ts)
#define PEER_DESCRIPTION_MS 10000     // all the peers tried, before the head (node.ts)
#define PEEK_PEERS 20
#define RETRY_MS 150                  // between rounds, doubling: the first holders join meanwhile
#define RETRY_MAX_MS 2000
#define MAX_DESC_SIZE (64u << 20)     // lib/swarm/extensions.ts
#define MAX_MESSAGE (1u << 20)        // anything a peer sends before the description's pieces is smaller
#define MAX_LISTED 64
#define TRACKER_REPLY_MAX (256u * 1024)

// ---- blocking I/O with a deadline (now_ms's clock)
static int wait_for (int fd, short events, uint64_t deadline) {
  uint64_t now = now_ms();
  if (now >= deadline) return -1;
  struct pollfd p = { .fd = fd, .events = events };
  int n = poll(&p, 1, (int)(deadline - now));
  return n == 1 && !(p.revents & POLLNVAL) ? 0 : -1;
}

// A TCP connection to `host` (a name or an address) at `port`; -1, or DIAL_UNRESOLVED.
static int dial (const char *host, const char *port, uint64_t deadline) {
  int fd = dial_tcp(host, port), error = 0;
  if (fd == DIAL_UNRESOLVED) return fd;
  socklen_t len = sizeof error;
  if (fd >= 0 && (errno != EINPROGRESS || (wait_for(fd, POLLOUT, deadline) == 0 &&
      getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) == 0 && error == 0))) return fd;
  if (fd >= 0) close(fd);
  if (error) errno = error; // the connection's own failure, for the message
  return -1;
}

static bool send_all (int fd, const void *bytes, size_t n, uint64_t deadline) {
  for (size_t sent = 0; sent < n;) {
    ssize_t k = send(fd, (const uint8_t *)bytes + sent, n - sent, MSG_NOSIGNAL);
    if (k > 0) sent += (size_t)k;
    else if (k < 0 && errno == EAGAIN && wait_for(fd, POLLOUT, deadline) == 0) continue;
    else return false;
  }
  return true;
}

static bool recv_all (int fd, void *bytes, size_t n, uint64_t deadline) {
  for (size_t got = 0; got < n;) {
    ssize_t k = recv(fd, (uint8_t *)bytes + got, n - got, 0);
    if (k > 0) got += (size_t)k;
    else if (k < 0 && errno == EAGAIN && wait_for(fd, POLLIN, deadline) == 0) continue;
    else return false;
  }
  return true;
}

// ---- HTTP (the trackers' peek, the head's description)
// The body of a 200 reply to GET `url` (http:// only), at most `max` bytes, malloc'd; NULL with
// the reason in `why`.
static uint8_t *http_get (const char *url, uint64_t deadline, size_t max, size_t *size, char *why, size_t why_size) {
  struct http_url u;
  if (!http_url_parse(url, &u)) { snprintf(why, why_size, "not an http:// URL"); return NULL; }
  int fd = dial(u.host, u.port, deadline);
  if (fd == DIAL_UNRESOLVED) { snprintf(why, why_size, "no address for the name %s", u.host); return NULL; }
  if (fd < 0) { snprintf(why, why_size, "cannot connect: %s", errno == 0 || errno == EINPROGRESS ? "no answer in time" : strerror(errno)); return NULL; }
  char *request = NULL;
  int n = asprintf(&request, "GET %s HTTP/1.0\r\nHost: %.*s\r\n\r\n", u.path, u.authority_length, u.authority);
  uint8_t *reply = n < 0 ? NULL : malloc(max + 16384 + 1);
  size_t len = 0;
  bool sent = reply && send_all(fd, request, (size_t)n, deadline);
  free(request);
  while (sent && len < max + 16384) {
    ssize_t k = recv(fd, reply + len, max + 16384 - len, 0);
    if (k > 0) len += (size_t)k;
    else if (k == 0) break;
    else if (errno != EAGAIN || wait_for(fd, POLLIN, deadline) < 0) { sent = false; snprintf(why, why_size, "no reply in time"); }
  }
  close(fd);
  if (!sent) { if (reply && !*why) snprintf(why, why_size, "the request could not be sent"); free(reply); return NULL; }
  int status = 0;
  reply[len] = 0;
  uint8_t *body = memmem(reply, len, "\r\n\r\n", 4);
  if (sscanf((const char *)reply, "HTTP/1.%*d %d", &status) != 1 || !body || len >= max + 16384) {
    snprintf(why, why_size, len >= max + 16384 ? "a reply larger than %zu bytes" : "not an HTTP reply", max);
    free(reply);
    return NULL;
  }
  if (status != 200) { snprintf(why, why_size, "HTTP %d", status); free(reply); return NULL; }
  body += 4;
  *size = len - (size_t)(body - reply);
  memmove(reply, body, *size);
  return reply;
}

// `url` with the job's proof for `purpose` over `a`, `b` (lib/swarm/job-auth.ts's withProof).
static char *with_proof (const char *url, const char *purpose, const uint8_t *a, size_t alen, const uint8_t *b, size_t blen) {
  char *out = NULL, hex[65] = "";
  if (job.secret_len) {
    uint8_t proof[32];
    job_proof(purpose, a, alen, b, blen, NULL, 0, proof);
    hex_of(proof, 32, hex);
  }
  if (asprintf(&out, "%s%s%s%s", url, !job.secret_len ? "" : strchr(url, '?') ? "&" : "?", job.secret_len ? "p2prun_auth=" : "", hex) < 0) return NULL;
  return out;
}

// Peers the trackers list for the set, asked without registering (announce.ts's peekPeers).
static int peek_peers (const struct description_source *src, const uint8_t *peer_id, char listed[][48], uint64_t deadline) {
  int count = 0;
  char info_hash[61], id[61];
  url_escape(src->info_hash, 20, info_hash);
  url_escape(peer_id, 20, id);
  for (int t = 0; t < src->tracker_count; t++) {
    char *query = NULL, *url;
    if (asprintf(&query, "%s%sinfo_hash=%s&peer_id=%s&port=1&uploaded=0&downloaded=0&left=1&compact=1&numwant=%d&p2prun_peek=1",
      src->trackers[t], strchr(src->trackers[t], '?') ? "&" : "?", info_hash, id, PEEK_PEERS) < 0) continue;
    url = with_proof(query, "announce", src->info_hash, 20, peer_id, 20);
    free(query);
    size_t size;
    char why[200] = "";
    uint64_t until = now_ms() + PEER_TIMEOUT_MS < deadline ? now_ms() + PEER_TIMEOUT_MS : deadline;
    uint8_t *reply = url ? http_get(url, until, TRACKER_REPLY_MAX, &size, why, sizeof why) : NULL;
    free(url);
    const uint8_t *at = reply;
    struct bval dict, peers;
    if (reply && bdecode(&at, reply + size, &dict) && bdict_get(&dict, "peers", &peers) && peers.kind == B_STR) {
      for (size_t i = 0; i + 6 <= peers.len && count < MAX_LISTED; i += 6) {
        const uint8_t *p = peers.str + i;
        snprintf(listed[count++], 48, "%u.%u.%u.%u:%u", p[0], p[1], p[2], p[3], (unsigned)(p[4] << 8 | p[5]));
      }
    }
    free(reply);
  }
  return count;
}

// ---- one peer
static bool send_message (int fd, uint8_t ext, const char *dict, size_t dict_len, uint64_t deadline) {
  uint8_t head[6];
  put32(head, (uint32_t)(dict_len + 2));
  head[4] = EXTENDED;
  head[5] = ext;
  return send_all(fd, head, 6, deadline) && send_all(fd, dict, dict_len, deadline);
}

// The description from the peer at `address`: the handshakes, each side's proof of the job's
// secret, then every piece asked at once; NULL if it does not hand it all over in time.
static uint8_t *from_peer (const char *address, const struct description_source *src, const uint8_t *peer_id, size_t *size) {
  uint64_t deadline = now_ms() + PEER_TIMEOUT_MS;
  char host[256];
  const char *port;
  int fd = split_host_port(address, host, sizeof host, &port) ? dial(host, port, deadline) : -1;
  if (fd < 0) return NULL;
  uint8_t ours[HANDSHAKE_LENGTH] = { 0 }, theirs[HANDSHAKE_LENGTH], auth[32], want[32];
  memcpy(ours, PROTOCOL, 20);
  ours[25] = EXTENSION_BIT; // the proof travels in the extension protocol's handshake
  memcpy(ours + 28, src->info_hash, 20);
  memcpy(ours + 48, peer_id, 20);
  uint8_t *bytes = NULL, *got = NULL, *msg = NULL;
  size_t total = 0, pieces = 0, missing = 0;
  if (!send_all(fd, ours, HANDSHAKE_LENGTH, deadline) || !recv_all(fd, theirs, HANDSHAKE_LENGTH, deadline) || memcmp(theirs, PROTOCOL, 20) != 0 ||
      memcmp(theirs + 28, src->info_hash, 20) != 0) goto done;
  job_proof("peer", src->info_hash, 20, peer_id, 20, theirs + 48, 20, auth);
  job_proof("peer", src->info_hash, 20, theirs + 48, 20, peer_id, 20, want);
  char proof[96];
  int n = snprintf(proof, sizeof proof, "d1:md11:p2prun_desci%dee11:p2prun_auth32:", DESC_ID);
  memcpy(proof + n, auth, 32);
  proof[n + 32] = 'e';
  if (!send_message(fd, 0, proof, (size_t)n + 33, deadline)) goto done;
  uint8_t their_desc = 0;
  for (;;) {
    uint8_t length[4];
    if (!recv_all(fd, length, 4, deadline)) goto done;
    uint32_t len = get32(length);
    if (len > MAX_MESSAGE) goto done;
    free(msg);
    msg = malloc(len ? len : 1);
    if (!msg || !recv_all(fd, msg, len, deadline)) goto done;
    if (len < 2 || msg[0] != EXTENDED) continue; // nothing else is this connection's
    const uint8_t *at = msg + 2;
    struct bval dict, v, m;
    if (!bdecode(&at, msg + len, &dict) || dict.kind != B_DICT) goto done;
    if (msg[1] == 0 && !bytes) {
      // Its handshake: its proof, then what it has. One that cannot prove the secret is not the job's.
      if (!bdict_get(&dict, "p2prun_auth", &v) || v.kind != B_STR || v.len != 32 || memcmp(v.str, want, 32) != 0) goto done;
      if (!bdict_get(&dict, "m", &m) || !bdict_get(&m, "p2prun_desc", &v) || v.kind != B_INT || v.i <= 0 || v.i >= 256) goto done;
      their_desc = (uint8_t)v.i;
      if (!bdict_get(&dict, "p2prun_desc_size", &v) || v.kind != B_INT || v.i <= 0 || v.i > MAX_DESC_SIZE) goto done;
      total = (size_t)v.i;
      pieces = missing = (total + DESC_PIECE - 1) / DESC_PIECE;
      bytes = malloc(total);
      got = calloc(pieces, 1);
      if (!bytes || !got) goto done;
      for (size_t i = 0; i < pieces; i++) {
        char request[64];
        int k = snprintf(request, sizeof request, "d8:msg_typei0e5:piecei%zuee", i);
        if (!send_message(fd, their_desc, request, (size_t)k, deadline)) goto done;
      }
    } else if (msg[1] == DESC_ID && bytes) {
      // A piece (msg_type 1, its bytes after the dictionary) or a refusal (2): another peer, then.
      struct bval type, piece, whole;
      if (!bdict_get(&dict, "msg_type", &type) || type.kind != B_INT || type.i != 1 || !bdict_get(&dict, "piece", &piece) ||
          piece.kind != B_INT || piece.i < 0 || (size_t)piece.i >= pieces || !bdict_get(&dict, "total_size", &whole) ||
          whole.kind != B_INT || (size_t)whole.i != total) goto done;
      size_t start = (size_t)piece.i * DESC_PIECE, expected = total - start < DESC_PIECE ? total - start : DESC_PIECE;
      if ((size_t)(msg + len - at) != expected) goto done;
      if (got[piece.i]) continue;
      memcpy(bytes + start, at, expected);
      got[piece.i] = 1;
      if (--missing == 0) break;
    }
  }
done:
  close(fd);
  free(msg);
  free(got);
  if (bytes && missing == 0) { *size = total; return bytes; }
  free(bytes);
  return NULL;
}

// ---- the description
// `bytes` as peers hand them to each other (lib/description.ts's peerShareable): without the
// launch's trackers, seeders and DHT nodes, which every node takes from its job spec. In place.
static size_t peer_shareable (uint8_t *bytes, size_t size) {
  const uint8_t *at = bytes;
  struct bval top, key, value, inner_key, inner_value;
  if (!bdecode(&at, bytes + size, &top) || top.kind != B_DICT) return size;
  const uint8_t *cuts[8][2];
  int count = 0;
  const uint8_t *it = NULL;
  while (count < 7 && bnext(&top, &it, &key, &value)) {
    if (bstr_is(&key, "announce") || bstr_is(&key, "announce-list") || bstr_is(&key, "nodes")) {
      cuts[count][0] = key.start;
      cuts[count++][1] = value.end;
    } else if (bstr_is(&key, "p2prun") && value.kind == B_DICT) {
      const uint8_t *inner = NULL;
      while (bnext(&value, &inner, &inner_key, &inner_value)) {
        if (bstr_is(&inner_key, "seeders")) { cuts[count][0] = inner_key.start; cuts[count++][1] = inner_value.end; break; }
      }
    }
  }
  size_t kept = 0;
  const uint8_t *from = bytes;
  for (int i = 0; i < count; i++) {
    memmove(bytes + kept, from, (size_t)(cuts[i][0] - from));
    kept += (size_t)(cuts[i][0] - from);
    from = cuts[i][1];
  }
  memmove(bytes + kept, from, (size_t)(bytes + size - from));
  return kept + (size_t)(bytes + size - from);
}

// Whether `bytes` (malloc'd: `d` owns them from here) are the job's description; `d` read if so.
static bool accept_bytes (uint8_t *bytes, size_t size, const struct description_source *src, const char *from, struct description *d,
  char *error, size_t error_size) {
  memset(d, 0, sizeof *d);
  d->bytes = bytes;
  d->size = peer_shareable(bytes, size);
  if (description_parse(d, from, error, error_size) < 0) { description_free(d); return false; }
  if (memcmp(d->info_hash, src->info_hash, 20) == 0) return true;
  snprintf(error, error_size, "%s is the description of another set (its infohash is not the job's)", from);
  description_free(d);
  return false;
}

static void shuffle (char listed[][48], int n) {
  for (int i = n - 1; i > 0; i--) {
    int j = (int)(random() % (i + 1));
    char t[48];
    memcpy(t, listed[i], 48);
    memcpy(listed[i], listed[j], 48);
    memcpy(listed[j], t, 48);
  }
}

static bool listed_already (char listed[][48], int n, const char *address) {
  for (int i = 0; i < n; i++) if (strcmp(listed[i], address) == 0) return true;
  return false;
}

static bool from_peers (const struct description_source *src, struct description *d) {
  uint8_t peer_id[20];
  // An id of its own: this connection is not the node that joins afterwards.
  if (!new_peer_id(peer_id)) return false;
  uint64_t deadline = now_ms() + PEER_DESCRIPTION_MS;
  for (int round = 0; now_ms() < deadline; round++) {
    char listed[MAX_LISTED + MAX_LIST_PEERS + MAX_ADDRESSES][48];
    int n = 0, peeked = peek_peers(src, peer_id, listed, deadline);
    for (int i = 0; i < src->peer_count; i++) snprintf(listed[peeked++], 48, "%s", src->peers[i]);
    for (int i = 0; i < peeked; i++) {
      bool seeder = false;
      for (int s = 0; s < src->seeder_count; s++) seeder |= strcmp(listed[i], src->seeders[s]) == 0;
      if (!seeder && !listed_already(listed, n, listed[i])) memmove(listed[n++], listed[i], 48);
    }
    shuffle(listed, n);
    for (int s = 0; s < src->seeder_count && n < MAX_LISTED + MAX_LIST_PEERS + MAX_ADDRESSES; s++) snprintf(listed[n++], 48, "%s", src->seeders[s]);
    for (int i = 0; i < n && now_ms() < deadline; i++) {
      size_t size;
      uint8_t *bytes = from_peer(listed[i], src, peer_id, &size);
      char error[600];
      if (bytes && accept_bytes(bytes, size, src, "a peer", d, error, sizeof error)) return true;
    }
    uint64_t wait = (uint64_t)RETRY_MS << (round < 4 ? round : 4);
    if (wait > RETRY_MAX_MS) wait = RETRY_MAX_MS;
    wait = wait / 2 + (uint64_t)random() % (wait + 1); // a random half to one and a half of it
    if (now_ms() + wait >= deadline) break;
    struct timespec pause = { .tv_sec = (time_t)(wait / 1000), .tv_nsec = (long)(wait % 1000) * 1000000 };
    nanosleep(&pause, NULL);
  }
  return false;
}

int description_fetch (const struct description_source *src, struct description *d, const char **route, char *error, size_t error_size) {
  if (job.secret_len && from_peers(src, d)) { *route = "a peer"; return 0; }
  if (job.secret_len) fprintf(stderr, "p2prun node-agent: no peer handed over the description in %d s: asking the head\n", PEER_DESCRIPTION_MS / 1000);
  char where[600];
  snprintf(where, sizeof where, "%.*s", (int)strcspn(src->url, "?"), src->url);
  char *url = with_proof(src->url, "description", src->info_hash, 20, NULL, 0);
  size_t size;
  char why[300] = "";
  uint8_t *bytes = url ? http_get(url, now_ms() + src->timeout_ms, MAX_DESC_SIZE, &size, why, sizeof why) : NULL;
  free(url);
  if (!bytes) {
    snprintf(error, error_size, "node %s cannot get the description from %s: %s", src->node, where, *why ? why : "out of memory");
    return -1;
  }
  if (!accept_bytes(bytes, size, src, where, d, error, error_size)) return -1;
  *route = "the head";
  return 0;
}
