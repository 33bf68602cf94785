// The set as this node fetches and serves it: the store (one file, the set's bytes in torrent
// order), which 16 KiB blocks of which pieces are free, asked for or in, the SHA-1 check of a
// whole piece, what to ask each peer for, and what to serve. First what a read or an open waits
// for, of the least advanced peer that holds it (ask_urgent), then, with lib/swarm/picker.ts's
// rules (see pick), started pieces and in eager mode the rarest piece a peer has, so the nodes
// fetch different pieces and serve each other; the head only for pieces no other peer holds, and
// it turns down a piece another node is fetching from it (a BEP 6 reject): asked again after
// HEAD_BACKOFF_MS. A block a read waits for that one peer has held for ENDGAME_AFTER_MS is asked
// of a second (the endgame).
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include "agent.h"
#include "mount.h"

#define FREE 0
#define ASKED 1
#define IN 2
#define HEAD_BACKOFF_MS 250
#define PEER_BACKOFF_MS 250       // a peer's reject: asked of others meanwhile (lib/swarm/picker.ts BACKOFF_MS)
// A piece goes to at most this many peers within FAN_OUT_WINDOW_MS; the others are turned down and
// get it from those (lib/swarm/fan-out.ts, lib/swarm/node.ts): one while the nodes read the same
// pages at once (block, file), three while they fetch everything (eager). Without it, block mode
// at 8 nodes was a star: one node uploaded 209 MB, the others almost nothing (2026-12-04 07:33).
#define READ_FAN_OUT 1
#define FETCH_ALL_FAN_OUT 3
#define FAN_OUT_WINDOW_MS 500
#define ENDGAME_AFTER_MS 1000
#define PIPELINE_BYTES (96 * 1024)     // in flight per peer: enough on a LAN (lib/swarm/picker.ts)
#define READ_EXTRA_BYTES (128 * 1024)  // more while a read waits
#define REQUEST_TIMEOUT_MS 10000

enum { CHOKE, UNCHOKE, INTERESTED, NOT_INTERESTED, HAVE, BITFIELD, REQUEST, PIECE, CANCEL,
  HAVE_ALL = 0x0e, HAVE_NONE = 0x0f, REJECT = 0x10 };

#define MAX_SENDERS 8

struct partial {
  uint8_t *blocks;   // FREE, ASKED or IN, per block; NULL: the piece is not started
  uint8_t *again;    // per block: asked of a second peer too
  uint64_t *asked_at; // per block: when it was first asked for
  uint16_t count, missing;
  uint32_t senders[MAX_SENDERS]; // serials of the peers its blocks came from (the first ones)
  uint8_t sender_count;
  // The piece's SHA-1 over its first `hashed` bytes, taken from the blocks as they came in order
  // (from one peer they mostly do): check() reads back from the store only what came after a gap.
  EVP_MD_CTX *hash;
  uint32_t hashed;
};

static const struct description *d;
static void fill (struct peer *p);
static void ask_urgent (void);
static uint8_t *have;
static uint32_t have_count;
static uint16_t *avail;            // open peers other than the head that have each piece
static uint32_t orphans;           // pieces neither held nor started that no open peer but the head has
static struct partial *parts;
static uint32_t *active;           // the started pieces, in the order they were started
static uint32_t active_count;
static uint64_t *head_wait;        // per piece: when the head may be asked for it again
static struct sent { uint32_t serial; uint64_t at; } (*fan_out)[FETCH_ALL_FAN_OUT]; // per piece: to whom it went, when
static uint8_t *scratch;           // a piece's bytes read back for its check, or from the source
static uint8_t *urgent;            // per piece: a read or an open waited for it
static uint32_t *urgent_list;      // those not yet verified, in the order they were asked for
static uint32_t urgent_count;
static uint64_t last_block_at;
static uint64_t wake_at = UINT64_MAX;
static uint64_t head_until[16];    // the ends of the head's last backoffs (wake_at's, besides the peers')
static uint8_t head_until_next;
static char store_dir_name[4096];  // for the message of a store that filled up
// The store could not take a piece: nothing more is fetched, what waits fails, what is in is still
// served (lib/swarm/node.ts's storeFailed). Before, a block the store refused was asked for again,
// and again: a read waited forever.
static bool no_room;
struct swarm_stats stats;

