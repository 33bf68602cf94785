// p2prun's native node agent: one process, one thread, one epoll loop. It joins a job's swarm
// the way lib/swarm/node.ts does (same wire, same job proof, same tracker), without Node: its
// whole life costs what a C BitTorrent client's does (issue 12, bench/README.md).
//   description.c  what it needs of the description file
//   tracker.c      announces over HTTP, non-blocking
//   peer.c         one connection: handshakes, the job proof, framing, the send queue
//   swarm.c        the set: which blocks to ask whom for, assembly and check, serving
//   store.c        the set's bytes on the node: one file, and large files in files of their own
//   source.c       the fallback: pieces read from the directories the set was described from
//   main.c         options, the loop, timers and signals
//   node-agent.c   a launch's node agent: the job spec, the node state, the ranks
//   linger.c       agent-linger: the node's next launches handed to this agent, a child each
//   json.c         reading the job spec
//   description-fetch.c  the description a job spec does not carry: from peers, then the head
//   seed.c         `seed`: the head's seeder, the set served from the directories it was described from
#ifndef P2PRUN_AGENT_H
#define P2PRUN_AGENT_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/uio.h>
#include "description.h"
#include "../state-files.h"

#define BLOCK 16384u
#define MAX_REQUEST (1u << 17)      // what p2prun serves and accepts in one piece message
#define P2PRUN_REQUEST (64u * 1024) // what it asks its own peers for at once (lib/swarm/picker.ts)
#define MAX_OUTSTANDING 8           // requests in flight per peer
#define MAX_PEERS 1024
#define MAX_CONNS 120               // the most a node's --max-conns may be: MAX_PEERS keeps a few slots for redials
#define MAX_HEAD_CONNS 1000         // the most the head's may be (lib/config.ts's head-max-conns default)
#define MAX_QUEUED_BYTES (16u << 20) // still to send to one peer after a flush (peer.c)
// The wire's handshake and BEP 10's extended messages, as peer.c and description-fetch.c speak them.
#define PROTOCOL "\x13" "BitTorrent protocol" // its first 20 bytes
#define HANDSHAKE_LENGTH 68
#define EXTENDED 20
#define EXTENSION_BIT 0x10   // reserved byte 5
#define DESC_ID 2            // the id our peers send p2prun_desc under (lib/swarm/extensions.ts)
#define DESC_PIECE 16384     // the description moves in pieces of this (BEP 9's)

uint64_t now_ms (void);

// ---- serving a mount (main.c), for `mount` or a launch's node agent (node-agent.c), which hooks in
// The store of a set a lingering agent kept from its last launch on the node (linger.c).
struct kept_store {
  int fd;
  uint8_t info_hash[20];
  uint32_t piece_count;
  uint8_t *bits; // the pieces verified in it
};
struct serve_hooks {
  // The description, read and checked already; NULL: the DESCRIPTION argument's.
  const struct description *description;
  void (*ready) (void);     // mounted
  // A failure, said on stderr already (then the agent ends).
  void (*failed) (const char *code, const char *message, const char *hint);
  void (*tick) (void);      // every TICK_MS
  void (*ended) (void);     // unmounted after it served
  const struct kept_store *kept; // the same set's store to serve from (its pieces had); NULL: a new one
  void (*keep) (int store_fd);   // the store once served, for the node's next launch; NULL: it goes
};
// `mount`'s arguments (argv[0] "mount"); the exit code.
int agent_mount (int argc, char **argv, const struct serve_hooks *hooks);
// Unmount and leave, as on SIGTERM.
void agent_stop (void);
int node_agent (int argc, char **argv);
// The launch `node`, `launch`, `expect` name, with the environment's job spec, served in this
// process (a child of linger.c's): the exit code. `kept`, `keep`: as serve_hooks has them.
int node_agent_serve (const char *node, const char *launch, const char *expect, const struct kept_store *kept, void (*keep) (int store_fd));
// Why this agent would not serve the job spec `raw` (P2PRUN_JOB's value); NULL if it would:
// `info_hash` is then its set's (hex).
const char *node_agent_spec_set (const char *raw, char *info_hash, size_t size);
// Removes `path` and all under it, as far as it can.
void remove_tree (const char *path);
// RUN_DIR/job-LAUNCH-NODE, a launch's node state (lib/session/node-state.ts's NodeState.of).
void node_state_dir (const char *run_dir, const char *launch, const char *node, char *out, size_t size);
// agent-linger (linger.c): serves this process's launch and those handed to it meanwhile and for
// `linger_ms` after the last one ended; the exit code.
int linger (const char *node, const char *launch, const char *expect, const char *run_dir, const char *safe_node, uint64_t linger_ms);
// This process's CPU so far, and the agent's counters with `extra` members first, as JSON.
void usage_json (char *out, size_t size);
void write_stats (FILE *f, const char *extra);
// `n` bytes as lowercase hex into `out` (2n + 1 bytes).
void hex_of (const uint8_t *bytes, size_t n, char *out);
// `2n` hex digits into `n` bytes; false if `hex` is not that.
bool bytes_of_hex (const char *hex, uint8_t *out, size_t n);
// `n` bytes percent-encoded, as a tracker query has them (3n + 1 bytes).
void url_escape (const uint8_t *bytes, size_t n, char *out);
// HOST:PORT (a name or an address; [v6]:port too) split: the host without brackets into `host`,
// what follows the last colon in *port; false without a port, or a host that does not fit.
bool split_host_port (const char *host_port, char *host, size_t host_size, const char **port);
// An http:// URL's parts: host (as split_host_port leaves it), port ("80" if it names none), what
// the Host header says (authority, authority_length) and path ("/" if none); false if the URL is
// not http:// or its host does not fit.
struct http_url { char host[256], port[8]; const char *authority; int authority_length; const char *path; };
bool http_url_parse (const char *url, struct http_url *out);
// A non-blocking TCP socket connecting (errno EINPROGRESS) or connected (errno 0) to host:port;
// -1 with errno, or DIAL_UNRESOLVED for a name that does not resolve: the one dial of peers,
// trackers and the description fetch. Resolves a name, blocking, once per dial.
#define DIAL_UNRESOLVED (-2)
int dial_tcp (const char *host, const char *port);
// A p2prun node's peer id (lib/swarm/peer-id.ts's "-P2N020-" and 12 random hex digits); false
// without random bytes. Seeds random() the first time.
bool new_peer_id (uint8_t out[20]);
extern const char *const MODE_NAMES[];

