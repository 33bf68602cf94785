#!/usr/bin/env bash
# The example job: build examples/hello (an MPI program linked against libraries that exist only in
# examples/hello/libs), then launch it on 4 ranks with p2prun, which serves those libraries to the
# ranks from a peer-to-peer FUSE mount. Each rank prints where its libraries were mapped from.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/examples/hello/build.sh"
if [ "$(id -u)" -eq 0 ]; then
  # Open MPI refuses root and more ranks than cores unless told; harmless for other launchers.
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
fi
cd "$root"
exec bin/p2prun -n 4 --libs examples/hello/libs --stats ./examples/hello/app