// The set's state, none of it held yet; -1 without memory.
static int state_init (void) {
  d = &job.desc;
  uint32_t n = d->piece_count ? d->piece_count : 1;
  have = calloc(n, 1);
  avail = calloc(n, sizeof *avail);
  parts = calloc(n, sizeof *parts);
  active = calloc(n, sizeof *active);
  head_wait = calloc(n, sizeof *head_wait);
  fan_out = calloc(n, sizeof *fan_out);
  scratch = malloc(d->piece_length);
  if (!have || !avail || !parts || !active || !head_wait || !fan_out || !scratch) return -1;
  urgent = calloc(n, 1);
  urgent_list = calloc(n, sizeof *urgent_list);
  if (!urgent || !urgent_list) return -1;
  orphans = d->piece_count; // none held, started or announced yet
  return 0;
}

int swarm_init (const char *store_dir, int kept_fd, const struct table *own_files_of) {
  if (state_init() < 0) return -1;
  snprintf(store_dir_name, sizeof store_dir_name, "%s", store_dir);
  return store_open(store_dir, d->total_bytes, kept_fd, own_files_of);
}

int swarm_init_head (const struct table *t, char *error, size_t error_size) {
  if (state_init() < 0) { snprintf(error, error_size, "out of memory"); return -1; }
  return store_open_source(t, error, error_size);
}

void swarm_close (void) {
  store_close();
}

// The store refused a block (`err`): said once; every wait fails from here.
static void store_failed (int err) {
  if (no_room) return;
  no_room = true;
  fprintf(stderr, "p2prun-agent: cannot write to the store %s: %s "
    "(hint: free room there, or give --store-dir a file system with room for the set)\n", store_dir_name, strerror(err));
  mount_fail_waiting();
}

bool swarm_store_full (void) {
  return no_room;
}

// What reads wait for first, then every peer's requests topped up.
static void fill_all (void) {
  ask_urgent();
  for (int i = 0; i < peer_count; i++) fill(peers[i]);
}

void swarm_prioritize (uint32_t first, uint32_t last) {
  for (uint32_t i = first; i <= last && i < d->piece_count; i++) {
    if (urgent[i] || have[i]) continue;
    urgent[i] = 1;
    urgent_list[urgent_count++] = i;
  }
  // Asked for now, not at the next tick.
  fill_all();
}

uint64_t swarm_last_block_at (void) {
  return last_block_at;
}

uint32_t swarm_have_count (void) {
  return have_count;
}

bool swarm_complete (void) {
  return have_count == d->piece_count;
}

bool swarm_waiting (void) {
  return !no_room && (urgent_count > 0 || (job.mode == MODE_EAGER && !swarm_complete()));
}

uint64_t swarm_left (void) {
  uint64_t left = 0;
  for (uint32_t i = 0; i < d->piece_count; i++) if (!have[i]) left += piece_size(d, i);
  return left;
}

static void send_interest (struct peer *p) {
  bool wanted = p->wanted > 0;
  if (wanted == p->we_interested) return;
  p->we_interested = wanted;
  peer_send(p, wanted ? INTERESTED : NOT_INTERESTED, NULL, 0);
}

void swarm_opened (struct peer *p) {
  if (swarm_complete() && p->fast) {
    peer_send(p, HAVE_ALL, NULL, 0);
  } else if (have_count == 0 && p->fast) {
    peer_send(p, HAVE_NONE, NULL, 0);
  } else {
    uint32_t bytes = (d->piece_count + 7) / 8;
    uint8_t *bits = malloc(bytes ? bytes : 1);
    if (!bits) { peer_close(p, "out of memory"); return; }
    swarm_bitfield(bits);
    peer_send(p, BITFIELD, bits, bytes);
    free(bits);
  }
}

