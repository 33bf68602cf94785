#include <stdlib.h>
#include <string.h>
#include "base64.h"

char *base64_decode (const char *in, bool url, size_t *size) {
  size_t n = strlen(in);
  char *out = malloc(n * 3 / 4 + 4);
  if (!out) return NULL;
  unsigned bits = 0, have = 0;
  size_t o = 0;
  for (const char *p = in; *p && *p != '='; p++) {
    char c = *p;
    int v = c >= 'A' && c <= 'Z' ? c - 'A' : c >= 'a' && c <= 'z' ? c - 'a' + 26 : c >= '0' && c <= '9' ? c - '0' + 52 :
      c == (url ? '-' : '+') ? 62 : c == (url ? '_' : '/') ? 63 : -1;
    if (v < 0) { free(out); return NULL; }
    bits = bits << 6 | (unsigned)v;
    have += 6;
    if (have >= 8) { have -= 8; out[o++] = (char)(bits >> have & 0xff); }
  }
  out[o] = 0;
  *size = o;
  return out;
}
