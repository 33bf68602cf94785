#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>
#include "../fuse-session.h"
#include "agent.h"
#include "mount.h"
#include "mount-point.h"

#define KERNEL_CACHE_SECONDS 86400.0 // the content never changes (lib/agent.ts)

struct event {
  struct event *next;
  enum event_kind kind;
  uint32_t id, size;
  uint64_t ino, offset;
  char message[256];
};

struct waiting {
  uint32_t id;
  uint32_t first, last;  // the pieces it covers
  uint64_t since;
  uint32_t bytes;        // what it reads, clipped to the file
  bool open;             // an open in file mode, answered when the whole file is local
  uint64_t ino;          // what it reads or opens, for the line that says it failed
};

static struct fuse_server server;
static bool started, gone, fell_back;
static uint64_t read_errors, bytes_after_fetch; // as lib/fs.ts counts them: reads failed, bytes of reads that waited
static char *mount_point;
static uint8_t *present;          // a bit per piece, MSB first: the server reads it unlocked
static int *file_fds;             // per inode, the store's file of that file alone, or -1 (store.c)
static struct watch woken;        // an eventfd: the session thread has events for the loop
static pthread_mutex_t queue_lock = PTHREAD_MUTEX_INITIALIZER;
static struct event *queue_head, *queue_tail;
static struct waiting *waiting;
static size_t waiting_count, waiting_capacity;
static void (*mounted_callback) (const char *failure);

// On the session thread: queued for the loop, which the eventfd wakes.
static void emit (struct fuse_server *s, enum event_kind kind, uint32_t id, uint64_t ino, uint64_t offset, uint32_t size, const char *message) {
  (void)s;
  struct event *ev = calloc(1, sizeof *ev);
  if (!ev) return; // a read then waits for its caller's interrupt; nothing better to do without memory
  *ev = (struct event){ .kind = kind, .id = id, .ino = ino, .offset = offset, .size = size };
  if (message) snprintf(ev->message, sizeof ev->message, "%s", message);
  pthread_mutex_lock(&queue_lock);
  if (queue_tail) queue_tail->next = ev; else queue_head = ev;
  queue_tail = ev;
  pthread_mutex_unlock(&queue_lock);
  uint64_t one = 1;
  if (write(woken.fd, &one, sizeof one) < 0) {} // an eventfd write of 1 cannot fail
}

static bool all_present (uint32_t first, uint32_t last) {
  for (uint32_t i = first; i <= last; i++) if (!(present[i / 8] & (0x80 >> (i % 8)))) return false;
  return true;
}

static void answer (uint32_t id) {
  fuse_server_reply_stored(&server, id);
}

static void answer_open (uint32_t id) {
  struct pending taken;
  fuse_req_t req = fuse_server_claim(&server, id, &taken);
  if (req) fuse_server_reply_open(&server, req, taken.ino);
}

// A waiting read's or open's answer, once its pieces are local.
static void answer_waiting (const struct waiting *w) {
  if (w->open) { answer_open(w->id); return; }
  bytes_after_fetch += w->bytes;
  answer(w->id);
}

// Remembers a read (or a file-mode open) until pieces first..last are local; false (and ENOMEM
// answered) without memory.
static bool wait_for (uint32_t id, uint64_t ino, uint32_t first, uint32_t last, uint32_t bytes, bool open) {
  if (waiting_count == waiting_capacity) {
    size_t capacity = waiting_capacity ? 2 * waiting_capacity : 16;
    struct waiting *grown = realloc(waiting, capacity * sizeof *grown);
    if (!grown) { fuse_req_t req = fuse_server_claim(&server, id, NULL); if (req) fuse_reply_err(req, ENOMEM); return false; }
    waiting = grown;
    waiting_capacity = capacity;
  }
  waiting[waiting_count++] = (struct waiting){ id, first, last, now_ms(), bytes, open, ino };
  return true;
}

// A wait that cannot end: its request fails (EIO), counted as a read error.
static void fail (uint32_t id) {
  fuse_req_t req = fuse_server_claim(&server, id, NULL);
  if (req) fuse_reply_err(req, EIO);
  read_errors++;
}

static void on_read (uint32_t id, uint64_t ino, uint64_t offset, uint32_t size) {
  const struct inode *n = table_get(&server.table, ino);
  uint64_t start = n ? n->offset + offset : 0;
  if (!n || size == 0) { answer(id); return; }
  uint32_t first = (uint32_t)(start / job.desc.piece_length), last = (uint32_t)((start + size - 1) / job.desc.piece_length);
  if (all_present(first, last)) { answer(id); return; }
  if (swarm_store_full()) { fail(id); return; }
  uint64_t left = offset < n->size ? n->size - offset : 0;
  if (wait_for(id, ino, first, last, (uint32_t)(left < size ? left : size), false)) swarm_prioritize(first, last);
}