// Blocks asked for will not come: free them again, unless a second copy is still on its way.
static void release (const struct request *r) {
  struct partial *part = &parts[r->index];
  if (!part->blocks) return;
  for (uint32_t b = r->begin / BLOCK; b < (r->begin + r->length + BLOCK - 1) / BLOCK; b++) {
    if (part->blocks[b] != ASKED) continue;
    if (part->again[b]) part->again[b] = 0; else part->blocks[b] = FREE;
  }
}

void swarm_closed (struct peer *p) {
  if (job.head) seed_left(p);
  for (int i = 0; i < p->nreq; i++) release(&p->reqs[i]);
  p->nreq = 0;
  if (p->head) return;
  for (uint32_t i = 0; i < d->piece_count; i++) {
    if (p->has[i] && --avail[i] == 0 && !have[i] && !parts[i].blocks) orphans++;
  }
}

// Piece `index` joins (+1) or leaves (-1) those neither held nor started, which eager mode's
// rarest-first scan looks at: each peer's count of them and the head's (orphans) follow, so a peer
// with none is not scanned for. At 32 nodes nearly every scan found nothing (22,600 of 23,000 per
// node, 17 million pieces looked at: most after a have for a piece this node was already fetching).
static void unstarted_changed (uint32_t index, int delta) {
  for (int i = 0; i < peer_count; i++) if (peers[i]->has[index]) peers[i]->unstarted += (uint32_t)delta;
  if (avail[index] == 0) orphans += (uint32_t)delta;
}

static bool start_piece (uint32_t index) {
  struct partial *part = &parts[index];
  uint16_t count = (uint16_t)((piece_size(d, index) + BLOCK - 1) / BLOCK);
  part->blocks = calloc(count, 1);
  part->again = calloc(count, 1);
  part->asked_at = calloc(count, sizeof *part->asked_at);
  part->hash = EVP_MD_CTX_new();
  if (!part->blocks || !part->again || !part->asked_at || !part->hash || !EVP_DigestInit_ex(part->hash, EVP_sha1(), NULL)) {
    free(part->blocks); free(part->again); free(part->asked_at); EVP_MD_CTX_free(part->hash);
    part->blocks = NULL; part->again = NULL; part->asked_at = NULL; part->hash = NULL;
    return false;
  }
  part->hashed = 0;
  part->count = part->missing = count;
  active[active_count++] = index;
  unstarted_changed(index, -1);
  return true;
}

static void finish_piece (uint32_t index) {
  struct partial *part = &parts[index];
  if (!part->blocks) return;
  free(part->blocks);
  free(part->again);
  free(part->asked_at);
  EVP_MD_CTX_free(part->hash);
  part->blocks = part->again = NULL;
  part->asked_at = NULL;
  part->hash = NULL;
  for (uint32_t i = 0; i < active_count; i++) if (active[i] == index) { active[i] = active[--active_count]; break; }
  unstarted_changed(index, +1);
}

void swarm_bitfield (uint8_t *bits) {
  memset(bits, 0, (d->piece_count + 7) / 8);
  for (uint32_t i = 0; i < d->piece_count; i++) if (have[i]) bits[i / 8] |= (uint8_t)(0x80 >> (i % 8));
}

void swarm_adopt (const uint8_t *bits) {
  for (uint32_t i = 0; i < d->piece_count; i++) {
    if (have[i] || !(bits[i / 8] & (0x80 >> (i % 8)))) continue;
    unstarted_changed(i, -1);
    have[i] = 1;
    have_count++;
    mount_piece_verified(i);
  }
}

static void ask (struct peer *p, uint32_t index, uint32_t first, uint32_t end, bool again) {
  struct partial *part = &parts[index];
  uint64_t now = now_ms();
  for (uint32_t b = first; b < end; b++) {
    if (again) { part->again[b] = 1; continue; }
    part->blocks[b] = ASKED;
    part->asked_at[b] = now;
  }
  uint32_t begin = first * BLOCK;
  uint32_t stop = end * BLOCK < piece_size(d, index) ? end * BLOCK : piece_size(d, index);
  p->reqs[p->nreq++] = (struct request){ index, begin, stop - begin, now };
  stats.requests++;
  peer_send_request(p, REQUEST, index, begin, stop - begin);
}

