// The description's tree as the FUSE server's inode table (fuse-table.h), made the way lib/fs.ts
// makes it for the Node agent (buildTable: the same modes, link counts, sizes and offsets), after
// the checks lib/description.ts makes of the tree (parseEntries: order, paths, parents, links
// that stay inside the set, files matching the torrent's list). test/native-agent.test.ts holds
// the two mounts of one description side by side.
#ifndef P2PRUN_TREE_H
#define P2PRUN_TREE_H
#include <stddef.h>
#include <sys/types.h>
#include "../fuse-table.h"
#include "description.h"

// Fills `t`; -1 with a one-line reason in `error` if the tree is malformed.
int tree_table (const struct description *d, uid_t uid, gid_t gid, struct table *t, char *error, size_t error_size);
#endif
