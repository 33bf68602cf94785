// Base64 (RFC 4648) decoding for the native programs: the job spec (P2PRUN_JOB, base64url of its
// JSON, lib/session/job-spec.ts) and the description it may carry (base64 of raw deflate).
#ifndef P2PRUN_BASE64_H
#define P2PRUN_BASE64_H
#include <stdbool.h>
#include <stddef.h>

// `in` decoded (`url`: the URL-safe alphabet), NUL-terminated, its length in `size`; NULL if it
// is not base64 or memory ran out. Padding is optional.
char *base64_decode (const char *in, bool url, size_t *size);
#endif
