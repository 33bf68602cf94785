// A node's peer connection after its handshake, moved in C on Node's own event loop (libuv): the
// bytes of BitTorrent's messages are framed here, a block that answers one of our requests is
// written to its place in the node's store file (native/store-map.c) without passing through
// JavaScript, and what JS sends goes out at the end of each loop turn, a block we serve straight
// from the store file (sendfile, see send_now). JS keeps the policy: every other message, and a
// short "placed" record per block, reach it in one batch per connection per loop turn, in the
// wire format it already parses (lib/swarm/wire.ts).
//
// Why: a node agent's main thread spent most of its user CPU in Node's socket and stream machinery
// and in parsing around each read (bench/README.md, 2026-12-02): per read, a JS callback, a
// stream chunk, views and a copy; per write, a stream request. Here a read costs one callback of
// C, and JS is entered once per connection per turn.
//
// Blocks are written with pwrite from this module's read buffer, not copied into the mapping: the
// kernel then fills the store's pages through its own mapping of memory, and the agent never
// touches a fresh page of the store. On the emulated cluster's VM (a paravirtualized guest) the
// first touch of each 4 KiB page from user space costs ~6 us even once the kernel has mapped it:
// 0.08-0.1 CPU-s per agent for a 48.5 MB set, against ~0.01 s for the same bytes by pwrite
// (bench/README.md, 2026-12-03).
//
// Safety: a block lands in the store only if JS asked this peer for exactly it (`expect`) and the
// piece is not verified yet (the node's have bitfield, shared): a peer cannot write anywhere else,
// nor over a verified piece that the FUSE server hands to programs. A block asked for whose piece
// was verified meanwhile is reported as placed all the same: JS settles the request (or it would
// time out and drop the peer), and the bytes in the store are the verified ones. A message longer than the
// largest the wire accepts ends the connection; whatever else a peer sends is JS's to check.
// Part of p2prun's addon (addon.c), built by scripts/build.ts into dist/.
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
#include <node_api.h>
#include <uv.h>
#include "addon.h"

enum { MSG_PIECE = 7, MSG_REJECT = 16 };
// The record of a block placed in the store: an id no BitTorrent message uses; the same id from a
// peer is dropped here, so JS can trust it (lib/swarm/wire.ts: PLACED).
enum { MSG_PLACED = 0xff };
enum { PLACED_LENGTH = 13 };
// The receive low-water mark (see socket-low-water.c): wake for a block's rest once it is all in.
enum { LOW_WATER_MIN = 4096, LOW_WATER_MAX = 64 * 1024 };
enum { SHARED_MIN = 256 * 1024 };

typedef struct { uint32_t index, begin, length; } block_t;

typedef struct stream {
  uv_tcp_t tcp;
  napi_env env;
  napi_ref on_event, store_ref, have_ref;
  napi_async_context async;
  // The store's mapping (blocks served from it) and its file (blocks written to it).
  const uint8_t *store;
  size_t store_length;
  int store_fd;
  const uint8_t *have;
  size_t have_bytes;
  uint32_t piece_length, max_message;
  // Bytes of an unfinished message, kept between reads.
  uint8_t *pend;
  size_t pend_length, pend_cap;
  // A block whose rest is read and written to the store as it comes: where that rest goes, and how much.
  block_t placing;
  uint64_t place_at;
  uint32_t place_left;
  // Bytes of a piece message nobody asked for, still to be dropped.
  uint32_t skip_left;
  int low_water;
  // Blocks asked of this peer, not yet in.
  block_t *expected;
  size_t expected_count, expected_cap;
  // For JS: messages in wire format, delivered once per turn.
  uint8_t *inbox;
  size_t inbox_length, inbox_cap;
  // To send: byte ranges, each in `out_bytes` (copied) or in the store (a view).
  struct { const uint8_t *view; size_t offset, length; } *out;
  size_t out_count, out_cap;
  uint8_t *out_bytes;
  size_t out_bytes_length, out_bytes_cap;
  // Why the connection ended (set once), for JS.
  char ended[96];
  bool read_stopped, closing, uv_closed, released, ended_told;
  bool in_deliver, in_flush;
  struct stream *next_deliver, *next_flush;
} stream_t;