// Whether p may be asked for piece `index`: it has it, this node lacks it, and p is not the head,
// or is the head and no other peer holds the piece (the head sends each piece about once; the
// nodes spread it) and did not turn it down a moment ago.
static bool backing_off (const struct peer *p, uint32_t index, uint64_t now) {
  for (int i = 0; i < 8; i++) if (p->backoff[i].index == index && p->backoff[i].until > now) return true;
  return false;
}

static bool askable (const struct peer *p, uint32_t index, uint64_t now) {
  if (!p->has[index] || have[index]) return false;
  if (p->head) return avail[index] == 0 && head_wait[index] <= now;
  return !backing_off(p, index, now);
}

static uint32_t outstanding_bytes (const struct peer *p) {
  uint32_t bytes = 0;
  for (int i = 0; i < p->nreq; i++) bytes += p->reqs[i].length;
  return bytes;
}

static uint32_t read_depth (void) {
  return PIPELINE_BYTES + (urgent_count > 0 ? READ_EXTRA_BYTES : 0);
}

// Asks p for the next free run of blocks of a started piece; false if it has none free.
static bool ask_free_run (struct peer *p, uint32_t index) {
  struct partial *part = &parts[index];
  uint32_t run = p->p2prun ? P2PRUN_REQUEST / BLOCK : 1;
  uint32_t first = 0;
  while (first < part->count && part->blocks[first] != FREE) first++;
  if (first == part->count) return false;
  uint32_t end = first + 1;
  while (end < part->count && end - first < run && part->blocks[end] == FREE) end++;
  ask(p, index, first, end, false);
  return true;
}

// Whether p's request covers block b of piece `index`.
static bool asked_of (const struct peer *p, uint32_t index, uint32_t b) {
  for (int i = 0; i < p->nreq; i++) {
    const struct request *r = &p->reqs[i];
    if (r->index == index && r->begin / BLOCK <= b && b < (r->begin + r->length + BLOCK - 1) / BLOCK) return true;
  }
  return false;
}

// Whether p takes another request now: PIPELINE_BYTES in flight, more while a read waits.
static bool has_room (const struct peer *p) {
  return p->phase == P_OPEN && !p->chokes_us && p->nreq < MAX_OUTSTANDING && outstanding_bytes(p) < read_depth();
}

static bool has_free_block (const struct partial *part) {
  return !part->blocks || memchr(part->blocks, FREE, part->count) != NULL;
}

// The pieces reads and opens wait for, in the order they came, each asked of the holder with room
// that has the fewest pieces (ties: a random one). The nodes read the same pages in the same order,
// so the node with the most pieces is the furthest ahead and holds what everyone reads: asked of a
// holder at random, it served 2.3 copies of the set at 8 nodes in block mode, and every read queued
// behind its uplink (25-30 ms for 64 KiB, against 1-6 ms from a holder not behind it). The least
// advanced holder makes a chain: each node serves those just behind it. Measured against a random
// holder and against the lesser of two random ones (bench/README.md, 2026-12-04 12:07).
static void ask_urgent (void) {
  if (no_room) return;
  uint64_t now = now_ms();
  struct peer *holders[MAX_PEERS];
  for (uint32_t u = 0; u < urgent_count; u++) {
    uint32_t index = urgent_list[u];
    while (has_free_block(&parts[index])) {
      int n = 0;
      for (int i = 0; i < peer_count; i++) if (has_room(peers[i]) && askable(peers[i], index, now)) holders[n++] = peers[i];
      if (n == 0) break;
      int from = (int)(random() % n);
      struct peer *least = holders[from];
      for (int k = 1; k < n; k++) if (holders[(from + k) % n]->has_count < least->has_count) least = holders[(from + k) % n];
      if (!parts[index].blocks && !start_piece(index)) return;
      ask_free_run(least, index);
    }
  }
}

