// A bencode reader (BEP 3) over bytes in memory: values are spans of the input, nothing is
// copied or allocated, and every length is checked against the end, so a description or a
// tracker reply from anywhere cannot make it read out of bounds.
#ifndef P2PRUN_BENCODE_H
#define P2PRUN_BENCODE_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum bkind { B_INT, B_STR, B_LIST, B_DICT };

struct bval {
  enum bkind kind;
  const uint8_t *start, *end;   // the value's bytes, as they are (an info dictionary's SHA-1 is the infohash)
  int64_t i;                    // B_INT
  const uint8_t *str;           // B_STR
  size_t len;
};

// The value at *at (at most `end`), then *at past it; false on malformed input or nesting deeper than 64.
bool bdecode (const uint8_t **at, const uint8_t *end, struct bval *out);
// A dictionary's value under `key`; false if none (or the dictionary is malformed).
bool bdict_get (const struct bval *dict, const char *key, struct bval *out);
// The items of a list or the key-value pairs of a dictionary, in turn: *at starts at NULL.
bool bnext (const struct bval *container, const uint8_t **at, struct bval *key, struct bval *value);
bool bstr_is (const struct bval *v, const char *s);
#endif
