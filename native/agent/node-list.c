// A launch's node list and node-list.ts's policy for it, in C (node-list.h says whose they are).
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "node-list.h"

#define RANDOM_PEERS 3     // node-list.ts's: drawn besides the ring neighbours
#define HEAD_DIALERS 32    // node-list.ts's: nodes that dial the head, spread over the list
#define MAX_NODES 1000000  // launch-nodes.ts's bound on one range

struct names { char **v; int n, cap; };

static bool push (struct names *s, char *name) {
  if (!name) return false;
  if (s->n == MAX_NODES) { free(name); return false; }
  if (s->n == s->cap) {
    char **grown = realloc(s->v, (size_t)(s->cap = s->cap ? 2 * s->cap : 64) * sizeof *s->v);
    if (!grown) { free(name); return false; }
    s->v = grown;
  }
  s->v[s->n++] = name;
  return true;
}

static void drop (struct names *s) {
  for (int i = 0; i < s->n; i++) free(s->v[i]);
  free(s->v);
  *s = (struct names){ 0 };
}

// One item of a hostlist ("r[1-2]n[01-02]"): its first bracket's numbers, each before every
// expansion of the rest; a range keeps its first number's zero padding (launch-nodes.ts's expandName).
static bool expand_name (const char *name, size_t length, struct names *out) {
  const char *open = memchr(name, '[', length);
  if (!open) {
    if (memchr(name, ']', length)) return false;
    return push(out, strndup(name, length));
  }
  const char *close = memchr(open, ']', length - (size_t)(open - name));
  if (!close) return false;
  struct names rest = { 0 };
  if (!expand_name(close + 1, length - (size_t)(close + 1 - name), &rest)) { drop(&rest); return false; }
  bool ok = true;
  for (const char *part = open + 1; ok && part < close;) {
    const char *end = memchr(part, ',', (size_t)(close - part));
    if (!end) end = close;
    while (part < end && isspace((unsigned char)*part)) part++;
    const char *last = end;
    while (last > part && isspace((unsigned char)last[-1])) last--;
    char *stop;
    unsigned long from = strtoul(part, &stop, 10), to = from;
    int width = (int)(stop - part);
    if (width == 0 || !isdigit((unsigned char)*part)) ok = false;
    else if (stop < last && *stop == '-') {
      const char *second = stop + 1;
      to = strtoul(second, &stop, 10);
      if (stop == second || !isdigit((unsigned char)*second)) ok = false;
    }
    if (ok && (stop != last || to < from || to - from > MAX_NODES)) ok = false;
    for (unsigned long k = from; ok && k <= to; k++) {
      for (int r = 0; ok && r < rest.n; r++) {
        char *full;
        ok = asprintf(&full, "%.*s%0*lu%s", (int)(open - name), name, width, k, rest.v[r]) >= 0 && push(out, full);
      }
    }
    part = end + 1;
  }
  drop(&rest);
  return ok;
}

// Slurm's hostlist, expanded in order: names separated by commas outside brackets.
static bool expand_hostlist (const char *expr, struct names *out) {
  int depth = 0;
  const char *start = expr;
  for (const char *c = expr;; c++) {
    if (*c == '[') depth++;
    else if (*c == ']') depth--;
    if ((*c == ',' && depth == 0) || !*c) {
      const char *a = start, *b = c;
      while (a < b && isspace((unsigned char)*a)) a++;
      while (b > a && isspace((unsigned char)b[-1])) b--;
      if (b > a && !expand_name(a, (size_t)(b - a), out)) return false;
      start = c + 1;
    }
    if (!*c) return true;
  }
}

static bool loopback (const char *name) {
  return strcmp(name, "localhost") == 0 || strncmp(name, "127.", 4) == 0 || strcmp(name, "::1") == 0;
}

// An IPv4 or IPv6 socket address's address as text into `out`; false for another family.
static bool address_text (const struct sockaddr *a, char out[INET6_ADDRSTRLEN]) {
  if (a->sa_family != AF_INET && a->sa_family != AF_INET6) return false;
  const void *bytes = a->sa_family == AF_INET ? (const void *)&((const struct sockaddr_in *)a)->sin_addr
                                              : (const void *)&((const struct sockaddr_in6 *)a)->sin6_addr;
  return inet_ntop(a->sa_family, bytes, out, INET6_ADDRSTRLEN) != NULL;
}

// This host's addresses but its loopback ones, as text.
static int local_addresses (char out[][INET6_ADDRSTRLEN], int max) {
  struct ifaddrs *list, *a;
  int n = 0;
  if (getifaddrs(&list) < 0) return 0;
  for (a = list; a && n < max; a = a->ifa_next) {
    if (a->ifa_addr && address_text(a->ifa_addr, out[n]) && !loopback(out[n])) n++;
  }
  freeifaddrs(list);
  return n;
}

