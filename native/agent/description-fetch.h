// The description from peers of the job's swarm, then the head (description-fetch.c).
#ifndef P2PRUN_DESCRIPTION_FETCH_H
#define P2PRUN_DESCRIPTION_FETCH_H
#include <stdint.h>
#include "description.h"
#include "node-list.h"

struct description_source {
  uint8_t info_hash[20];
  const char *trackers[MAX_ADDRESSES];  // where peers are listed (asked without registering)
  int tracker_count;
  const char *peers[MAX_LIST_PEERS];    // a node list's peers for this node (each holds it once it joins)
  int peer_count;
  const char *seeders[MAX_ADDRESSES];   // the head's, asked last
  int seeder_count;
  const char *url;                      // the head's description URL (its proof is added here)
  uint64_t timeout_ms;                  // for the head's reply
  const char *node;                     // this node's name, for the message
};

// The job's description in `d` (as peers hand it on), from peers when the job has a secret (the
// job's proofs need it: job.secret), else or then from the head, and by which in `route` ("a peer",
// "the head"); -1 with a one-line reason in `error`.
int description_fetch (const struct description_source *src, struct description *d, const char **route, char *error, size_t error_size);
#endif
