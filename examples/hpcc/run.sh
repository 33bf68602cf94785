#!/usr/bin/env bash
# HPCC launched through p2prun on this host: `bash examples/hpcc/run.sh [NP]` (default 2 ranks).
# Its MPI libraries and plugins come from the p2prun mount; the report lands in
# examples/hpcc/build/run/hpccoutf.txt.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
np=${1:-2}
build=$here/build
bash "$here/collect.sh" "$build"
mkdir -p "$build/run"
cp "$here/hpccinf.txt" "$build/run/"
cd "$build/run"
rm -f hpccoutf.txt
# Open MPI refuses root unless told; --oversubscribe lets NP exceed this host's cores.
mpi=(--oversubscribe)
[ "$(id -u)" -ne 0 ] || mpi+=(--allow-run-as-root)
"$here/../../bin/p2prun" -n "$np" --launcher openmpi "${mpi[@]}" \
  --libs "$build/lib" --libs "$build/openmpi" --libs "$build/pmix" "$here/rank.sh"
grep -q 'End of HPC Challenge tests' hpccoutf.txt
echo "hpcc: $np ranks finished; report in $build/run/hpccoutf.txt"