// Big-endian 32-bit integers, as the wire has them.
static inline void put32 (uint8_t *at, uint32_t v) {
  at[0] = (uint8_t)(v >> 24); at[1] = (uint8_t)(v >> 16); at[2] = (uint8_t)(v >> 8); at[3] = (uint8_t)v;
}
static inline uint32_t get32 (const uint8_t *at) {
  return (uint32_t)at[0] << 24 | (uint32_t)at[1] << 16 | (uint32_t)at[2] << 8 | at[3];
}
// A line on stderr when P2PRUN_DEBUG is set (as for the Node agent).
void debug (const char *format, ...) __attribute__((format(printf, 1, 2)));

// ---- the loop (main.c): every descriptor it watches has a handler
struct watch {
  void (*ready) (struct watch *w, uint32_t events);
  int fd;
};
int loop_add (struct watch *w, uint32_t events);
int loop_mod (struct watch *w, uint32_t events);
void loop_del (struct watch *w);

// ---- the job
struct job {
  struct description desc;
  uint8_t peer_id[20];
  uint8_t secret[64];
  size_t secret_len;           // 0: an open swarm
  uint16_t listen_port;
  // The settings lib/config.ts names the same (mode, max-conns, numwant, stall-timeout).
  enum { MODE_EAGER, MODE_BLOCK, MODE_FILE } mode;
  int max_conns;
  int numwant;
  uint64_t stall_ms;
  // The head's seeder (seed.c): it has the whole set, dials no one, and serves by the head's rules.
  bool head;
  // The head hands the description to a few distinct peers (peer.c), and to anyone while this is
  // set: no node that has it is left (its parent says so, seed.c).
  bool desc_to_anyone;
};
extern struct job job;
// The job's secret (P2PRUN_SECRET's hex) into job.secret; -1 if it is not one (under 16 bytes).
int job_secret_from_hex (const char *hex);
// HMAC-SHA256 of the secret over purpose and parts (lib/swarm/job-auth.ts), 32 bytes.
void job_proof (const char *purpose, const uint8_t *a, size_t alen, const uint8_t *b, size_t blen,
  const uint8_t *c, size_t clen, uint8_t out[32]);

// ---- one peer connection (peer.c)
enum phase { P_CONNECTING, P_HANDSHAKE, P_PROOF, P_OPEN, P_CLOSED };

struct request { uint32_t index, begin, length; uint64_t at; };

struct out_seg {
  struct out_seg *next;
  uint64_t file_offset;        // FILE segments: bytes of the store
  size_t length, sent;
  bool from_store;
  uint8_t data[];              // memory segments
};

