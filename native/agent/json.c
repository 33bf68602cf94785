#include "json.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 16

struct reader { const char *at; };

static void skip_space (struct reader *r) {
  while (*r->at == ' ' || *r->at == '\t' || *r->at == '\n' || *r->at == '\r') r->at++;
}

static int hex4 (const char *at) {
  int v = 0;
  for (int i = 0; i < 4; i++) {
    char c = at[i];
    int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
    if (d < 0) return -1;
    v = v << 4 | d;
  }
  return v;
}

static size_t put_utf8 (char *out, uint32_t cp) {
  if (cp < 0x80) { out[0] = (char)cp; return 1; }
  if (cp < 0x800) { out[0] = (char)(0xc0 | cp >> 6); out[1] = (char)(0x80 | (cp & 0x3f)); return 2; }
  if (cp < 0x10000) { out[0] = (char)(0xe0 | cp >> 12); out[1] = (char)(0x80 | (cp >> 6 & 0x3f)); out[2] = (char)(0x80 | (cp & 0x3f)); return 3; }
  out[0] = (char)(0xf0 | cp >> 18); out[1] = (char)(0x80 | (cp >> 12 & 0x3f)); out[2] = (char)(0x80 | (cp >> 6 & 0x3f)); out[3] = (char)(0x80 | (cp & 0x3f));
  return 4;
}

// A string literal at r->at (its opening quote), unescaped; NULL if malformed.
static char *read_string (struct reader *r) {
  const char *p = r->at + 1;
  size_t length = 0;
  while (p[length] && p[length] != '"') length += p[length] == '\\' && p[length + 1] ? 2 : 1;
  if (p[length] != '"') return NULL;
  char *out = malloc(length + 1), *o = out; // an escape never grows: \uXXXX is 6 bytes for at most 4
  if (!out) return NULL;
  while (*p != '"') {
    unsigned char c = (unsigned char)*p++;
    if (c < 0x20) goto bad;
    if (c != '\\') { *o++ = (char)c; continue; }
    char e = *p++;
    switch (e) {
      case '"': case '\\': case '/': *o++ = e; break;
      case 'b': *o++ = '\b'; break;
      case 'f': *o++ = '\f'; break;
      case 'n': *o++ = '\n'; break;
      case 'r': *o++ = '\r'; break;
      case 't': *o++ = '\t'; break;
      case 'u': {
        int cp = hex4(p);
        if (cp <= 0) goto bad; // a NUL cannot be in a C string
        p += 4;
        if (cp >= 0xd800 && cp < 0xdc00) {
          int low = p[0] == '\\' && p[1] == 'u' ? hex4(p + 2) : -1;
          if (low < 0xdc00 || low >= 0xe000) goto bad;
          cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
          p += 6;
        } else if (cp >= 0xdc00 && cp < 0xe000) goto bad;
        o += put_utf8(o, (uint32_t)cp);
        break;
      }
      default: goto bad;
    }
  }
  *o = 0;
  r->at = p + 1;
  return out;
bad:
  free(out);
  return NULL;
}

static bool read_value (struct reader *r, struct json *v, int depth);

static bool grow (struct json *v, size_t *capacity, bool keyed) {
  if (v->count < *capacity) return true;
  size_t n = *capacity ? 2 * *capacity : 8;
  struct json *items = realloc(v->items, n * sizeof *items);
  if (!items) return false;
  v->items = items;
  if (keyed) {
    char **keys = realloc(v->keys, n * sizeof *keys);
    if (!keys) return false;
    v->keys = keys;
  }
  *capacity = n;
  return true;
}

// The items of an array or the members of an object, after its opening bracket.
static bool read_items (struct reader *r, struct json *v, int depth, bool keyed) {
  char close = keyed ? '}' : ']';
  size_t capacity = 0;
  r->at++;
  skip_space(r);
  if (*r->at == close) { r->at++; return true; }
  for (;;) {
    if (!grow(v, &capacity, keyed)) return false;
    skip_space(r);
    if (keyed) {
      if (*r->at != '"') return false;
      char *key = read_string(r);
      if (!key) return false;
      v->keys[v->count] = key;
      skip_space(r);
      if (*r->at++ != ':') { free(key); return false; }
    }
    memset(&v->items[v->count], 0, sizeof v->items[0]);
    bool ok = read_value(r, &v->items[v->count], depth + 1);
    v->count++; // counted even when malformed: json_free frees what it got
    if (!ok) return false;
    skip_space(r);
    if (*r->at == ',') { r->at++; continue; }
    if (*r->at == close) { r->at++; return true; }
    return false;
  }
}

static bool read_value (struct reader *r, struct json *v, int depth) {
  if (depth > MAX_DEPTH) return false;
  skip_space(r);
  const char *at = r->at;
  if (*at == '"') { v->kind = JSON_STRING; return (v->string = read_string(r)) != NULL; }
  if (*at == '{') { v->kind = JSON_OBJECT; return read_items(r, v, depth, true); }
  if (*at == '[') { v->kind = JSON_ARRAY; return read_items(r, v, depth, false); }
  if (strncmp(at, "true", 4) == 0) { v->kind = JSON_BOOL; v->boolean = true; r->at += 4; return true; }
  if (strncmp(at, "false", 5) == 0) { v->kind = JSON_BOOL; r->at += 5; return true; }
  if (strncmp(at, "null", 4) == 0) { v->kind = JSON_NULL; r->at += 4; return true; }
  if (*at == '-' || (*at >= '0' && *at <= '9')) {
    char *end;
    v->kind = JSON_NUMBER;
    v->number = strtod(at, &end);
    r->at = end;
    return end != at;
  }
  return false;
}

static void free_members (struct json *v) {
  free(v->string);
  for (size_t i = 0; i < v->count; i++) {
    free_members(&v->items[i]);
    if (v->keys) free(v->keys[i]);
  }
  free(v->items);
  free(v->keys);
}

struct json *json_parse (const char *text) {
  struct reader r = { text };
  struct json *v = calloc(1, sizeof *v);
  if (!v) return NULL;
  bool ok = read_value(&r, v, 0);
  skip_space(&r);
  if (ok && *r.at == 0) return v;
  json_free(v);
  return NULL;
}

void json_free (struct json *v) {
  if (!v) return;
  free_members(v);
  free(v);
}

const struct json *json_member (const struct json *object, const char *key) {
  if (!object || object->kind != JSON_OBJECT) return NULL;
  for (size_t i = 0; i < object->count; i++) if (strcmp(object->keys[i], key) == 0) return &object->items[i];
  return NULL;
}

const char *json_string (const struct json *object, const char *key) {
  const struct json *v = json_member(object, key);
  return v && v->kind == JSON_STRING ? v->string : NULL;
}