// One request for peer p, if it has anything this node still lacks other than what reads wait
// for (ask_urgent's); false: nothing to ask it now. In order: a started piece's free blocks, the
// rarest piece it has that nobody is fetching (eager mode; ties broken from a random place, so the
// nodes spread), and the endgame: a block a read waits for that another peer was asked for
// ENDGAME_AFTER_MS ago and has not sent (lib/swarm/picker.ts keeps the same rules).
static bool pick (struct peer *p, uint64_t now) {
  for (uint32_t a = 0; a < active_count; a++) {
    uint32_t index = active[a];
    if (!urgent[index] && askable(p, index, now) && ask_free_run(p, index)) return true;
  }
  // The background fetch of everything, rarest first: eager mode's alone. A piece a node has is
  // held by it at least: one holder is as rare as it gets (the head's pieces count no holder: it is
  // asked only for those).
  if (job.mode == MODE_EAGER && (p->head ? orphans : p->unstarted) > 0) {
    uint32_t best = UINT32_MAX, best_avail = UINT32_MAX, n = d->piece_count, from = (uint32_t)random() % n;
    for (uint32_t k = 0, index = from; k < n && best_avail > (p->head ? 0u : 1u); k++, index = index + 1 == n ? 0 : index + 1) {
      if (!p->has[index] || parts[index].blocks || !askable(p, index, now) || avail[index] >= best_avail) continue;
      best = index;
      best_avail = avail[index];
    }
    if (best != UINT32_MAX && start_piece(best)) return ask_free_run(p, best);
  }
  for (uint32_t a = 0; a < active_count && urgent_count > 0; a++) {
    uint32_t index = active[a];
    // The stalled holder is one of the peers that have it: the head stands in only if it is the only one.
    if (!urgent[index] || !p->has[index] || have[index] || (p->head && avail[index] > 1)) continue;
    struct partial *part = &parts[index];
    for (uint32_t b = 0; b < part->count; b++) {
      if (part->blocks[b] != ASKED || part->again[b] || now - part->asked_at[b] < ENDGAME_AFTER_MS || asked_of(p, index, b)) continue;
      ask(p, index, b, b + 1, true);
      return true;
    }
  }
  return false;
}

// Requests until PIPELINE_BYTES are in flight to p (more while a read waits).
static void fill (struct peer *p) {
  if (p->wanted == 0 || no_room) return;
  uint64_t now = now_ms();
  while (has_room(p) && pick(p, now)) {}
}

// Called with the piece unstarted (finish_piece first); `senders` are the serials of the peers its
// blocks came from.
static void verified (uint32_t index, const uint32_t *senders, uint8_t sender_count) {
  unstarted_changed(index, -1);
  have[index] = 1;
  have_count++;
  if (urgent[index]) {
    for (uint32_t u = 0; u < urgent_count; u++) {
      if (urgent_list[u] != index) continue;
      memmove(&urgent_list[u], &urgent_list[u + 1], (urgent_count - u - 1) * sizeof *urgent_list);
      urgent_count--;
      break;
    }
  }
  mount_piece_verified(index);
  uint8_t body[4];
  put32(body, index);
  for (int i = 0; i < peer_count; i++) {
    struct peer *o = peers[i];
    if (o->phase != P_OPEN) continue;
    if (!o->has[index]) peer_send_later(o, HAVE, body, 4);
    else if (--o->wanted == 0) send_interest(o);
    // The head holds a piece it sent for this node alone until told it is in (lib/swarm/fan-out.ts:
    // others asking are sent to this node), then 10 s: a node not connected to this one waited that.
    for (uint8_t k = 0; k < sender_count && o->head; k++) if (senders[k] == o->serial) peer_send_later(o, HAVE, body, 4);
  }
  if (!swarm_complete()) return;
  debug("every piece is in: %llu bytes from the head, %llu from peers", (unsigned long long)stats.from_head, (unsigned long long)stats.from_peers);
  tracker_announce(EV_COMPLETED);
}

