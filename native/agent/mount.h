// The set as a read-only file system: the FUSE server (../fuse-session.c) on its own thread
// answers what it can from the inode table and the store; what needs the swarm comes here, to
// the agent's loop, as an event: a read waits for the pieces it covers (asked for first), an
// open in eager mode moves its file's pieces to the front and returns at once (once the file is
// complete if the kernel will read it from the store itself: passthrough).
#ifndef P2PRUN_MOUNT_H
#define P2PRUN_MOUNT_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "../fuse-table.h"

// Starts the server of `table` (tree.c; the server owns it from here) for `mount_point`
// (mount-point.c: made if missing, removed at the end); the mount
// itself is reported later: on_mounted(NULL), or on_mounted(reason).
int mount_start (const char *mount_point, struct table *table, bool allow_other, void (*on_mounted) (const char *failure), char *error, size_t error_size);
// A piece passed its check: reads waiting for it are answered once all their pieces are in.
void mount_piece_verified (uint32_t index);
// Reads that waited this long with no block arriving fail (EIO), as the Node agent's do.
void mount_tick (uint64_t last_block_at);
// Every waiting read and open fails (EIO): the store refused a block (swarm.c), nothing more will come.
void mount_fail_waiting (void);
// Unmounts (lazily), stops the server and removes the mount point if p2prun made it.
void mount_stop (void);
// The absolute mount point.
const char *mount_path (void);
// The FUSE server's counts as JSON members ("lookup":N,...) into `out`.
void mount_counters_json (char *out, size_t size);
// Whether the mount went away from outside (then the agent ends).
bool mount_gone (void);
// Whether the kernel may be asked to read the set's files from the store's own files (FUSE
// passthrough): the store then gives large files files of their own (store.c).
bool mount_may_pass_through (void);
#endif