typedef struct {
  uv_write_t req;
  uint8_t *bytes;
  stream_t *stream;
} write_t;

// One event loop, one set of these: the agent's main thread.
static uv_check_t turn_end;
static uv_idle_t keep_turning;
static bool turn_ready;
static stream_t *deliver_list, *flush_list;
static uint8_t *shared;
static size_t shared_cap;

static void maybe_free(stream_t *s) {
  if (!s->uv_closed || !s->released || s->in_deliver || s->in_flush) return;
  free(s->pend);
  free(s->expected);
  free(s->inbox);
  free(s->out);
  free(s->out_bytes);
  free(s);
}

static bool grow(void **buf, size_t *cap, size_t need, size_t item) {
  if (need <= *cap) return true;
  size_t cap2 = *cap ? *cap : 16;
  while (cap2 < need) cap2 *= 2;
  void *p = realloc(*buf, cap2 * item);
  if (!p) return false;
  *buf = p;
  *cap = cap2;
  return true;
}

static uint32_t be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put32(uint8_t *p, uint32_t v) {
  p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v;
}

static void on_idle(uv_idle_t *handle) {
  (void)handle;
}

// An active idle handle keeps the loop from blocking in its poll: the turn ends, and on_turn_end runs.
static void wake(void) {
  uv_idle_start(&keep_turning, on_idle);
}

static void want_delivery(stream_t *s) {
  if (s->in_deliver) return;
  s->in_deliver = true;
  s->next_deliver = deliver_list;
  deliver_list = s;
  wake();
}

// Ends the connection from this side (the peer's fault, or the socket's): JS hears why at the end
// of the turn, after what arrived before.
static void end(stream_t *s, const char *why) {
  if (s->ended[0] || s->closing) return;
  snprintf(s->ended, sizeof s->ended, "%s", why);
  if (!s->read_stopped) {
    uv_read_stop((uv_stream_t *)&s->tcp);
    s->read_stopped = true;
  }
  want_delivery(s);
}

static bool to_inbox(stream_t *s, const uint8_t *bytes, size_t length) {
  if (!grow((void **)&s->inbox, &s->inbox_cap, s->inbox_length + length, 1)) return false;
  memcpy(s->inbox + s->inbox_length, bytes, length);
  s->inbox_length += length;
  return true;
}

// Writes `length` bytes at `at` in the store file; false (the connection ended, with why) if it failed.
static bool store_write(stream_t *s, const uint8_t *bytes, size_t length, uint64_t at) {
  while (length > 0) {
    ssize_t n = pwrite(s->store_fd, bytes, length, (off_t)at);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      char why[96];
      snprintf(why, sizeof why, "cannot write to the store: %s", n < 0 ? strerror(errno) : "no progress");
      end(s, why);
      return false;
    }
    bytes += n;
    length -= (size_t)n;
    at += (uint64_t)n;
  }
  return true;
}

static void placed(stream_t *s, block_t b) {
  uint8_t rec[4 + PLACED_LENGTH];
  put32(rec, PLACED_LENGTH);
  rec[4] = MSG_PLACED;
  put32(rec + 5, b.index);
  put32(rec + 9, b.begin);
  put32(rec + 13, b.length);
  if (!to_inbox(s, rec, sizeof rec)) end(s, "ran out of memory");
}

// Removes the expected block (index, begin, length); false if it was not expected.
static bool take_expected(stream_t *s, uint32_t index, uint32_t begin, uint32_t length) {
  for (size_t i = 0; i < s->expected_count; i++) {
    block_t *e = &s->expected[i];
    if (e->index == index && e->begin == begin && e->length == length) {
      *e = s->expected[--s->expected_count];
      return true;
    }
  }
  return false;
}

static bool verified(const stream_t *s, uint32_t index) {
  return (size_t)(index >> 3) < s->have_bytes && (s->have[index >> 3] & (0x80 >> (index & 7))) != 0;
}

static void set_low_water(stream_t *s, size_t missing) {
  int mark = missing >= LOW_WATER_MIN ? (int)(missing < LOW_WATER_MAX ? missing : LOW_WATER_MAX) : 1;
  if (mark == s->low_water) return;
  s->low_water = mark;
  uv_os_fd_t fd;
  if (uv_fileno((uv_handle_t *)&s->tcp, &fd) == 0) setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &mark, sizeof mark);
}

