#include <string.h>
#include "bencode.h"

static bool decode (const uint8_t **at, const uint8_t *end, struct bval *out, int depth);

static bool digits (const uint8_t **at, const uint8_t *end, uint8_t stop, int64_t *value) {
  const uint8_t *p = *at;
  bool negative = false;
  if (p < end && *p == '-') { negative = true; p++; }
  const uint8_t *first = p;
  int64_t v = 0;
  while (p < end && *p >= '0' && *p <= '9') {
    if (v > (INT64_MAX - 9) / 10) return false;
    v = v * 10 + (*p++ - '0');
  }
  if (p == first || p >= end || *p != stop) return false;
  *value = negative ? -v : v;
  *at = p + 1;
  return true;
}

static bool decode (const uint8_t **at, const uint8_t *end, struct bval *out, int depth) {
  const uint8_t *p = *at;
  if (p >= end || depth > 64) return false;
  out->start = p;
  if (*p == 'i') {
    p++;
    if (!digits(&p, end, 'e', &out->i)) return false;
    out->kind = B_INT;
  } else if (*p >= '0' && *p <= '9') {
    int64_t n;
    if (!digits(&p, end, ':', &n) || n < 0 || n > end - p) return false;
    out->kind = B_STR;
    out->str = p;
    out->len = (size_t)n;
    p += n;
  } else if (*p == 'l' || *p == 'd') {
    out->kind = *p == 'l' ? B_LIST : B_DICT;
    p++;
    struct bval item;
    bool key = true;
    while (p < end && *p != 'e') {
      if (!decode(&p, end, &item, depth + 1)) return false;
      if (out->kind == B_DICT && key && item.kind != B_STR) return false;
      key = !key;
    }
    if (p >= end || (out->kind == B_DICT && !key)) return false;
    p++;
  } else {
    return false;
  }
  out->end = p;
  *at = p;
  return true;
}

bool bdecode (const uint8_t **at, const uint8_t *end, struct bval *out) {
  return decode(at, end, out, 0);
}

bool bnext (const struct bval *c, const uint8_t **at, struct bval *key, struct bval *value) {
  if (*at == NULL) *at = c->start + 1;
  if (*at >= c->end - 1) return false;
  if (c->kind == B_DICT && !bdecode(at, c->end - 1, key)) return false;
  return bdecode(at, c->end - 1, value);
}

bool bstr_is (const struct bval *v, const char *s) {
  size_t n = strlen(s);
  return v->kind == B_STR && v->len == n && memcmp(v->str, s, n) == 0;
}

bool bdict_get (const struct bval *dict, const char *key, struct bval *out) {
  if (dict->kind != B_DICT) return false;
  const uint8_t *at = NULL;
  struct bval k;
  while (bnext(dict, &at, &k, out)) if (bstr_is(&k, key)) return true;
  return false;
}