struct peer {
  struct watch w;
  uint32_t watching;           // the epoll events asked for now
  enum phase phase;
  bool outgoing;
  char address[48];            // host:port dialed, or where it came from
  uint8_t id[20];
  bool fast, p2prun, head;
  uint16_t listen_port;        // from its extension handshake
  uint8_t desc_id;             // the id it takes p2prun_desc messages under; 0: none
  uint8_t pex_id;              // the id it takes ut_pex messages under; 0: none
  // Its pieces, one byte each: the picker's scans read it directly.
  uint8_t *has;
  uint32_t has_count;
  uint32_t wanted;             // pieces it has that this node has not verified: 0, nothing to ask it
  uint32_t unstarted;          // of those, the ones this node has not started: 0, nothing for eager mode's scan
  bool chokes_us, we_interested;
  struct request reqs[MAX_OUTSTANDING];
  int nreq;
  uint64_t last_block_at;
  uint8_t *rbuf;
  size_t rlen;
  struct out_seg *out, *out_tail;
  size_t out_bytes;
  bool out_urgent;             // something queued must go now; haves alone wait for the tick
  int low_water;               // SO_RCVLOWAT as set: the bytes a wake-up waits for
  uint64_t downloaded, uploaded;
  uint32_t serial;             // names it in a piece's senders, without a pointer that may dangle
  // Pieces it turned down (a reject: its fan-out is full), not asked of it again until `until`.
  struct { uint32_t index; uint64_t until; } backoff[8];
  uint8_t backoff_next;
  uint64_t since;              // when it was dialed or accepted
  bool told_pieces;            // it sent its bitfield (or have-all, have-none): it has the description
  uint32_t referred[16];       // the head's: serials of the peers it was referred to (seed.c), a ring
  uint8_t referred_next;
};

struct peer *peer_dial (const char *host_port);
// A peer that sent bytes that failed their check: dropped, and refused for BAN_MS.
#define BAN_MS 60000
void peer_ban (struct peer *p);
struct peer *peer_accept (int fd, const char *address);
void peer_close (struct peer *p, const char *why);
void peer_send (struct peer *p, uint8_t id, const void *payload, size_t length);
// A have: sent with the next message, or at the next tick (one write per peer per piece, to every
// peer, was half the agent's writes at 32 nodes).
void peer_send_later (struct peer *p, uint8_t id, const void *payload, size_t length);
void peer_send_request (struct peer *p, uint8_t id, uint32_t index, uint32_t begin, uint32_t length);
void peer_send_block (struct peer *p, uint32_t index, uint32_t begin, uint32_t length, uint64_t store_offset);
// A ut_pex referral (p2prun_referral, lib/swarm/extensions.ts): where `to` listens, the node the
// head sent a piece p asked for; nothing if p takes no ut_pex or `to` said no port.
void peer_send_referral (struct peer *p, const struct peer *to);
void peer_flush (struct peer *p);
void peers_flush (void);
// Connections not through both handshakes after HANDSHAKE_TIMEOUT_MS are closed: a peer that
// connects and says nothing must not hold a slot.
#define HANDSHAKE_TIMEOUT_MS 10000
void peers_tick (void);
void peers_bury (void);

// ---- the store (store.c): the set's bytes on this node, by their offsets in the set
struct table;
// A file made (and unlinked at once) in `dir`, the set's size; or `kept_fd`'s (>= 0), the store of
// the same set a lingering agent kept (linger.c). With `own_files_of`, the large files of that
// table each in a file of their own as well (FUSE passthrough's backing files); -1 with errno.
int store_open (const char *dir, uint64_t total_bytes, int kept_fd, const struct table *own_files_of);
void store_close (void);
bool store_has_own_files (void);
// The file of its own that holds exactly the set's bytes [start, start + length), or -1.
int store_file_of (uint64_t start, uint64_t length);
// pwrite and pread of the set's bytes from `at` on, across files: the bytes done (short: the
// file system failed, errno set), or -1.
ssize_t store_write (const void *data, size_t length, uint64_t at);
ssize_t store_read (void *out, size_t length, uint64_t at);
// sendfile of the set's bytes from `at` on to `socket`, up to the end of the file they lie in.
ssize_t store_send (int socket, uint64_t at, size_t length);
// The head's: the set's files as they lie in the source directories (source.c), each read-only,
// no store file; -1 with a reason in `error`.
int store_open_source (const struct table *t, char *error, size_t error_size);
// Whether a file the set's bytes [at, at + length) lie in changed since store_open_source opened it.
bool store_source_changed (uint64_t at, uint64_t length);
// The one file (the kept store's; the small files' when some have files of their own).
extern int store_fd;

