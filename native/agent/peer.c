// One peer connection: the BitTorrent handshake (BEP 3, the Fast Extension's bit of BEP 6), the
// job proof in the BEP 10 handshake that follows it (lib/swarm/wire.ts speaks the same), then
// messages, framed where they lie in the read buffer and checked against their type before the
// swarm sees them. Anything a peer sends that does not fit ends its connection, never the agent.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <openssl/crypto.h>
#include "agent.h"
#include "bencode.h"

#define FAST_BIT 0x04        // reserved byte 7
#define UT_PEX_ID 1          // the id our peers send ut_pex under (lib/swarm/extensions.ts)
#define PEX_PEERS 50         // peers told of to a new connection (lib/swarm/connections.ts)
#define NODE_DESC_PEERS 16   // distinct peers a node hands it to (lib/swarm/description-exchange.ts)
#define HEAD_DESC_PEERS 4    // and the head: after them, peers have it
#define READ_BUFFER (MAX_REQUEST + 64 * 1024)

static struct peer *graveyard[MAX_PEERS];
static int graveyard_count;
static uint32_t next_serial;
static struct { uint8_t id[20]; uint64_t until; } bans[64];
static int ban_count;

struct peer *peers[MAX_PEERS];
int peer_count;

static void on_ready (struct watch *w, uint32_t events);

static struct peer *new_peer (int fd, bool outgoing, const char *address) {
  if (peer_count == MAX_PEERS) { close(fd); return NULL; }
  struct peer *p = calloc(1, sizeof *p);
  uint32_t bitfield_bytes = (job.desc.piece_count + 7) / 8;
  if (p) p->rbuf = malloc(READ_BUFFER + bitfield_bytes);
  if (p) p->has = calloc(job.desc.piece_count ? job.desc.piece_count : 1, 1);
  if (!p || !p->rbuf || !p->has) {
    if (p) { free(p->rbuf); free(p->has); free(p); }
    close(fd);
    return NULL;
  }
  p->w.fd = fd;
  p->w.ready = on_ready;
  p->serial = ++next_serial;
  p->since = now_ms();
  p->outgoing = outgoing;
  p->chokes_us = true;
  snprintf(p->address, sizeof p->address, "%s", address);
  peers[peer_count++] = p;
  return p;
}

static void send_raw (struct peer *p, const void *bytes, size_t length) {
  struct out_seg *s = malloc(sizeof *s + length);
  if (!s) { peer_close(p, "out of memory"); return; }
  s->next = NULL;
  s->from_store = false;
  s->length = length;
  s->sent = 0;
  memcpy(s->data, bytes, length);
  if (p->out_tail) p->out_tail->next = s; else p->out = s;
  p->out_tail = s;
  p->out_bytes += length;
}

void peer_send (struct peer *p, uint8_t id, const void *payload, size_t length) {
  p->out_urgent = true;
  peer_send_later(p, id, payload, length);
}

void peer_send_later (struct peer *p, uint8_t id, const void *payload, size_t length) {
  if (p->phase == P_CLOSED) return;
  uint8_t head[5];
  put32(head, (uint32_t)length + 1);
  head[4] = id;
  if (length <= 256) {
    uint8_t whole[5 + 256];
    memcpy(whole, head, 5);
    memcpy(whole + 5, payload, length);
    send_raw(p, whole, 5 + length);
  } else {
    send_raw(p, head, 5);
    send_raw(p, payload, length);
  }
}

void peer_send_request (struct peer *p, uint8_t id, uint32_t index, uint32_t begin, uint32_t length) {
  uint8_t body[12];
  put32(body, index); put32(body + 4, begin); put32(body + 8, length);
  peer_send(p, id, body, 12);
}

// A served block goes out from the store itself (sendfile), after its 13-byte header.
void peer_send_block (struct peer *p, uint32_t index, uint32_t begin, uint32_t length, uint64_t store_offset) {
  uint8_t head[13];
  put32(head, length + 9);
  head[4] = 7;
  put32(head + 5, index);
  put32(head + 9, begin);
  p->out_urgent = true;
  send_raw(p, head, 13);
  if (p->phase == P_CLOSED) return;
  struct out_seg *s = malloc(sizeof *s);
  if (!s) { peer_close(p, "out of memory"); return; }
  *s = (struct out_seg){ .file_offset = store_offset, .length = length, .from_store = true };
  p->out_tail->next = s;
  p->out_tail = s;
  p->out_bytes += length;
  p->uploaded += length;
}

