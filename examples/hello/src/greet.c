#include <stdio.h>
#include "greet.h"

/* Where the loader found this library: the caller prints it to show it came from the mount. */
void greet(const char *who, char *out, int len) {
    snprintf(out, len, "hello, %s, from libgreet", who);
}
