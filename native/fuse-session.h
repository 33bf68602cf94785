// p2prun's FUSE server, without its host: a libfuse3 low-level session on a thread of its own.
// It answers every request it can from the immutable inode table (fuse-table.c) and, for reads of
// chunks the store already holds, from the store (spliced); a complete file the store holds in a
// file of its own it opens in passthrough, where the kernel allows: reads and mappings of it then
// go to that file without coming here. What needs the swarm (reads of
// chunks not yet local, opens of files not yet complete) it hands to its host as an event, and
// the host answers it later, from its own thread, with one of the replies below: the session
// thread never waits on the host, and the host never waits on it. Two hosts: the Node agent's
// addon (fuse-server.c, events to JS) and the native agent (agent/mount.c).
#ifndef P2PRUN_FUSE_SESSION_H
#define P2PRUN_FUSE_SESSION_H
#define FUSE_USE_VERSION 34
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <fuse_lowlevel.h>
#include "fuse-table.h"

// What the session thread tells its host.
enum event_kind { EV_MOUNTED, EV_OPEN, EV_READ, EV_INTERRUPT, EV_ENDED };

#define COUNTERS(X) X(lookup) X(getattr) X(readdir) X(readlink) X(open) X(read) X(release) X(statfs) \
  X(access) X(refused) X(enoent) X(bytesServedLocal) X(readsForwarded) X(opensForwarded) X(interrupted)
#define AS_ENUM(name) C_##name,
enum counter { COUNTERS(AS_ENUM) C_COUNT };
extern const char *const fuse_counter_names[C_COUNT];

struct pending {
  uint32_t id;
  fuse_req_t req;
  uint64_t ino;
  // A read's bytes in the store (its place in the set, clipped to the file): the host may have
  // them answered from there once they are local (fuse_reply_stored).
  uint64_t start;
  uint32_t length;
};

struct fuse_server;
// Called on the session thread: EV_MOUNTED first (size: 0, or an errno with `message`), then
// EV_OPEN and EV_READ to answer (by `id`), EV_INTERRUPT (already answered EINTR: stop waiting),
// and EV_ENDED if the mount went away from outside (size: errno).
typedef void fuse_event_fn (struct fuse_server *s, enum event_kind kind, uint32_t id, uint64_t ino,
  uint64_t offset, uint32_t size, const char *message);

struct fuse_server {
  struct table table;
  struct fuse_session *se;
  char *mount_point;
  double cache_seconds;
  double negative_seconds;     // how long the kernel may remember that a name does not exist
  // The store (its local view): fd < 0 when there is none, and every read goes to the host.
  int store_fd;
  // Per inode, a file of the store that holds that file's bytes alone, from offset 0, or -1; NULL:
  // none do (store_fd holds them all). With such files the server asks the kernel for FUSE
  // passthrough at INIT, and opens a complete file in that mode: the kernel then reads and maps
  // the file from the store's own file, without this server.
  const int *file_fds;
  uint64_t chunk_length;
  const uint8_t *present;      // a bit per chunk, set (release) once its bytes are in the store
  size_t present_length;
  fuse_event_fn *emit;
  void *host;                  // the host's own
  pthread_t thread;
  int thread_started;
  int mounted;
  int wake_fd;                 // written by fuse_server_stop: the session thread leaves its loop
  // Forwarded requests the host has not answered: whoever removes one (a reply, or an interrupt) answers it.
  pthread_mutex_t lock;
  struct pending *pending;
  size_t pending_count, pending_capacity;
  uint32_t next_id;
  int closing;                 // set by fuse_server_stop (under lock): late replies are dropped
  // The session thread's own: the request it is registering an interrupt callback for, and
  // whether that callback ran inside the registration (it must not answer there: see forward).
  uint32_t registering;
  int interrupted_early;
  atomic_ullong counters[C_COUNT];
  // Passthrough: negotiated at INIT (the unique of an INIT whose reply asks for it, while pending),
  // then per inode its backing id (0: none registered yet) and its opens' mode (> 0: that many in
  // passthrough, < 0: that many through the page cache); the kernel refuses to mix them (EIO to
  // the opener). Under `lock`.
  atomic_int passthrough;
  uint64_t init_unique;
  int32_t *backing;
  int32_t *open_modes;
  atomic_ullong passthrough_opens;
};

// Sets up `s` (its lock initialized, its table, store view, emit and host filled in by the caller)
// for a session at `mount_point` with libfuse `options`; -1 with a reason in `why` on failure.
// Either way, fuse_server_stop and fuse_server_free end it.
int fuse_server_init (struct fuse_server *s, const char *mount_point, const char *options, char *why, size_t why_size);
// Mounts and serves on a new thread (every signal blocked there); an errno on failure.
int fuse_server_start (struct fuse_server *s);
// Ends the loop, unmounts (lazily) and destroys the session; blocks until the thread has ended.
void fuse_server_stop (struct fuse_server *s);
void fuse_server_free (struct fuse_server *s);
// The forwarded request `id`, taken from the pending list; NULL if it was answered (an interrupt) or the server is stopping.
fuse_req_t fuse_server_claim (struct fuse_server *s, uint32_t id, struct pending *taken);
// Answers a claimed read with the store's bytes [start, start + length), spliced from the store
// file (a store that cannot be read answers the read with its errno); false (left unanswered) if
// they are not all local.
bool fuse_server_reply_from_store (struct fuse_server *s, fuse_req_t req, uint64_t ino, uint64_t start, size_t length);
// Answers a claimed open of `ino`: in passthrough if the file is complete and its inode allows.
void fuse_server_reply_open (struct fuse_server *s, fuse_req_t req, uint64_t ino);
// Whether this process may ask for FUSE passthrough (the kernel's backing files need CAP_SYS_ADMIN).
bool fuse_server_may_pass_through (void);
// Whether the kernel agreed to passthrough at INIT (and registering a backing file has not failed).
bool fuse_server_passes_through (struct fuse_server *s);
// Answers the forwarded read `id`, now local, from the store: true if answered from there or
// already answered (an interrupt); false if its bytes are not all local (then answered EIO).
bool fuse_server_reply_stored (struct fuse_server *s, uint32_t id);
#endif