static void watch_for (struct peer *p) {
  if (p->phase == P_CLOSED) return;
  uint32_t events = EPOLLIN | (p->out_bytes > 0 || p->phase == P_CONNECTING ? EPOLLOUT : 0);
  if (events != p->watching) loop_mod(&p->w, events);
  p->watching = events;
}

// Writes what is queued until the socket would block: memory segments gathered into one writev.
void peer_flush (struct peer *p) {
  while (p->out && p->phase != P_CLOSED) {
    ssize_t n;
    if (p->out->from_store) {
      n = store_send(p->w.fd, p->out->file_offset + p->out->sent, p->out->length - p->out->sent);
    } else {
      struct iovec iov[32];
      int count = 0;
      struct out_seg *s = p->out;
      for (; s && !s->from_store && count < 32; s = s->next) {
        iov[count++] = (struct iovec){ s->data + s->sent, s->length - s->sent };
      }
      // A block's header waits for the block's bytes (sendfile, next), so both leave in one segment:
      // alone, each header was a 13-byte segment of its own.
      struct msghdr m = { .msg_iov = iov, .msg_iovlen = (size_t)count };
      n = sendmsg(p->w.fd, &m, s && s->from_store ? MSG_MORE : 0);
    }
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) break;
      peer_close(p, strerror(errno));
      return;
    }
    p->out_bytes -= (size_t)n;
    while (n > 0 && p->out) {
      struct out_seg *s = p->out;
      size_t take = s->length - s->sent < (size_t)n ? s->length - s->sent : (size_t)n;
      s->sent += take;
      n -= (ssize_t)take;
      if (s->sent < s->length) break;
      p->out = s->next;
      if (!p->out) p->out_tail = NULL;
      free(s);
    }
    if (p->out && p->out->sent > 0) break; // the socket took less than offered: it is full
  }
  if (!p->out) p->out_urgent = false;
  // What a read of requests queued and the socket could not take: more than MAX_QUEUED_BYTES and
  // the peer asks for more than it reads (p2prun's peers keep at most 224 KiB in flight, stock
  // clients a few MiB). Dropped, so its queue cannot grow without end.
  if (p->out_bytes > MAX_QUEUED_BYTES) { peer_close(p, "it does not read what it asks for"); return; }
  watch_for(p);
}

static void send_handshake (struct peer *p) {
  uint8_t h[HANDSHAKE_LENGTH] = { 0 };
  memcpy(h, PROTOCOL, 20);
  h[25] = job.secret_len ? EXTENSION_BIT : 0;
  h[27] = FAST_BIT;
  memcpy(h + 28, job.desc.info_hash, 20);
  memcpy(h + 48, job.peer_id, 20);
  p->out_urgent = true;
  send_raw(p, h, sizeof h);
}

// Our BEP 10 handshake: the job proof for this pair of peers, our port, ut_pex, and the
// description for nodes that have not got it (bencode keys sorted).
static void send_proof (struct peer *p) {
  uint8_t auth[32];
  job_proof("peer", job.desc.info_hash, 20, job.peer_id, 20, p->id, 20, auth);
  uint8_t msg[192];
  int n = snprintf((char *)msg, sizeof msg, "%cd1:md11:p2prun_desci%de6:ut_pexi%dee1:pi%ue11:p2prun_auth32:", 0, DESC_ID, UT_PEX_ID, job.listen_port);
  memcpy(msg + n, auth, 32);
  n += 32;
  n += snprintf((char *)msg + n, sizeof msg - (size_t)n, "16:p2prun_desc_sizei%zuee", job.desc.size);
  peer_send(p, EXTENDED, msg, (size_t)n);
}

