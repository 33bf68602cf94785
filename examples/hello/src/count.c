#include "count.h"

/* Enough code and data that the library spans several pages. */
static const unsigned char table[256 * 1024] = { 1, 2, 3 };

unsigned long count_bytes(void) {
    unsigned long sum = 0;
    for (unsigned long i = 0; i < sizeof table; i++) sum += table[i];
    return sum + sizeof table;
}