// Frames bytes [0, length) of `buf`: whole messages go to the inbox, a piece message that answers an
// expected block to the store; returns how many bytes were used (the rest is an unfinished message),
// and sets the low-water mark to what the next step needs.
static size_t frame(stream_t *s, const uint8_t *buf, size_t length) {
  size_t pos = 0;
  while (!s->ended[0]) {
    if (s->skip_left) {
      size_t n = length - pos < s->skip_left ? length - pos : s->skip_left;
      pos += n;
      s->skip_left -= (uint32_t)n;
      if (s->skip_left) { set_low_water(s, s->skip_left); return pos; }
    }
    size_t have = length - pos;
    if (have < 4) { set_low_water(s, 1); return pos; }
    uint32_t size = be32(buf + pos);
    if (size > s->max_message) {
      char why[64];
      snprintf(why, sizeof why, "sent a message of %u bytes", size);
      end(s, why);
      return pos;
    }
    if (size >= 9 && buf[pos + 4] == MSG_PIECE) {
      if (have < 13) { set_low_water(s, 1); return pos; }
      block_t b = { be32(buf + pos + 5), be32(buf + pos + 9), size - 9 };
      size_t body = have - 13 < b.length ? have - 13 : b.length;
      uint64_t at = (uint64_t)b.index * s->piece_length + b.begin;
      pos += 13;
      bool asked = at + b.length <= s->store_length && take_expected(s, b.index, b.begin, b.length);
      if (asked && !verified(s, b.index)) {
        if (!store_write(s, buf + pos, body, at)) return pos;
        pos += body;
        if (body == b.length) { placed(s, b); continue; }
        s->placing = b;
        s->place_at = at + body;
        s->place_left = b.length - (uint32_t)body;
        set_low_water(s, s->place_left);
        return pos;
      }
      // Not asked for, or given up on: dropped, as the JS wire drops it. Asked for, but the piece
      // was verified meanwhile (its blocks also asked of another peer): dropped too, and JS told,
      // so the request is settled; the store already holds those bytes.
      if (asked) placed(s, b);
      s->skip_left = b.length;
      continue;
    }
    if (have < 4 + (size_t)size) { set_low_water(s, 4 + size - have); return pos; }
    uint8_t id = size > 0 ? buf[pos + 4] : 0;
    // A reject settles its request here too, so a late block for it is not placed.
    if (id == MSG_REJECT && size == 13) take_expected(s, be32(buf + pos + 5), be32(buf + pos + 9), be32(buf + pos + 13));
    if (!(size > 0 && id == MSG_PLACED) && !to_inbox(s, buf + pos, 4 + size)) end(s, "ran out of memory");
    pos += 4 + size;
  }
  return pos;
}

// Makes `shared` hold the unfinished message and at least `n` more bytes (and a whole message).
static bool room(const stream_t *s, size_t n) {
  size_t need = s->pend_length + n;
  if (need < 2 * (4 + (size_t)s->max_message)) need = 2 * (4 + (size_t)s->max_message);
  if (need <= shared_cap) return true;
  uint8_t *p = realloc(shared, need);
  if (!p) return false;
  shared = p;
  shared_cap = need;
  return true;
}

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  stream_t *s = handle->data;
  // A block's rest: into the read buffer (nothing unfinished is kept there meanwhile: the block's
  // header and first bytes were the last of the previous read), then to the store.
  if (s->place_left) {
    if (!room(s, 0)) { *buf = uv_buf_init(NULL, 0); return; }
    *buf = uv_buf_init((char *)shared, s->place_left < shared_cap ? s->place_left : (unsigned)shared_cap);
    return;
  }
  // Reads land after the unfinished message's bytes, copied in front of them in take(): one
  // buffer for every connection, and a message's bytes always contiguous.
  if (!room(s, SHARED_MIN)) { *buf = uv_buf_init(NULL, 0); return; }
  *buf = uv_buf_init((char *)shared + s->pend_length, (unsigned)(shared_cap - s->pend_length));
}