// The description a peer asks for (lib/swarm/description-exchange.ts's DescriptionServer): a
// piece of it, to NODE_DESC_PEERS distinct peers (the head: HEAD_DESC_PEERS, and anyone once no
// node that has it is left); the rest are refused and ask others, so the copies spread as a tree.
// The bytes are what the launch handed this agent: the peer-shareable description
// (lib/description.ts's peerShareable).
static void take_desc (struct peer *p, const uint8_t *payload, size_t length) {
  static uint8_t served[NODE_DESC_PEERS][20];
  static int served_count;
  // The dictionary holds integers only: it ends at the first "ee" (lib/swarm/extensions.ts).
  struct bval dict, type, piece;
  const uint8_t *at = payload;
  if (!bdecode(&at, payload + length, &dict) || dict.kind != B_DICT || !bdict_get(&dict, "msg_type", &type) || type.kind != B_INT ||
      !bdict_get(&dict, "piece", &piece) || piece.kind != B_INT || piece.i < 0 || type.i != 0 || p->desc_id == 0) return;
  bool known = false;
  for (int i = 0; i < served_count && !known; i++) known = memcmp(served[i], p->id, 20) == 0;
  uint64_t start = (uint64_t)piece.i * DESC_PIECE;
  uint8_t head[96];
  head[0] = p->desc_id;
  int limit = job.head ? HEAD_DESC_PEERS : NODE_DESC_PEERS;
  if (start >= job.desc.size || (!known && served_count >= limit && !job.desc_to_anyone)) {
    int n = snprintf((char *)head + 1, sizeof head - 1, "d8:msg_typei2e5:piecei%lldee", (long long)piece.i);
    peer_send(p, EXTENDED, head, (size_t)n + 1);
    return;
  }
  if (!known && served_count < NODE_DESC_PEERS) memcpy(served[served_count++], p->id, 20);
  size_t size = job.desc.size - start < DESC_PIECE ? job.desc.size - start : DESC_PIECE;
  int n = snprintf((char *)head + 1, sizeof head - 1, "d8:msg_typei1e5:piecei%llde10:total_sizei%zuee", (long long)piece.i, job.desc.size);
  uint8_t *msg = malloc((size_t)n + 1 + size);
  if (!msg) return;
  memcpy(msg, head, (size_t)n + 1);
  memcpy(msg + n + 1, job.desc.bytes + start, size);
  peer_send(p, EXTENDED, msg, (size_t)n + 1 + size);
  stats.description_sent += size;
  free(msg);
}

static bool duplicate (struct peer *p) {
  for (int i = 0; i < peer_count; i++) {
    struct peer *o = peers[i];
    if (o == p || o->phase < P_PROOF || o->phase == P_CLOSED || memcmp(o->id, p->id, 20) != 0) continue;
    // Both ends keep the connection the lower peer id dialed (lib/swarm/connections.ts).
    if (o->outgoing == p->outgoing) return true;
    bool own_lower = memcmp(job.peer_id, p->id, 20) < 0;
    if (p->outgoing != own_lower) return true;
    peer_close(o, "replaced by a connection the other way");
    return false;
  }
  return false;
}

// Where peer `o` listens, as BEP 23 has it (6 bytes: its IPv4 address, the port its handshake
// gave); false if it gave none or is not on IPv4.
static bool compact_of (const struct peer *o, uint8_t out[6]) {
  char host[48];
  const char *port;
  if (!o->listen_port || !split_host_port(o->address, host, sizeof host, &port) || inet_pton(AF_INET, host, out) != 1) return false;
  out[4] = (uint8_t)(o->listen_port >> 8);
  out[5] = (uint8_t)o->listen_port;
  return true;
}

