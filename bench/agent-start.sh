#!/bin/bash
# The CPU a node agent spends from its exec until its mount is up (issue 12's "start"), for one or
# more builds taking turns: a head on loopback serves bench/work/set-200 (made by `npm run bench`),
# and each round starts one agent of every build in block mode (nothing is fetched until a read),
# waits for its "mounted" line, reads the CPU of all its threads (schedstat: ns, not 10 ms ticks),
# and stops it. Runs as root (FUSE).
#   bash bench/agent-start.sh ROUNDS NAME=PATH/bin/p2prun [NAME=PATH/bin/p2prun ...]
#   bash bench/agent-start.sh 20 base=/tmp/wt-base/bin/p2prun new=bin/p2prun
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
rounds=${1:?usage: bench/agent-start.sh ROUNDS NAME=BIN [NAME=BIN ...]}
shift
[ $# -gt 0 ] || { echo "agent-start.sh: name at least one build (NAME=PATH/bin/p2prun)" >&2; exit 2; }
desc=$root/bench/work/set-200.p2p.torrent
[ -f "$desc" ] || { echo "agent-start.sh: $desc is missing (hint: run \`npm run bench -- --nodes 2 --methods p2p-eager\` once)" >&2; exit 2; }

work=$(mktemp -d /tmp/p2prun-agent-start.XXXXXX)
head_pid='' agent_pid=''
cleanup() {
  [ -n "$agent_pid" ] && kill "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null
  [ -n "$head_pid" ] && kill "$head_pid" 2>/dev/null && wait "$head_pid" 2>/dev/null
  grep -q " $work/mnt " /proc/mounts && fusermount3 -u "$work/mnt"
  rm -rf "$work"
}
trap cleanup EXIT
export P2PRUN_SECRET=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
"${1#*=}" serve "$desc" --source "$root/bench/work/set-200" --host 127.0.0.1 > "$work/head.out" 2>&1 & head_pid=$!
until grep -qs serving "$work/head.out"; do kill -0 "$head_pid" || { cat "$work/head.out" >&2; exit 1; }; sleep 0.1; done
tracker=$(grep -o 'tracker=[^ ]*' "$work/head.out" | cut -d= -f2)
seeder=$(grep -o 'seeder=[^ ]*' "$work/head.out" | cut -d= -f2)
mkdir "$work/mnt"

# One start: milliseconds of CPU, all threads, until the agent says it is mounted.
start_cpu() {
  rm -f "$work/agent.out" # the last agent's "mounted" must not be taken for this one's
  "$1" mount "$desc" "$work/mnt" --mode block --seeder "$seeder" --tracker "$tracker" --store-dir /dev/shm > "$work/agent.out" 2>&1 & agent_pid=$!
  until grep -qs mounted "$work/agent.out"; do kill -0 "$agent_pid" || { cat "$work/agent.out" >&2; exit 1; }; sleep 0.005; done
  cat /proc/"$agent_pid"/task/*/schedstat | awk '{ns += $1} END {printf "%.1f", ns / 1e6}'
  kill "$agent_pid"; wait "$agent_pid" 2>/dev/null || true; agent_pid=''
}

for _ in $(seq "$rounds"); do
  for build in "$@"; do echo "${build%%=*} $(start_cpu "${build#*=}")"; done
done > "$work/starts"
python3 - "$work/starts" <<'EOF'
import statistics, sys
by = {}
for line in open(sys.argv[1]):
    name, ms = line.split()
    by.setdefault(name, []).append(float(ms))
for name, v in by.items():
    v.sort()
    print(f'{name:12s} median {statistics.median(v):6.1f} ms   p25 {v[len(v) // 4]:6.1f}   p75 {v[3 * len(v) // 4]:6.1f}   ({len(v)} starts)')
EOF
