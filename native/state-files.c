#define _GNU_SOURCE
#include <string.h>
#include <unistd.h>
#include "state-files.h"

void json_escape (char *out, size_t size, const char *text) {
  size_t used = 0;
  for (; *text && used + 7 < size; text++) {
    unsigned char c = (unsigned char)*text;
    if (c == '"' || c == '\\') { out[used++] = '\\'; out[used++] = (char)c; }
    else if (c < 0x20) used += (size_t)snprintf(out + used, size - used, "\\u%04x", c);
    else out[used++] = (char)c;
  }
  out[used] = 0;
}

bool write_atomic (const char *file, bool exclusive, void (*write) (FILE *f, const void *arg), const void *arg) {
  char temp[4300];
  if ((size_t)snprintf(temp, sizeof temp, "%s.%d.tmp", file, (int)getpid()) >= sizeof temp) return false;
  FILE *f = fopen(temp, "w");
  if (!f) return false;
  write(f, arg);
  bool ok = fclose(f) == 0 && (exclusive ? link(temp, file) == 0 : rename(temp, file) == 0);
  if (exclusive || !ok) unlink(temp);
  return ok;
}

char *read_record (const char *file) {
  FILE *f = fopen(file, "r");
  if (!f) return NULL;
  static char buf[1 << 16];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  return strdup(buf);
}

struct failure { const char *code, *message, *hint; };

static void write_failure (FILE *f, const void *arg) {
  const struct failure *failure = arg;
  char code[64], message[4096], hint[2048];
  json_escape(code, sizeof code, failure->code);
  json_escape(message, sizeof message, failure->message);
  json_escape(hint, sizeof hint, failure->hint);
  fprintf(f, "{\"code\":\"%s\",\"message\":\"%s\",\"hint\":\"%s\"}", code, message, hint);
}

bool node_state_fail (const char *dir, const char *code, const char *message, const char *hint) {
  char file[4200];
  if ((size_t)snprintf(file, sizeof file, "%s/failed.json", dir) >= sizeof file) return false;
  struct failure failure = { code, message, hint };
  return write_atomic(file, true, write_failure, &failure);
}
