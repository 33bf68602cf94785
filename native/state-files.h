// Files other processes read, written whole: the native agent's ready file and stats, and the node
// state's records (lib/session/node-state.ts), which two C programs write: the rank step
// (native/rank-step.c) and the native node agent (native/agent/node-agent.c).
#ifndef P2PRUN_STATE_FILES_H
#define P2PRUN_STATE_FILES_H
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

// `text` as a JSON string's contents (quotes, backslashes and control characters escaped).
void json_escape (char *out, size_t size, const char *text);
// `file` written by `write` aside, then put in place: renamed, or linked where the first one must
// win (`exclusive`: the file is kept if it is there); false if it could not be.
bool write_atomic (const char *file, bool exclusive, void (*write) (FILE *f, const void *arg), const void *arg);
// A record read whole (up to 64 KiB), NUL-terminated and the caller's to free; NULL if there is none.
char *read_record (const char *file);
// The node's failure record, DIR/failed.json ({code, message, hint}, node-state.ts's
// FailureRecord), unless one is there: the first failure is the one the ranks report.
bool node_state_fail (const char *dir, const char *code, const char *message, const char *hint);
#endif