// `n` new bytes lie in `shared` after room for the unfinished message's: framed with them.
static void take(stream_t *s, size_t n) {
  // (memcpy of nothing is skipped: `pend` is NULL until a message is first left unfinished.)
  if (s->pend_length) memcpy(shared, s->pend, s->pend_length);
  size_t length = s->pend_length + n;
  size_t used = frame(s, shared, length);
  size_t rest = length - used;
  if (grow((void **)&s->pend, &s->pend_cap, rest, 1)) {
    if (rest) memcpy(s->pend, shared + used, rest);
    s->pend_length = rest;
  } else {
    end(s, "ran out of memory");
  }
  if (s->inbox_length) want_delivery(s);
}

static void on_read(uv_stream_t *handle, ssize_t nread, const uv_buf_t *buf) {
  (void)buf;
  stream_t *s = handle->data;
  if (nread == 0) return;
  if (nread < 0) {
    end(s, nread == UV_EOF ? "closed" : nread == UV_ENOBUFS ? "ran out of memory" : uv_strerror((int)nread));
    return;
  }
  if (!s->place_left) return take(s, (size_t)nread);
  if (!store_write(s, shared, (size_t)nread, s->place_at)) return;
  s->place_at += (uint64_t)nread;
  s->place_left -= (uint32_t)nread;
  set_low_water(s, s->place_left ? s->place_left : 1);
  if (s->place_left) return;
  placed(s, s->placing);
  want_delivery(s);
}

static void on_written(uv_write_t *req, int status) {
  write_t *w = (write_t *)req;
  stream_t *s = w->stream;
  free(w->bytes);
  free(w);
  if (status < 0 && status != UV_ECANCELED && !s->closing) end(s, uv_strerror(status));
}

// Sends the queue's entries in order, while nothing of libuv's is queued before them (its write
// queue is empty): bytes by sendmsg, several entries gathered, with MSG_MORE when more follows,
// so a piece's 13-byte header leaves in the same segment as its block; a block from the
// store by sendfile, so the kernel hands the store's page-cache pages to TCP: no copy into the
// socket's buffer, and the agent never touches those pages (each first touch costs ~6 us on the
// bench's paravirtualized VM). Stops at the first short write (the socket's buffer is full) and
// trims that entry to its unsent rest; returns the index of the first entry not wholly sent, or
// SIZE_MAX if the connection failed (ended, with why).
enum { GATHER = 64 };
static size_t send_now(stream_t *s, int fd) {
  size_t i = 0;
  while (i < s->out_count) {
    ssize_t n;
    size_t want;
    if (s->out[i].view) {
      off_t at = (off_t)(s->out[i].view - s->store);
      want = s->out[i].length;
      n = sendfile(fd, s->store_fd, &at, want);
    } else {
      struct iovec iov[GATHER];
      size_t k = 0;
      want = 0;
      while (i + k < s->out_count && k < GATHER && !s->out[i + k].view) {
        iov[k].iov_base = s->out_bytes + s->out[i + k].offset;
        iov[k].iov_len = s->out[i + k].length;
        want += iov[k].iov_len;
        k++;
      }
      struct msghdr msg = { .msg_iov = iov, .msg_iovlen = k };
      n = sendmsg(fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL | (i + k < s->out_count ? MSG_MORE : 0));
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return i;
      end(s, strerror(errno));
      return SIZE_MAX;
    }
    // Entries wholly sent, then the rest of the one cut short.
    size_t sent = (size_t)n;
    while (sent && sent >= s->out[i].length) sent -= s->out[i++].length;
    if ((size_t)n < want) {
      if (s->out[i].view) s->out[i].view += sent;
      else s->out[i].offset += sent;
      s->out[i].length -= sent;
      return i;
    }
  }
  return i;
}