// A whole piece, its hash finished from the store past what came in order: verified, or fetched
// again without its senders (one of them sent bad bytes; the head is only dropped, its source may
// have changed under it).
static void check (uint32_t index) {
  uint32_t size = piece_size(d, index);
  struct partial *part = &parts[index];
  uint32_t rest = size - part->hashed;
  uint8_t digest[EVP_MAX_MD_SIZE];
  bool whole = rest == 0 || store_read(scratch, rest, (uint64_t)index * d->piece_length + part->hashed) == (ssize_t)rest;
  whole = whole && EVP_DigestUpdate(part->hash, scratch, rest) && EVP_DigestFinal_ex(part->hash, digest, NULL);
  uint32_t senders[MAX_SENDERS];
  uint8_t sender_count = part->sender_count;
  memcpy(senders, part->senders, sizeof senders);
  finish_piece(index);
  part->sender_count = 0;
  if (whole && memcmp(digest, d->piece_hashes + 20 * (size_t)index, 20) == 0) { verified(index, senders, sender_count); return; }
  stats.failed_pieces++;
  for (int i = 0; i < peer_count; i++) {
    for (uint8_t k = 0; k < sender_count; k++) {
      if (peers[i]->serial != senders[k]) continue;
      if (peers[i]->head) peer_close(peers[i], "its blocks failed a piece's check"); else peer_ban(peers[i]);
    }
  }
}

// Whether piece `index`'s bytes (all of them) hash to what the description says.
static bool hashes_right (uint32_t index, const uint8_t *bytes) {
  uint8_t digest[20];
  SHA1(bytes, piece_size(d, index), digest);
  return memcmp(digest, d->piece_hashes + 20 * (size_t)index, 20) == 0;
}

bool swarm_piece_matches (uint32_t index, uint8_t *out) {
  uint32_t size = piece_size(d, index);
  return store_read(out, size, (uint64_t)index * d->piece_length) == (ssize_t)size && hashes_right(index, out);
}

// Pieces first..last, which a stalled read waits for, from the source directories (source.c):
// checked like a peer's, then stored and announced as any verified piece; -1 with the reason in
// `error` if the source cannot stand in.
int swarm_from_source (const struct table *t, uint32_t first, uint32_t last, char *error, size_t error_size) {
  for (uint32_t index = first; index <= last && index < d->piece_count; index++) {
    if (have[index]) continue;
    uint32_t size = piece_size(d, index);
    if (source_read_piece(t, index, scratch, error, error_size) < 0) return -1;
    if (!hashes_right(index, scratch)) {
      snprintf(error, error_size, "piece %u differs from the description there", index);
      return -1;
    }
    if (store_write(scratch, size, (uint64_t)index * d->piece_length) != (ssize_t)size) {
      snprintf(error, error_size, "cannot write the store: %s", strerror(errno));
      return -1;
    }
    stats.from_source += size;
    finish_piece(index); // blocks still asked of peers are dropped when they come
    parts[index].sender_count = 0;
    verified(index, NULL, 0);
  }
  return 0;
}

static bool take_request (struct peer *p, uint32_t index, uint32_t begin, uint32_t length, struct request *out) {
  for (int i = 0; i < p->nreq; i++) {
    struct request *r = &p->reqs[i];
    if (r->index != index || r->begin != begin || r->length != length) continue;
    *out = *r;
    p->reqs[i] = p->reqs[--p->nreq];
    return true;
  }
  return false;
}

