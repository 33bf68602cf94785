// The mount point's life, by lib/mount.ts's rules (that file owns them; the two must agree): a
// directory p2prun makes, parents included, holds the marker MADE_MARKER, which counts as empty
// for the next mount; whichever agent leaves last removes what p2prun made, and never a
// directory another mount namespace of this host still has a mount at (emulated nodes share one
// file system, and rmdir would detach their mounts).
#ifndef P2PRUN_MOUNT_POINT_H
#define P2PRUN_MOUNT_POINT_H
#include <stddef.h>

#define MADE_MARKER ".p2prun-mount-point"

// Makes `path` (and its parents) if missing, or checks that it is an empty directory with nothing
// mounted on it; -1 with a one-line reason in `error`.
int mount_point_prepare (const char *path, char *error, size_t error_size);
// Removes what p2prun made, if nothing else is in it and no other namespace has a mount there.
void mount_point_remove (const char *path);
#endif
