#!/usr/bin/env bash
# The example job, by hand: describe the example's libraries, serve them from this host (the
# "head"), fetch them on two "nodes" through the swarm, and run the app against each node's copy.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
p2prun="$root/bin/p2prun"
work=$(mktemp -d "${TMPDIR:-/tmp}/p2prun-example.XXXXXX")
serve_pid=
cleanup() {
  if [ -n "$serve_pid" ]; then kill -TERM "$serve_pid" 2>/dev/null || true; wait "$serve_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

"$root/examples/hello/build.sh"
"$p2prun" describe "$root/examples/hello/libs" -o "$work/hello.p2p.torrent"

# serve prints one "serving …" line once tracker and seeder listen: read it from a FIFO, which
# blocks until that line comes or ends at once if serve dies first.
mkfifo "$work/serve.out"
"$p2prun" serve "$work/hello.p2p.torrent" --source "$root/examples/hello/libs" --host 127.0.0.1 \
  --out "$work/launch.p2p.torrent" > "$work/serve.out" &
serve_pid=$!
exec 3< "$work/serve.out"
read -r ready <&3 || { echo "quickstart: p2prun serve failed" >&2; exit 1; }
echo "$ready"

"$p2prun" fetch "$work/launch.p2p.torrent" --out "$work/node1" --store-dir "$work" &
"$p2prun" fetch "$work/launch.p2p.torrent" --out "$work/node2" --store-dir "$work" &
wait %2 %3
for node in node1 node2; do
  LD_LIBRARY_PATH="$work/$node" "$root/examples/hello/app" | sed "s/^/$node: /"
done
kill -TERM "$serve_pid"
cat <&3
wait "$serve_pid" || true
serve_pid=