// Where up to PEX_PEERS other open peers listen (their IPv4 address, the port their handshake gave),
// told to a new peer that takes ut_pex (BEP 11): with them it reaches the swarm without the
// tracker, as lib/swarm/connections.ts tells its new connections.
static void send_pex (struct peer *p) {
  if (!p->pex_id) return;
  uint8_t body[32 + 6 * PEX_PEERS];
  int count = 0, head = snprintf((char *)body, sizeof body, "%cd5:added", p->pex_id);
  uint8_t compact[6 * PEX_PEERS];
  for (int i = 0; i < peer_count && count < PEX_PEERS; i++) {
    const struct peer *o = peers[i];
    if (o != p && o->phase == P_OPEN && compact_of(o, compact + 6 * count)) count++;
  }
  if (count == 0) return;
  head += snprintf((char *)body + head, sizeof body - (size_t)head, "%d:", 6 * count);
  memcpy(body + head, compact, (size_t)(6 * count));
  body[head + 6 * count] = 'e';
  peer_send(p, EXTENDED, body, (size_t)head + 6 * (size_t)count + 1);
}

void peer_send_referral (struct peer *p, const struct peer *to) {
  uint8_t compact[6];
  if (!p->pex_id || !compact_of(to, compact)) return;
  uint8_t body[64];
  int head = snprintf((char *)body, sizeof body, "%cd5:added6:", p->pex_id);
  memcpy(body + head, compact, 6);
  int tail = snprintf((char *)body + head + 6, sizeof body - (size_t)head - 6, "15:p2prun_referrali1ee");
  peer_send(p, EXTENDED, body, (size_t)head + 6 + (size_t)tail);
}

static void open_peer (struct peer *p) {
  debug("%s: open (%s, %.8s)", p->address, p->outgoing ? "dialed" : "accepted", (const char *)p->id);
  p->phase = P_OPEN;
  swarm_opened(p);
  send_pex(p);
}

static bool take_handshake (struct peer *p, const uint8_t *h) {
  if (memcmp(h, PROTOCOL, 20) != 0) { peer_close(p, "not a BitTorrent peer"); return false; }
  if (memcmp(h + 28, job.desc.info_hash, 20) != 0) { peer_close(p, "the peer has another torrent"); return false; }
  memcpy(p->id, h + 48, 20);
  if (memcmp(p->id, job.peer_id, 20) == 0) { peer_close(p, "ourselves"); return false; }
  uint64_t now = now_ms();
  for (int i = 0; i < ban_count; i++) {
    if (bans[i].until > now && memcmp(bans[i].id, p->id, 20) == 0) { peer_close(p, "banned: it sent bad bytes"); return false; }
  }
  if (!p->outgoing) send_handshake(p);
  p->fast = (h[27] & FAST_BIT) != 0;
  p->head = memcmp(p->id, "-P2H", 4) == 0;
  p->p2prun = p->head || memcmp(p->id, "-P2N", 4) == 0;
  p->phase = P_PROOF;
  if (duplicate(p)) { peer_close(p, "a duplicate connection"); return false; }
  if (!job.secret_len) { open_peer(p); return true; }
  if (!(h[25] & EXTENSION_BIT)) {
    peer_flush(p); // our handshake, as lib/swarm/wire.ts answers before it closes: a client sees why
    peer_close(p, "it cannot prove the job's secret");
    return false;
  }
  send_proof(p);
  return true;
}

static bool take_proof (struct peer *p, const uint8_t *msg, size_t length) {
  struct bval dict, auth, port;
  const uint8_t *at = msg + 2;
  uint8_t want[32];
  job_proof("peer", job.desc.info_hash, 20, p->id, 20, job.peer_id, 20, want);
  if (length < 2 || msg[0] != EXTENDED || msg[1] != 0 || !bdecode(&at, msg + length, &dict) ||
      !bdict_get(&dict, "p2prun_auth", &auth) || auth.kind != B_STR || auth.len != 32 || CRYPTO_memcmp(auth.str, want, 32) != 0) {
    peer_close(p, "its proof of the job's secret is missing or wrong");
    return false;
  }
  if (bdict_get(&dict, "p", &port) && port.kind == B_INT && port.i > 0 && port.i < 65536) p->listen_port = (uint16_t)port.i;
  struct bval m, id;
  if (bdict_get(&dict, "m", &m) && m.kind == B_DICT && bdict_get(&m, "p2prun_desc", &id) && id.kind == B_INT && id.i > 0 && id.i < 256) p->desc_id = (uint8_t)id.i;
  if (bdict_get(&dict, "m", &m) && m.kind == B_DICT && bdict_get(&m, "ut_pex", &id) && id.kind == B_INT && id.i > 0 && id.i < 256) p->pex_id = (uint8_t)id.i;
  open_peer(p);
  return true;
}