static void place (struct peer *p, uint32_t index, uint32_t begin, const uint8_t *data, uint32_t length) {
  struct request r;
  if (!take_request(p, index, begin, length, &r)) return; // not asked for, or cancelled: dropped
  p->last_block_at = last_block_at = now_ms();
  if (p->head) stats.from_head += length; else stats.from_peers += length;
  struct partial *part = &parts[index];
  if (have[index] || !part->blocks) return; // a second copy, late
  if (begin < part->hashed) return; // a second copy of bytes already hashed: they stay as they are
  uint64_t at = (uint64_t)index * d->piece_length + begin;
  ssize_t wrote = store_write(data, length, at);
  if (wrote != (ssize_t)length) {
    store_failed(wrote < 0 ? errno : ENOSPC); // a short write: the file system had no more room
    release(&r);
    return;
  }
  bool known = false;
  for (uint8_t k = 0; k < part->sender_count && !known; k++) known = part->senders[k] == p->serial;
  if (!known && part->sender_count < MAX_SENDERS) part->senders[part->sender_count++] = p->serial;
  if (begin == part->hashed && EVP_DigestUpdate(part->hash, data, length)) part->hashed += length;
  for (uint32_t b = begin / BLOCK; b < (begin + length + BLOCK - 1) / BLOCK; b++) {
    if (part->blocks[b] != IN) part->missing--;
    part->blocks[b] = IN;
  }
  if (part->missing == 0) check(index);
}

// A peer's request, answered from the store, or turned down (not this node's, or malformed).
// Whether piece `index` may go to p now (FanOut.admits): it counts as one of the piece's recipients.
static bool admits (const struct peer *p, uint32_t index) {
  if (!p->fast) return true; // only a BEP 6 peer can be turned down
  uint64_t now = now_ms();
  int limit = job.mode == MODE_EAGER ? FETCH_ALL_FAN_OUT : READ_FAN_OUT, current = 0, free_slot = -1;
  for (int i = 0; i < FETCH_ALL_FAN_OUT; i++) {
    struct sent *s = &fan_out[index][i];
    bool live = s->serial != 0 && now - s->at < FAN_OUT_WINDOW_MS;
    if (live && s->serial == p->serial) return true;
    if (live) current++; else if (free_slot < 0) free_slot = i;
  }
  if (current >= limit || free_slot < 0) return false;
  fan_out[index][free_slot] = (struct sent){ p->serial, now };
  return true;
}

// The head's seeder serves by its own rules (seed.c): its source checked, one node per piece.
static void serve (struct peer *p, uint32_t index, uint32_t begin, uint32_t length) {
  uint32_t size = index < d->piece_count ? piece_size(d, index) : 0;
  bool asks_ours = index < d->piece_count && have[index] && length > 0 && length <= MAX_REQUEST && begin <= size && length <= size - begin;
  if (asks_ours && (job.head ? seed_may_send(p, index) : admits(p, index))) {
    peer_send_block(p, index, begin, length, (uint64_t)index * d->piece_length + begin);
    stats.uploaded += length;
  } else if (p->fast) {
    peer_send_request(p, REJECT, index, begin, length);
  }
}

static void gains (struct peer *p, uint32_t index) {
  if (p->has[index]) return;
  p->has[index] = 1;
  p->has_count++;
  if (!have[index]) p->wanted++;
  if (!have[index] && !parts[index].blocks) {
    p->unstarted++;
    if (!p->head && avail[index] == 0) orphans--;
  }
  if (!p->head) avail[index]++;
}