static void flush(stream_t *s) {
  if (s->out_count == 0 || s->closing || s->ended[0]) return;
  size_t first = 0;
  int fd;
  if (uv_stream_get_write_queue_size((uv_stream_t *)&s->tcp) == 0 && uv_fileno((uv_handle_t *)&s->tcp, &fd) == 0) {
    first = send_now(s, fd);
    if (first == SIZE_MAX) return;
  }
  if (first == s->out_count) {
    s->out_count = 0;
    s->out_bytes_length = 0;
    return;
  }
  // The rest waits in libuv's queue until the socket takes it.
  size_t count = s->out_count - first;
  uv_buf_t *bufs = malloc(count * sizeof *bufs);
  write_t *w = malloc(sizeof *w);
  if (!bufs || !w) {
    free(bufs);
    free(w);
    end(s, "ran out of memory");
    return;
  }
  for (size_t i = 0; i < count; i++) {
    const uint8_t *base = s->out[first + i].view ? s->out[first + i].view : s->out_bytes + s->out[first + i].offset;
    bufs[i] = uv_buf_init((char *)base, (unsigned)s->out[first + i].length);
  }
  // The copied bytes now belong to the write; the views stay valid while the store is referenced.
  w->bytes = s->out_bytes;
  w->stream = s;
  int err = uv_write(&w->req, (uv_stream_t *)&s->tcp, bufs, (unsigned)count, on_written);
  free(bufs);
  s->out_bytes = NULL;
  s->out_bytes_length = s->out_bytes_cap = 0;
  s->out_count = 0;
  if (err) {
    free(w->bytes);
    free(w);
    end(s, uv_strerror(err));
  }
}

static void tell_js(stream_t *s) {
  napi_env env = s->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value fn, argv[2], recv, result;
  napi_get_undefined(env, &argv[0]);
  napi_get_undefined(env, &argv[1]);
  if (s->inbox_length) {
    void *data;
    if (napi_create_buffer_copy(env, s->inbox_length, s->inbox, &data, &argv[0]) == napi_ok) s->inbox_length = 0;
  }
  if (s->ended[0] && !s->ended_told) {
    s->ended_told = true;
    napi_create_string_utf8(env, s->ended, NAPI_AUTO_LENGTH, &argv[1]);
  }
  napi_get_global(env, &recv);
  // make_callback, not call_function: the promises and ticks JS queues run as after any I/O callback.
  if (napi_get_reference_value(env, s->on_event, &fn) == napi_ok && fn) {
    if (napi_make_callback(env, s->async, recv, fn, 2, argv, &result) == napi_pending_exception) {
      napi_value ignored;
      napi_get_and_clear_last_exception(env, &ignored);
    }
  }
  napi_close_handle_scope(env, scope);
}

// The end of each loop turn that had work: JS hears what arrived, then what it sent goes out.
static void on_turn_end(uv_check_t *handle) {
  (void)handle;
  while (deliver_list) {
    stream_t *s = deliver_list;
    deliver_list = s->next_deliver;
    s->in_deliver = false;
    if (!s->closing && (s->inbox_length || (s->ended[0] && !s->ended_told))) tell_js(s);
    maybe_free(s);
  }
  while (flush_list) {
    stream_t *s = flush_list;
    flush_list = s->next_flush;
    s->in_flush = false;
    flush(s);
    maybe_free(s);
  }
  if (!deliver_list && !flush_list) uv_idle_stop(&keep_turning);
}

static void on_closed(uv_handle_t *handle) {
  stream_t *s = handle->data;
  napi_delete_reference(s->env, s->on_event);
  napi_delete_reference(s->env, s->store_ref);
  napi_delete_reference(s->env, s->have_ref);
  napi_async_destroy(s->env, s->async);
  s->uv_closed = true;
  maybe_free(s);
}

static void close_stream(stream_t *s) {
  if (s->closing) return;
  s->closing = true;
  uv_close((uv_handle_t *)&s->tcp, on_closed);
}

static void on_released(napi_env env, void *data, void *hint) {
  (void)env; (void)hint;
  stream_t *s = data;
  close_stream(s);
  s->released = true;
  maybe_free(s);
}

static void on_env_exit(void *arg) {
  (void)arg;
  uv_close((uv_handle_t *)&turn_end, NULL);
  uv_close((uv_handle_t *)&keep_turning, NULL);
  turn_ready = false;
}

static bool args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  return napi_get_cb_info(env, info, &argc, argv, NULL, NULL) == napi_ok && argc == want;
}

static stream_t *stream_of(napi_env env, napi_value v) {
  void *p = NULL;
  return napi_get_value_external(env, v, &p) == napi_ok ? p : NULL;
}