// A ut_pex message: peers to dial (compact IPv4 in "added"). A referral (p2prun_referral) from the
// head names the nodes a piece it turned down went to instead: each dialed, whatever numwant says
// (lib/swarm/extensions.ts, seeder.ts refer), but in eager mode. From any other peer it is plain
// peer exchange: a node cannot make the others dial every address it names.
// Eager mode: every node asks the head for the pieces no peer has yet, all the time, and dialing
// each referral grew every node's connections toward a full mesh: 32 nodes took 10.6 s (median of
// 8 runs) against 10.2 with referrals as plain peer exchange, 0.39 CPU-s per agent against 0.34
// (bench/README.md, 2026-12-05 00:21). lib/swarm/node.ts keeps the same rule.
static void take_pex (const struct peer *p, const uint8_t *payload, size_t length) {
  struct bval dict, added, referral;
  const uint8_t *at = payload;
  if (!bdecode(&at, payload + length, &dict) || !bdict_get(&dict, "added", &added) || added.kind != B_STR) return;
  dial_compact(added.str, added.len, job.mode != MODE_EAGER && p->head &&
    bdict_get(&dict, "p2prun_referral", &referral) && referral.kind == B_INT && referral.i == 1);
}

// While a message's body is on its way, the kernel may hold its bytes (up to 64 KiB) until they
// are all there: one wake-up and one read instead of one per ~1.5 KB segment on a shaped link
// (lib/swarm/wire.ts does the same). Below 4 KiB the system call costs more than it saves.
static void set_low_water (struct peer *p) {
  int want = 1;
  if (p->phase == P_OPEN && p->rlen >= 4) {
    size_t need = 4 + (size_t)get32(p->rbuf) - p->rlen;
    if (need >= 4096) want = need < 65536 ? (int)need : 65536;
  }
  if (want == p->low_water || (want == 1 && p->low_water == 0)) return;
  setsockopt(p->w.fd, SOL_SOCKET, SO_RCVLOWAT, &want, sizeof want);
  p->low_water = want;
}

// Whole messages in the buffer, in turn; what is left of a partial one moves to the front.
static void parse (struct peer *p) {
  size_t at = 0;
  if (p->phase == P_HANDSHAKE) {
    if (p->rlen < HANDSHAKE_LENGTH) return;
    if (!take_handshake(p, p->rbuf)) return;
    at = HANDSHAKE_LENGTH;
  }
  size_t max_message = READ_BUFFER + (job.desc.piece_count + 7) / 8 - 4;
  while (p->phase >= P_PROOF && p->phase != P_CLOSED && p->rlen - at >= 4) {
    uint32_t length = get32(p->rbuf + at);
    if (length > max_message) { peer_close(p, "a message longer than any it may send"); return; }
    if (p->rlen - at - 4 < length) break;
    const uint8_t *msg = p->rbuf + at + 4;
    at += 4 + length;
    if (length == 0) continue; // keep-alive
    if (p->phase == P_PROOF) {
      if (!take_proof(p, msg, length)) return;
      continue;
    }
    if (msg[0] == EXTENDED) {
      if (length >= 2 && msg[1] == UT_PEX_ID) take_pex(p, msg + 2, length - 2);
      else if (length >= 2 && msg[1] == DESC_ID) take_desc(p, msg + 2, length - 2);
      continue;
    }
    swarm_message(p, msg[0], msg + 1, length - 1);
  }
  if (p->phase == P_CLOSED) return;
  memmove(p->rbuf, p->rbuf + at, p->rlen - at);
  p->rlen -= at;
  set_low_water(p);
}

