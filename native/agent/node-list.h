// A launch's node list, for the native node agent (node-agent.c): the launch's nodes, this node's
// place among them and where each listens, as lib/session/launch-nodes.ts makes it; and
// lib/swarm/node-list.ts's policy for it: the peers a node dials, whether it dials the head at
// start. Those two own the format and the policy; this follows them (test/native-agent.test.ts
// holds a node agent's dials to node-list.ts's answer).
#ifndef P2PRUN_NODE_LIST_H
#define P2PRUN_NODE_LIST_H
#include <stdbool.h>
#include <stdint.h>

#define MAX_LIST_PEERS 64    // the peers a node dials: log2(N) ring neighbours and 8 more
#define HEAD_FALLBACK_MS 3000 // node-list.ts's: a node that did not dial the head dials it once a wait stalls this long

struct node_list {
  char **nodes;  // host:port where each of the launch's agents listens, in launch order
  int count;
  int index;     // this node's place
};

// The node list of `node` (what it calls itself) from `hostlist` (Slurm's form: "n[01-16],gpu3"),
// node K at `host_template` (%n: its name) and port + K; -1 if the hostlist does not parse, the
// node is not in it or the ports run out (the Node agent says which, in its own words).
int node_list_of (const char *hostlist, const char *host_template, long port, const char *node, struct node_list *out);
void node_list_free (struct node_list *list);

// The places node `index` of `count` dials (node-list.ts's listedPeers; `seed`: the infohash), in
// `out` (MAX_LIST_PEERS at most); how many.
int listed_peers (int count, int index, const uint8_t seed[20], int out[MAX_LIST_PEERS]);
// Whether node `index` of `count` dials the head's seeder at start (node-list.ts's dialsHead).
bool dials_head (int count, int index);
#endif
