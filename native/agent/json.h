// JSON, read whole into a tree: what the agent needs to read the job spec (lib/session/job-spec.ts
// writes it with JSON.stringify). Strings come out unescaped and NUL-terminated; one with a NUL
// in it is refused, as is anything nested deeper than a spec is.
#ifndef P2PRUN_JSON_H
#define P2PRUN_JSON_H
#include <stdbool.h>
#include <stddef.h>

enum json_kind { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT };

struct json {
  enum json_kind kind;
  bool boolean;
  double number;
  char *string;
  // An array's items, or an object's values with their keys beside them.
  struct json *items;
  char **keys;
  size_t count;
};

// The value `text` holds, or NULL if it is not JSON (or nests too deep).
struct json *json_parse (const char *text);
void json_free (struct json *value);
// A member of an object; NULL if `object` is not one or has no such member.
const struct json *json_member (const struct json *object, const char *key);
// A member's value of the kind, or NULL.
const char *json_string (const struct json *object, const char *key);
#endif