// ---- the set (swarm.c): what peer.c hands over once a connection is open
// The store (store_open's arguments), and the set's state; `kept_fd`'s pieces swarm_adopt takes.
int swarm_init (const char *store_dir, int kept_fd, const struct table *own_files_of);
// The head's: the set served from its source files (store_open_source); -1 with a reason in `error`.
int swarm_init_head (const struct table *t, char *error, size_t error_size);
// The pieces verified in the kept store, as a bitfield: had, as if fetched (they were, and checked,
// by this user's agent for the last launch; the store's descriptor never left its processes).
void swarm_adopt (const uint8_t *bits);
// The pieces this node has, as a bitfield of (piece_count + 7) / 8 bytes.
void swarm_bitfield (uint8_t *bits);
void swarm_close (void);
void swarm_opened (struct peer *p);
void swarm_closed (struct peer *p);
void swarm_message (struct peer *p, uint8_t id, const uint8_t *payload, size_t length);
void swarm_tick (void);
// When a piece turned down (a reject) may be asked of that peer again, the earliest: the agent
// wakes then and asks (swarm_wake), not at its next tick. UINT64_MAX: none waits.
uint64_t swarm_wake_at (void);
void swarm_wake (void);
bool swarm_complete (void);
// Whether something waits for pieces: a read or an open, or in eager mode the set not all in.
bool swarm_waiting (void);
uint32_t swarm_have_count (void);
// Pieces a read or an open waits for: asked for before any other new piece.
void swarm_prioritize (uint32_t first, uint32_t last);
// When the last block arrived (now_ms), for reads that wait too long.
uint64_t swarm_last_block_at (void);
uint64_t swarm_left (void);
// Whether the store refused a piece (full): nothing more is fetched, and reads of what is missing fail.
bool swarm_store_full (void);
extern struct peer *peers[MAX_PEERS];
extern int peer_count;
struct swarm_stats { uint64_t from_head, from_peers, from_source, uploaded, failed_pieces, requests, rejected, rejected_by_head, description_sent; };
extern struct swarm_stats stats;

int swarm_from_source (const struct table *t, uint32_t first, uint32_t last, char *error, size_t error_size);
// A piece as it lies in the store, checked against its hash: the bytes into `out` (a piece's
// length); false if they cannot be read or do not match.
bool swarm_piece_matches (uint32_t index, uint8_t *out);

// ---- the head's seeder (seed.c)
// `seed`'s arguments (argv[0] "seed"); the exit code.
int agent_seed (int argc, char **argv);
// Whether the head sends piece `index` to p now (its source still matches, and no other node is
// getting it from the head): if not, p is told where it went instead.
bool seed_may_send (struct peer *p, uint32_t index);
// p sent its pieces (it joined), p left: the holders the head's parent asks about.
void seed_joined (struct peer *p);
void seed_left (struct peer *p);

// ---- the fallback (source.c): the directories the set was described from, read when the swarm stalls
// --source's argument: DIR (the set itself), or NAME=DIR for its top directory NAME; -1 with a reason.
int source_add (const char *arg, char *error, size_t error_size);
bool source_given (void);
// Piece `index` from the source files it spans, into `out`; -1 with a reason in `error`.
int source_read_piece (const struct table *t, uint32_t index, uint8_t *out, char *error, size_t error_size);
// The source file of the table's regular file `ino`, opened read-only, its stat in `st`; -1 with a
// reason in `error`.
struct stat;
int source_open (const struct table *t, uint32_t ino, struct stat *st, char *error, size_t error_size);

// ---- the tracker (tracker.c)
enum announce_event { EV_NONE, EV_STARTED, EV_COMPLETED, EV_STOPPED };
void tracker_announce (enum announce_event event);
void tracker_tick (void);
bool tracker_busy (void);

// ---- main.c's, for `seed` too
// Creates the loop; -1 with errno.
int loop_init (void);
// epoll_wait on the loop's descriptors.
struct epoll_event;
int loop_wait (struct epoll_event *events, int max, int timeout_ms);
// Listens on host (an IPv4 address or a name; NULL: every address) and port (0: any), watched by
// the loop; job.listen_port says which. -1 with errno.
int listen_on (const char *host, uint16_t port);
// --notify-fd's: the descriptor a parent waits on; `line` is written there once, then it is closed.
void notify (const char *line);
// A failure told (to the parent on --notify-fd, else on stderr): the exit code of a bad input.
int fail_as (const char *code, const char *what, const char *hint);
// A decimal number from min to max, the whole argument.
bool whole_number (const char *text, long min, long max, long *out);
// The signals that stop the agent (SIGTERM, SIGINT) and ask for its counters (SIGUSR1), blocked
// and read from a signalfd in the loop: its watch; NULL with errno.
struct watch *stop_signals_watch (void);

// ---- dialing (main.c)
// host:port of a peer (the seeders, a node list's peers, and those dial_compact picks): dialed once.
void dial_once (const char *host_port);
// BEP 23's compact IPv4 peers (6 bytes each: address, port) told of by a tracker or a peer: each
// dialed once, while the node has fewer than numwant connections, or `every` one.
void dial_compact (const uint8_t *peers, size_t length, bool every);
// The seeders' addresses are dialed again while this node has no connection to the head.
void redial_seeders (void);
#endif