static bool is_local (const char *address, char local[][INET6_ADDRSTRLEN], int count) {
  for (int i = 0; i < count; i++) if (strcmp(local[i], address) == 0) return true;
  return false;
}

// Where `node` is in `names` (launch-nodes.ts's placeOf): its own name, else its short name
// against theirs, else an address of this host, else a loopback name, else a name that resolves
// to one of those; -1: not there.
static int place_of (const char *node, const struct names *names) {
  for (int i = 0; i < names->n; i++) if (strcmp(names->v[i], node) == 0) return i;
  size_t short_node = strcspn(node, ".");
  for (int i = 0; i < names->n; i++) {
    const char *name = names->v[i];
    if (!isdigit((unsigned char)name[0]) && strcspn(name, ".") == short_node && strncmp(name, node, short_node) == 0) return i;
  }
  char local[64][INET6_ADDRSTRLEN];
  int local_count = local_addresses(local, 64);
  for (int i = 0; i < names->n; i++) if (is_local(names->v[i], local, local_count)) return i;
  for (int i = 0; i < names->n; i++) if (loopback(names->v[i])) return i;
  for (int i = 0; i < names->n; i++) {
    struct addrinfo *found, *a;
    if (getaddrinfo(names->v[i], NULL, NULL, &found) != 0) continue;
    bool here = false;
    for (a = found; a && !here; a = a->ai_next) {
      char text[INET6_ADDRSTRLEN];
      here = address_text(a->ai_addr, text) && (is_local(text, local, local_count) || loopback(text));
    }
    freeaddrinfo(found);
    if (here) return i;
  }
  return -1;
}

// `template` with every %n replaced by `name`, then :port.
static char *address_of (const char *template, const char *name, long port) {
  size_t size = strlen(template) + 16;
  for (const char *p = strstr(template, "%n"); p; p = strstr(p + 2, "%n")) size += strlen(name);
  char *out = malloc(size), *at = out;
  if (!out) return NULL;
  for (const char *p = template; *p;) {
    if (p[0] == '%' && p[1] == 'n') { at = stpcpy(at, name); p += 2; } else *at++ = *p++;
  }
  snprintf(at, (size_t)(out + size - at), ":%ld", port);
  return out;
}

int node_list_of (const char *hostlist, const char *host_template, long port, const char *node, struct node_list *out) {
  struct names names = { 0 };
  *out = (struct node_list){ 0 };
  if (!expand_hostlist(hostlist, &names) || names.n == 0) { drop(&names); return -1; }
  int index = place_of(node, &names);
  if (index < 0 || port < 1 || port + names.n - 1 > 65535) { drop(&names); return -1; }
  out->nodes = calloc((size_t)names.n, sizeof *out->nodes);
  out->count = names.n;
  out->index = index;
  for (int k = 0; out->nodes && k < names.n; k++) {
    if (!(out->nodes[k] = address_of(host_template, names.v[k], port + k))) break;
  }
  bool whole = out->nodes && out->nodes[names.n - 1];
  drop(&names);
  if (!whole) { node_list_free(out); return -1; }
  return 0;
}

void node_list_free (struct node_list *list) {
  for (int i = 0; list->nodes && i < list->count; i++) free(list->nodes[i]);
  free(list->nodes);
  *list = (struct node_list){ 0 };
}

// Marsaglia's xorshift32, node-list.ts's.
static uint32_t xorshift (uint32_t *x) {
  *x ^= *x << 13;
  *x ^= *x >> 17;
  *x ^= *x << 5;
  return *x;
}

int listed_peers (int count, int index, const uint8_t seed[20], int out[MAX_LIST_PEERS]) {
  int n = 0;
  bool *taken = calloc((size_t)count, sizeof *taken);
  if (!taken) return 0;
  for (long d = 1; d < count && n < MAX_LIST_PEERS; d *= 2) {
    int v = (int)((index + d) % count);
    if (!taken[v]) { taken[v] = true; out[n++] = v; }
  }
  int want = count - 1 < n + RANDOM_PEERS ? count - 1 : n + RANDOM_PEERS;
  if (want > MAX_LIST_PEERS) want = MAX_LIST_PEERS;
  uint32_t x = ((uint32_t)seed[0] << 24 | (uint32_t)seed[1] << 16 | (uint32_t)seed[2] << 8 | seed[3]) ^ ((uint32_t)(index + 1) * 0x9e3779b9u);
  if (!x) x = 1;
  while (n < want) {
    int v = (int)(xorshift(&x) % (uint32_t)count);
    if (v != index && !taken[v]) { taken[v] = true; out[n++] = v; }
  }
  free(taken);
  return n;
}

bool dials_head (int count, int index) {
  return index % ((count + HEAD_DIALERS - 1) / HEAD_DIALERS) == 0;
}
