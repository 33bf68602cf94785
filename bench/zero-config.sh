#!/usr/bin/env bash
# The zero-configuration launch against the explicit one, on this host: `p2prun -n 4` of the
# Pynamic-like drivers with every rank its own node (P2PRUN_NODE_PER_RANK=1, local launcher), the
# two launches taking turns, each timed as a whole process by /usr/bin/time (the launcher, the rank
# steps and the ranks; the detached node agents are not its children).
#   explicit:  --libs SET/libs (Python: PYTHONPATH pointed into the mount by hand)
#   zero:      no --libs; the loader's LD_LIBRARY_PATH (Python: PYTHONPATH) as the user has it
# Usage: bench/zero-config.sh [ROUNDS] [SETDIR]     (defaults 10, /tmp/p2prun-bench-pynamic)
set -euo pipefail
rounds=${1:-10}
set_dir=${2:-/tmp/p2prun-bench-pynamic}
root=$(cd "$(dirname "$0")/.." && pwd)
[ -f "$set_dir/manifest.txt" ] || bash "$root/bench/pynamic/generate.sh" "$set_dir" >/dev/null
p2prun="$root/bin/p2prun"
export P2PRUN_NODE_PER_RANK=1
launch=("$p2prun" -n 4 --launcher local --quiet)
run() { # label command...
  local label=$1; shift
  /usr/bin/time -f "$label %e %U %S" -o /dev/stderr "$@" >/dev/null
}
for ((i = 0; i < rounds; i++)); do
  run driver-explicit "${launch[@]}" --libs "$set_dir/libs" "$set_dir/driver"
  LD_LIBRARY_PATH=$set_dir/libs run driver-zero "${launch[@]}" "$set_dir/driver"
  run python-explicit "${launch[@]}" --libs "$set_dir/libs" sh -c "PYTHONPATH=\${LD_LIBRARY_PATH%%:*} exec /usr/bin/python3 -S $set_dir/driver.py"
  PYTHONPATH=$set_dir/libs run python-zero "${launch[@]}" /usr/bin/python3 -S "$set_dir/driver.py"
done 2>&1 | awk '
  { wall[$1] = wall[$1] " " $2; cpu[$1] = cpu[$1] " " ($3 + $4) }
  function median(list,   a, n, i, j, t) {
    n = split(list, a, " ")
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  END { for (k in wall) printf "%-16s wall median %.2f s (%s )  cpu median %.2f s\n", k, median(wall[k]), wall[k], median(cpu[k]) }' | sort