static napi_value fail(napi_env env, const char *message) {
  napi_throw_error(env, NULL, message);
  return NULL;
}

static bool buffer_of(napi_env env, napi_value v, void **data, size_t *length) {
  bool is;
  if (napi_is_buffer(env, v, &is) == napi_ok && is) return napi_get_buffer_info(env, v, data, length) == napi_ok;
  napi_typedarray_type type;
  napi_value ab;
  size_t offset;
  return napi_is_typedarray(env, v, &is) == napi_ok && is &&
    napi_get_typedarray_info(env, v, &type, length, data, &ab, &offset) == napi_ok && type == napi_uint8_array;
}

static void free_handle(uv_handle_t *handle) {
  free(handle->data);
}

// adoptPeerSocket(fd, initial, store, storeFd, pieceLength, have, maxMessage, onEvent): takes over
// a duplicate of a connected TCP socket's descriptor (the caller then closes its own); `initial`:
// bytes already read from it, framed first; `store` maps the file `storeFd` (mapStore). onEvent(inbox, ended): an inbox of messages (Buffer)
// or undefined, and why the connection ended (once) or undefined.
static napi_value adopt(napi_env env, napi_callback_info info) {
  napi_value argv[8];
  int32_t fd, store_fd;
  uint32_t piece_length, max_message;
  void *initial, *store, *have;
  size_t initial_length, store_length, have_bytes;
  napi_valuetype fn_type;
  if (!args(env, info, 8, argv) || napi_get_value_int32(env, argv[0], &fd) != napi_ok || !buffer_of(env, argv[1], &initial, &initial_length) ||
      !buffer_of(env, argv[2], &store, &store_length) || napi_get_value_int32(env, argv[3], &store_fd) != napi_ok ||
      napi_get_value_uint32(env, argv[4], &piece_length) != napi_ok ||
      !buffer_of(env, argv[5], &have, &have_bytes) || napi_get_value_uint32(env, argv[6], &max_message) != napi_ok ||
      napi_typeof(env, argv[7], &fn_type) != napi_ok || fn_type != napi_function || piece_length == 0) {
    napi_throw_type_error(env, NULL, "adoptPeerSocket(fd, initial, store, storeFd, pieceLength, have, maxMessage, onEvent)");
    return NULL;
  }
  uv_loop_t *loop;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) return fail(env, "no event loop");
  if (!turn_ready) {
    uv_check_init(loop, &turn_end);
    uv_idle_init(loop, &keep_turning);
    uv_check_start(&turn_end, on_turn_end);
    uv_unref((uv_handle_t *)&turn_end);
    uv_unref((uv_handle_t *)&keep_turning);
    napi_add_env_cleanup_hook(env, on_env_exit, NULL);
    turn_ready = true;
  }
  int own = dup(fd);
  if (own < 0) return fail(env, strerror(errno));
  stream_t *s = calloc(1, sizeof *s);
  if (!s) { close(own); return fail(env, "out of memory"); }
  s->env = env;
  s->store = store;
  s->store_length = store_length;
  s->store_fd = store_fd;
  s->have = have;
  s->have_bytes = have_bytes;
  s->piece_length = piece_length;
  s->max_message = max_message;
  s->low_water = -1;
  s->tcp.data = s;
  napi_value name, handle;
  int err = uv_tcp_init(loop, &s->tcp);
  if (err != 0) {
    close(own);
    free(s);
    return fail(env, uv_strerror(err));
  }
  if ((err = uv_tcp_open(&s->tcp, own)) != 0) {
    close(own);
    uv_close((uv_handle_t *)&s->tcp, free_handle);
    return fail(env, uv_strerror(err));
  }
  napi_create_reference(env, argv[7], 1, &s->on_event);
  napi_create_reference(env, argv[2], 1, &s->store_ref);
  napi_create_reference(env, argv[5], 1, &s->have_ref);
  napi_create_string_utf8(env, "p2prun:peer", NAPI_AUTO_LENGTH, &name);
  napi_async_init(env, NULL, name, &s->async);
  if (napi_create_external(env, s, on_released, NULL, &handle) != napi_ok) {
    close_stream(s);
    s->released = true;
    return NULL;
  }
  uv_tcp_nodelay(&s->tcp, 1);
  if (initial_length) {
    if (!room(s, initial_length)) return fail(env, "out of memory");
    memcpy(shared, initial, initial_length);
    take(s, initial_length);
  }
  err = s->ended[0] ? 0 : uv_read_start((uv_stream_t *)&s->tcp, on_alloc, on_read);
  if (err) end(s, uv_strerror(err));
  return handle;
}