static void on_ready (struct watch *w, uint32_t events) {
  struct peer *p = (struct peer *)w;
  if (p->phase == P_CLOSED) return;
  if (p->phase == P_CONNECTING) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(w->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err || (events & (EPOLLERR | EPOLLHUP))) { peer_close(p, err ? strerror(err) : "refused"); return; }
    p->phase = P_HANDSHAKE;
    send_handshake(p);
  }
  if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
    size_t cap = READ_BUFFER + (job.desc.piece_count + 7) / 8;
    for (;;) {
      size_t room = cap - p->rlen;
      ssize_t n = read(w->fd, p->rbuf + p->rlen, room);
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) break;
      if (n <= 0) { peer_close(p, n == 0 ? "closed by the peer" : strerror(errno)); return; }
      p->rlen += (size_t)n;
      parse(p);
      if (p->phase == P_CLOSED) return;
      if ((size_t)n < room) break; // the socket had less than there was room for: drained
    }
  }
  // Haves alone wait for the tick (or for something urgent to this peer): flushed on every read,
  // they went out one or two at a time, ~7,300 writes of 8-64 bytes per node at 32 nodes, each a
  // segment through both TCP stacks.
  if ((events & EPOLLOUT) || p->out_urgent) peer_flush(p);
}

struct peer *peer_dial (const char *host_port) {
  char host[64];
  const char *port;
  int fd = split_host_port(host_port, host, sizeof host, &port) ? dial_tcp(host, port) : -1;
  debug("%s: dialing%s", host_port, fd < 0 ? ", failed" : "");
  if (fd < 0) return NULL;
  struct peer *p = new_peer(fd, true, host_port);
  if (!p) return NULL;
  p->phase = P_CONNECTING;
  p->watching = EPOLLIN | EPOLLOUT;
  if (loop_add(&p->w, p->watching) < 0) { peer_close(p, "cannot watch it"); return NULL; }
  return p;
}

struct peer *peer_accept (int fd, const char *address) {
  struct peer *p = new_peer(fd, false, address);
  if (!p) return NULL;
  p->phase = P_HANDSHAKE;
  p->watching = EPOLLIN;
  if (loop_add(&p->w, p->watching) < 0) { peer_close(p, "cannot watch it"); return NULL; }
  return p;
}

void peer_ban (struct peer *p) {
  uint64_t now = now_ms();
  int slot = 0;
  for (int i = 0; i < ban_count; i++) if (bans[i].until < bans[slot].until) slot = i;
  if (ban_count < 64) slot = ban_count++;
  memcpy(bans[slot].id, p->id, 20);
  bans[slot].until = now + BAN_MS;
  peer_close(p, "its blocks failed a piece's check");
}

void peer_close (struct peer *p, const char *why) {
  if (p->phase == P_CLOSED) return;
  bool was_open = p->phase == P_OPEN;
  p->phase = P_CLOSED;
  debug("%s (%s): closed: %s", p->address, was_open ? "open" : "setting up", why);
  loop_del(&p->w);
  close(p->w.fd);
  if (was_open) swarm_closed(p);
  graveyard[graveyard_count++] = p;
}

// Sends what this loop turn queued (requests, haves, blocks) now, not at the socket's next event.
void peers_flush (void) {
  for (int i = 0; i < peer_count; i++) {
    struct peer *p = peers[i];
    // A socket known to be full is left to its EPOLLOUT.
    if (p->out_urgent && !(p->watching & EPOLLOUT) && p->phase != P_CLOSED) peer_flush(p);
  }
}

void peers_tick (void) {
  uint64_t now = now_ms();
  for (int i = 0; i < peer_count; i++) {
    if (peers[i]->phase < P_OPEN && now - peers[i]->since > HANDSHAKE_TIMEOUT_MS) peer_close(peers[i], "no handshake in time");
  }
}

// Frees the connections closed during this loop turn: nothing refers to them past it.
void peers_bury (void) {
  for (int g = 0; g < graveyard_count; g++) {
    struct peer *p = graveyard[g];
    for (int i = 0; i < peer_count; i++) if (peers[i] == p) { peers[i] = peers[--peer_count]; break; }
    while (p->out) { struct out_seg *s = p->out; p->out = s->next; free(s); }
    free(p->rbuf);
    free(p->has);
    free(p);
  }
  graveyard_count = 0;
}