void swarm_message (struct peer *p, uint8_t id, const uint8_t *m, size_t length) {
  static const int8_t fixed[] = { [CHOKE] = 0, [UNCHOKE] = 0, [INTERESTED] = 0, [NOT_INTERESTED] = 0, [HAVE] = 4,
    [BITFIELD] = -1, [REQUEST] = 12, [PIECE] = -1, [CANCEL] = 12, [9] = 2, [10] = -1, [11] = -1, [12] = -1, [13] = 4,
    [HAVE_ALL] = 0, [HAVE_NONE] = 0, [REJECT] = 12, [17] = 4 };
  if (id > REJECT + 1 || (fixed[id] >= 0 && (size_t)fixed[id] != length)) { peer_close(p, "a malformed message"); return; }
  if ((id == HAVE_ALL || id == HAVE_NONE || id == REJECT) && !p->fast) { peer_close(p, "a Fast Extension message it did not announce"); return; }
  if (job.head && (id == BITFIELD || id == HAVE_ALL || id == HAVE_NONE) && !p->told_pieces) seed_joined(p);
  switch (id) {
    case CHOKE:
      p->chokes_us = true;
      // Without the Fast Extension a choke drops every request; with it, each comes back as a reject.
      if (!p->fast) { for (int i = 0; i < p->nreq; i++) release(&p->reqs[i]); p->nreq = 0; }
      return;
    case UNCHOKE:
      p->chokes_us = false;
      break;
    case INTERESTED:
      peer_send(p, UNCHOKE, NULL, 0);
      return;
    case NOT_INTERESTED: case CANCEL: case 9: case 13: case 17:
      return;
    case HAVE: {
      uint32_t index = get32(m);
      if (index >= d->piece_count) { peer_close(p, "a have past the last piece"); return; }
      gains(p, index);
      send_interest(p);
      break;
    }
    case BITFIELD: case HAVE_ALL:
      if (id == BITFIELD && length != (d->piece_count + 7) / 8) { peer_close(p, "a bitfield of the wrong size"); return; }
      for (uint32_t i = 0; i < d->piece_count; i++) if (id == HAVE_ALL || m[i / 8] & (0x80 >> (i % 8))) gains(p, i);
      debug("%s: has %u of %u pieces", p->address, p->has_count, d->piece_count);
      send_interest(p);
      break;
    case HAVE_NONE:
      return;
    case REQUEST:
      serve(p, get32(m), get32(m + 4), get32(m + 8));
      return;
    case PIECE:
      if (length < 8 || length - 8 > MAX_REQUEST) { peer_close(p, "a malformed piece message"); return; }
      place(p, get32(m), get32(m + 4), m + 8, (uint32_t)(length - 8));
      break;
    case REJECT: {
      struct request r;
      if (!take_request(p, get32(m), get32(m + 4), get32(m + 8), &r)) return;
      stats.rejected++;
      if (p->head) stats.rejected_by_head++;
      release(&r);
      uint64_t until = now_ms() + (p->head ? HEAD_BACKOFF_MS : PEER_BACKOFF_MS);
      if (p->head) {
        head_wait[r.index] = until;
        head_until[head_until_next] = until;
        head_until_next = (uint8_t)((head_until_next + 1) % 16);
      } else {
        p->backoff[p->backoff_next] = (typeof(p->backoff[0])){ r.index, until };
        p->backoff_next = (uint8_t)((p->backoff_next + 1) % 8);
      }
      if (until < wake_at) wake_at = until;
      break;
    }
    default:
      return;
  }
  ask_urgent();
  fill(p);
}

uint64_t swarm_wake_at (void) {
  return wake_at;
}

void swarm_wake (void) {
  uint64_t now = now_ms();
  wake_at = UINT64_MAX;
  for (int i = 0; i < 16; i++) if (head_until[i] > now && head_until[i] < wake_at) wake_at = head_until[i];
  for (int i = 0; i < peer_count; i++) {
    for (int k = 0; k < 8; k++) if (peers[i]->backoff[k].until > now && peers[i]->backoff[k].until < wake_at) wake_at = peers[i]->backoff[k].until;
  }
  fill_all();
}

// Every 100 ms: peers that answer no request in time are dropped; the head is asked again for
// what it turned down; free blocks (of peers lost) go to others.
void swarm_tick (void) {
  uint64_t now = now_ms();
  bool head = false;
  for (int i = 0; i < peer_count && !head; i++) head = peers[i]->head && peers[i]->phase != P_CLOSED;
  if (!head && !swarm_complete()) redial_seeders();
  for (int i = 0; i < peer_count; i++) {
    struct peer *p = peers[i];
    if (p->phase != P_OPEN) continue;
    for (int r = 0; r < p->nreq; r++) {
      if (now - p->reqs[r].at > REQUEST_TIMEOUT_MS && now - p->last_block_at > REQUEST_TIMEOUT_MS) { peer_close(p, "answered no request in time"); break; }
    }
  }
  fill_all();
  for (int i = 0; i < peer_count; i++) if (peers[i]->phase == P_OPEN) peer_flush(peers[i]);
}