// A forwarded open, as lib/fs.ts's: eager mode moves the file to the front of the fetch; block
// mode asks for its first and last pieces at once (a loader reads both); file mode answers once
// the whole file is local (the paper's RAMDISK mode), and so does eager mode for a file the
// kernel will read from the store itself (passthrough): opened before it is complete, its reads
// would go through the page cache for as long as that open lives.
static void on_open (uint32_t id, uint64_t ino) {
  const struct inode *n = table_get(&server.table, ino);
  if (n && n->size > 0) {
    uint32_t first = (uint32_t)(n->offset / job.desc.piece_length), last = (uint32_t)((n->offset + n->size - 1) / job.desc.piece_length);
    if (job.mode == MODE_BLOCK) {
      swarm_prioritize(first, first);
      swarm_prioritize(last, last);
    } else {
      swarm_prioritize(first, last);
    }
    bool whole = job.mode == MODE_FILE || (job.mode == MODE_EAGER && file_fds && file_fds[ino] >= 0 && fuse_server_passes_through(&server));
    if (whole && !all_present(first, last)) {
      if (swarm_store_full()) { fail(id); return; }
      if (wait_for(id, ino, first, last, 0, true)) return;
    }
  }
  answer_open(id);
}

static void forget (uint32_t id) {
  for (size_t i = 0; i < waiting_count; i++) if (waiting[i].id == id) { waiting[i] = waiting[--waiting_count]; return; }
}

static void on_events (struct watch *w, uint32_t events) {
  (void)events;
  uint64_t count;
  if (read(w->fd, &count, sizeof count) < 0) {}
  pthread_mutex_lock(&queue_lock);
  struct event *ev = queue_head;
  queue_head = queue_tail = NULL;
  pthread_mutex_unlock(&queue_lock);
  while (ev) {
    struct event *next = ev->next;
    switch (ev->kind) {
      case EV_MOUNTED:
        mounted_callback(ev->size == 0 ? NULL : ev->message);
        break;
      case EV_READ: on_read(ev->id, ev->ino, ev->offset, ev->size); break;
      case EV_OPEN: on_open(ev->id, ev->ino); break;
      case EV_INTERRUPT: forget(ev->id); break;
      case EV_ENDED: gone = true; debug("the mount went away: %s", ev->message); break;
    }
    free(ev);
    ev = next;
  }
}

void mount_piece_verified (uint32_t index) {
  if (!present) return;
  __atomic_or_fetch(&present[index / 8], (uint8_t)(0x80 >> (index % 8)), __ATOMIC_RELEASE);
  for (size_t i = 0; i < waiting_count;) {
    if (waiting[i].first <= index && index <= waiting[i].last && all_present(waiting[i].first, waiting[i].last)) {
      struct waiting done = waiting[i];
      waiting[i] = waiting[--waiting_count];
      answer_waiting(&done);
    } else {
      i++;
    }
  }
}

// A read that waited stall-timeout with no block arriving: its pieces from the source directories
// if the launch gave them (once said), else EIO, as the Node agent does.
void mount_tick (uint64_t last_block_at) {
  uint64_t now = now_ms();
  for (size_t i = 0; i < waiting_count;) {
    uint64_t progress = last_block_at > waiting[i].since ? last_block_at : waiting[i].since;
    if (now - progress < job.stall_ms) { i++; continue; }
    struct waiting stalled = waiting[i];
    char why[300] = "";
    if (source_given() && swarm_from_source(&server.table, stalled.first, stalled.last, why, sizeof why) == 0) {
      if (!fell_back) fprintf(stderr, "p2prun-agent: the swarm stalled for %llu s: reading what programs wait for from the source directory instead\n",
        (unsigned long long)job.stall_ms / 1000);
      fell_back = true;
      // Its pieces are in: answered when the last was verified (with others: the list changed under us).
      for (size_t k = 0; k < waiting_count; k++) {
        if (waiting[k].id != stalled.id) continue;
        waiting[k] = waiting[--waiting_count];
        answer_waiting(&stalled);
        break;
      }
      i = 0;
      continue;
    }
    waiting[i] = waiting[--waiting_count];
    fail(stalled.id);
    // The line the Node agent writes for it (lib/fs.ts's onError, lib/swarm/node.ts's stalled).
    char rel[4096] = "";
    table_path(&server.table, (uint32_t)stalled.ino, rel, sizeof rel);
    int connected = 0;
    for (int k = 0; k < peer_count; k++) connected += peers[k]->phase == P_OPEN;
    fprintf(stderr, "p2prun-agent: %s /%s failed: no data arrived for %llu s (%d peer%s connected): the seeder is unreachable or the swarm is stuck%s%s "
      "(hint: check that `p2prun serve` is running on the head node and that its ports are reachable from this node)\n",
      stalled.open ? "open" : "read", rel, (unsigned long long)job.stall_ms / 1000, connected, connected == 1 ? "" : "s",
      *why ? ", and the source directory cannot stand in: " : "", why);
  }
}

