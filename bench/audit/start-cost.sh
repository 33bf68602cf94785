#!/usr/bin/env bash
# What the LD_AUDIT module costs a 200-library start, on this host's glibc: the Pynamic-like driver
# run from a real p2prun mount of its load closure (`describe --for`, a local head, `mount`), under
# four environments taking turns run by run (bench/audit/spawn-times.c), ROUNDS times:
#   plain       LD_LIBRARY_PATH into the mount, no audit: what a launch with --libs DIR gives ranks
#   zero-config the same with the module and the closure's directories as a zero-configuration
#               launch sets them (rank-env.ts): the search finds everything in the mount at once
#   redirected  LD_LIBRARY_PATH at the original directory, as DT_RPATH would search it: the module
#               sends each of the 200 lookups to the mount, checking the mount holds the file
#   whole       the same with the directory served whole (--libs): no check
#   idle        as plain, the module loaded but given no mount: what glibc's auditing itself costs
# The driver's own start is the figure: the mount, the head and the agent are up and warm before.
# With OTHER (another build's p2prun-audit.so), zero-config and redirected run with it too, in turn.
# Needs root (FUSE), a built tree (npm run build) and cc.
#   bench/audit/start-cost.sh [RUNS] [ROUNDS] [SETDIR] [OTHER]   (defaults 300, 3, /tmp/p2prun-bench-pynamic)
set -euo pipefail
runs=${1:-300}
rounds=${2:-3}
set_dir=${3:-/tmp/p2prun-bench-pynamic}
other=${4:-}
root=$(cd "$(dirname "$0")/../.." && pwd)
p2prun="$root/bin/p2prun"
audit="$root/dist/p2prun-audit.so"
[ -f "$audit" ] || { echo "start-cost: $audit is missing (hint: npm run build)" >&2; exit 2; }
[ -f "$set_dir/manifest.txt" ] || bash "$root/bench/pynamic/generate.sh" "$set_dir" > /dev/null
libs=$set_dir/libs

work=$(mktemp -d /tmp/p2prun-audit-cost.XXXXXX)
head_pid=
cleanup() {
  if mountpoint -q "$work/mnt" 2> /dev/null; then "$p2prun" umount --run-dir "$work/run" "$work/mnt" > /dev/null 2>&1 || umount -l "$work/mnt" || true; fi
  if [ -n "$head_pid" ]; then kill "$head_pid" 2> /dev/null || true; wait "$head_pid" 2> /dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
cc -O2 -o "$work/spawn-times" "$root/bench/audit/spawn-times.c"

export P2PRUN_SECRET
P2PRUN_SECRET=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
LD_LIBRARY_PATH=$libs "$p2prun" describe --for "$set_dir/driver" -o "$work/set.p2p.torrent" > /dev/null
"$p2prun" serve "$work/set.p2p.torrent" --source / --host 127.0.0.1 --quiet > "$work/serve.out" &
head_pid=$!
until grep -q '^serving' "$work/serve.out"; do
  kill -0 "$head_pid" 2> /dev/null || { echo "start-cost: the head did not start" >&2; exit 1; }
  sleep 0.1
done
seeder=$(sed -n 's/.* seeder=\([^ ]*\).*/\1/p' "$work/serve.out")
mkdir "$work/mnt"
"$p2prun" mount "$work/set.p2p.torrent" "$work/mnt" --daemon --seeder "$seeder" --mode eager --run-dir "$work/run" > /dev/null
m=$work/mnt
LD_LIBRARY_PATH=$m$libs "$m$set_dir/driver" > /dev/null # every file fetched and in the page cache

echo "# $(. /etc/os-release && echo "$PRETTY_NAME"), $(ldd --version | head -1), kernel $(uname -r)"
module=(LD_AUDIT="$audit" P2PRUN_AUDIT_MOUNT="$m")
some=(P2PRUN_AUDIT_WHOLE= P2PRUN_AUDIT_SOME="$set_dir:$libs")
versus=()
if [ -n "$other" ]; then
  versus=(-- zero-config-other LD_LIBRARY_PATH="$m$libs" LD_AUDIT="$other" P2PRUN_AUDIT_MOUNT="$m" "${some[@]}"
    -- redirected-other LD_LIBRARY_PATH="$libs" LD_AUDIT="$other" P2PRUN_AUDIT_MOUNT="$m" "${some[@]}")
fi
for ((r = 1; r <= rounds; r++)); do
  steal0=$(awk '/^cpu /{print $9}' /proc/stat)
  echo "# round $r of $rounds: $runs runs of each, taking turns"
  "$work/spawn-times" "$runs" "$m$set_dir/driver" \
    -- plain LD_LIBRARY_PATH="$m$libs" \
    -- zero-config LD_LIBRARY_PATH="$m$libs" "${module[@]}" "${some[@]}" \
    -- redirected LD_LIBRARY_PATH="$libs" "${module[@]}" "${some[@]}" \
    -- whole LD_LIBRARY_PATH="$libs" "${module[@]}" P2PRUN_AUDIT_WHOLE="$libs" P2PRUN_AUDIT_SOME= \
    -- idle LD_LIBRARY_PATH="$m$libs" LD_AUDIT="$audit" "${versus[@]}"
  echo "# steal $(($(awk '/^cpu /{print $9}' /proc/stat) - steal0)) ticks, load $(cut -d' ' -f1-3 /proc/loadavg)"
done