// peerWrite(stream, bytes): queued for the end of the turn; bytes inside the store are sent from
// there (the store stays mapped while the stream lives), any others copied.
static napi_value peer_write(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  void *data;
  size_t length;
  stream_t *s;
  if (!args(env, info, 2, argv) || !(s = stream_of(env, argv[0])) || !buffer_of(env, argv[1], &data, &length)) {
    napi_throw_type_error(env, NULL, "peerWrite(stream, bytes)");
    return NULL;
  }
  if (s->closing || s->ended[0] || length == 0) return NULL;
  if (!grow((void **)&s->out, &s->out_cap, s->out_count + 1, sizeof *s->out)) return fail(env, "out of memory");
  const uint8_t *p = data;
  uintptr_t at = (uintptr_t)p, store = (uintptr_t)s->store;
  bool in_store = at >= store && at + length <= store + s->store_length;
  if (in_store) {
    s->out[s->out_count].view = p;
  } else {
    if (!grow((void **)&s->out_bytes, &s->out_bytes_cap, s->out_bytes_length + length, 1)) return fail(env, "out of memory");
    memcpy(s->out_bytes + s->out_bytes_length, p, length);
    s->out[s->out_count].view = NULL;
    s->out[s->out_count].offset = s->out_bytes_length;
    s->out_bytes_length += length;
  }
  s->out[s->out_count++].length = length;
  if (!s->in_flush) {
    s->in_flush = true;
    s->next_flush = flush_list;
    flush_list = s;
    wake();
  }
  return NULL;
}

// peerExpect(stream, index, begin, length): a block asked of this peer, to be placed when it comes.
static napi_value peer_expect(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  uint32_t n[3];
  stream_t *s;
  if (!args(env, info, 4, argv) || !(s = stream_of(env, argv[0])) || napi_get_value_uint32(env, argv[1], &n[0]) != napi_ok ||
      napi_get_value_uint32(env, argv[2], &n[1]) != napi_ok || napi_get_value_uint32(env, argv[3], &n[2]) != napi_ok) {
    napi_throw_type_error(env, NULL, "peerExpect(stream, index, begin, length)");
    return NULL;
  }
  if (!grow((void **)&s->expected, &s->expected_cap, s->expected_count + 1, sizeof *s->expected)) return fail(env, "out of memory");
  s->expected[s->expected_count++] = (block_t){ n[0], n[1], n[2] };
  return NULL;
}

// The stream of a call that takes only it; NULL with a TypeError thrown if it is not one.
static stream_t *only_stream(napi_env env, napi_callback_info info, const char *usage) {
  napi_value argv[1];
  stream_t *s;
  if (args(env, info, 1, argv) && (s = stream_of(env, argv[0]))) return s;
  napi_throw_type_error(env, NULL, usage);
  return NULL;
}

// peerForget(stream): no block asked of this peer is placed any more (timed out, choked).
static napi_value peer_forget(napi_env env, napi_callback_info info) {
  stream_t *s = only_stream(env, info, "peerForget(stream)");
  if (s) s->expected_count = 0;
  return NULL;
}

// peerClose(stream): ends the connection now; JS hears nothing more of it.
static napi_value peer_close(napi_env env, napi_callback_info info) {
  stream_t *s = only_stream(env, info, "peerClose(stream)");
  if (s) close_stream(s);
  return NULL;
}

napi_value register_peer_stream(napi_env env, napi_value exports) {
  static const struct { const char *name; napi_callback fn; } fns[] = {
    { "adoptPeerSocket", adopt }, { "peerWrite", peer_write }, { "peerExpect", peer_expect },
    { "peerForget", peer_forget }, { "peerClose", peer_close },
  };
  for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
    if (!add_function(env, exports, fns[i].name, fns[i].fn)) return NULL;
  }
  return exports;
}