void mount_fail_waiting (void) {
  while (waiting_count > 0) fail(waiting[--waiting_count].id);
}

const char *mount_path (void) {
  return mount_point;
}

// As `p2prun mount --stats` has them: the operations under "ops", then the rest.
void mount_counters_json (char *out, size_t size) {
  size_t used = (size_t)snprintf(out, size, "\"ops\":{");
  for (int c = 0; c < C_COUNT && used < size; c++) {
    used += (size_t)snprintf(out + used, size - used, "%s\"%s\":%llu", c == 0 || c == C_enoent ? "" : ",", fuse_counter_names[c],
      (unsigned long long)atomic_load_explicit(&server.counters[c], memory_order_relaxed));
    if (c == C_refused && used < size) used += (size_t)snprintf(out + used, size - used, "},");
  }
  if (used < size) snprintf(out + used, size - used, ",\"readErrors\":%llu,\"bytesServedAfterFetch\":%llu,\"passthroughOpens\":%llu",
    (unsigned long long)read_errors, (unsigned long long)bytes_after_fetch,
    (unsigned long long)atomic_load_explicit(&server.passthrough_opens, memory_order_relaxed));
}

bool mount_may_pass_through (void) {
  return fuse_server_may_pass_through();
}

bool mount_gone (void) {
  return gone;
}

int mount_start (const char *path, struct table *table, bool allow_other, void (*on_mounted) (const char *failure), char *error, size_t error_size) {
  server.table = *table; // the server's from here: fuse_server_free frees it
  mounted_callback = on_mounted;
  present = calloc((job.desc.piece_count + 7) / 8 + 1, 1);
  if (!present) { snprintf(error, error_size, "out of memory"); return -1; }
  // Absolute: libfuse and the mount tables name it so.
  char absolute[4096];
  if (path[0] != '/' && getcwd(absolute, sizeof absolute)) {
    size_t n = strlen(absolute);
    snprintf(absolute + n, sizeof absolute - n, "/%s", path);
  } else {
    snprintf(absolute, sizeof absolute, "%s", path);
  }
  if (mount_point_prepare(absolute, error, error_size) < 0) return -1;
  mount_point = strdup(absolute);
  woken = (struct watch){ .ready = on_events, .fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK) };
  if (woken.fd < 0 || loop_add(&woken, EPOLLIN) < 0) { snprintf(error, error_size, "no eventfd: %s", strerror(errno)); return -1; }
  char options[300], name[200];
  snprintf(name, sizeof name, "p2prun:%.*s", (int)job.desc.name.len, (const char *)job.desc.name.str);
  for (char *c = name; *c; c++) if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:@+-", *c)) *c = '_'; // libfuse splits on commas
  snprintf(options, sizeof options, "ro,fsname=%s,subtype=p2prun,default_permissions%s", name, allow_other ? ",allow_other" : "");
  pthread_mutex_init(&server.lock, NULL);
  server.emit = emit;
  server.cache_seconds = server.negative_seconds = KERNEL_CACHE_SECONDS;
  server.store_fd = store_fd;
  if (store_has_own_files()) {
    file_fds = malloc(((size_t)table->count + 1) * sizeof *file_fds);
    if (!file_fds) { snprintf(error, error_size, "out of memory"); return -1; }
    file_fds[0] = -1;
    for (uint32_t i = 1; i <= table->count; i++) {
      const struct inode *n = &table->inodes[i];
      file_fds[i] = S_ISREG(n->mode) ? store_file_of(n->offset, n->size) : -1;
    }
    server.file_fds = file_fds;
  }
  server.chunk_length = job.desc.piece_length;
  server.present = present;
  server.present_length = (job.desc.piece_count + 7) / 8;
  if (fuse_server_init(&server, mount_point, options, error, error_size) < 0) return -1;
  int failed = fuse_server_start(&server);
  if (failed) { snprintf(error, error_size, "cannot start the FUSE server: %s", strerror(failed)); return -1; }
  started = true;
  return 0;
}

void mount_stop (void) {
  if (started) fuse_server_stop(&server);
  started = false;
  fuse_server_free(&server);
  free(file_fds);
  file_fds = NULL;
  if (mount_point) mount_point_remove(mount_point);
  free(mount_point);
  mount_point = NULL;
}
