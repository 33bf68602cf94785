#!/usr/bin/env bash
# An emulated cluster on one machine: a server node (s0, 10.77.0.1) and N compute nodes (n1..nN,
# 10.77.1.K), each a network namespace whose veth link to a bridge is rate-limited with tc tbf in
# both directions, and each compute node with a persistent private mount namespace (a FUSE or sshfs
# mount made on node K is seen only by node K).
#   bench/cluster.sh up N RATE     e.g. up 8 100mbit   (replaces a running one)
#   bench/cluster.sh exec K CMD…   run CMD on node K (0: the server) in its network + mount namespace
#   bench/cluster.sh addr K        node K's address
#   bench/cluster.sh down          remove everything this script made
# Addresses exist only inside these namespaces; no traffic leaves the machine.
set -euo pipefail
st=${P2PRUN_BENCH_DIR:-/tmp/p2prun-bench-cluster}
hub=p2pb-hub

ns_of() { if [ "$1" = 0 ]; then echo p2pb-s0; else echo "p2pb-n$1"; fi; }
addr_of() { if [ "$1" = 0 ]; then echo 10.77.0.1; else echo "10.77.1.$1"; fi; }

# The kernel's ARP cache is one table for every network namespace, capped at gc_thresh3 entries
# (1024 by default): N nodes that all talk to each other need about N² of them. Past the cap new
# neighbours cannot be resolved and connections to them never leave the node ("neighbor table
# overflow" in dmesg): at 48–64 nodes, the half that started last sat 20–40 s unable to reach any
# peer. `up` raises the thresholds when the cluster needs it; `down` puts the old ones back.
neigh=/proc/sys/net/ipv4/neigh/default
raise_neigh() {
  local need=$(( ($1 + 1) * ($1 + 1) + 256 ))
  [ "$(cat "$neigh/gc_thresh3")" -lt $(( 2 * need )) ] || return 0
  echo "$(cat "$neigh/gc_thresh1") $(cat "$neigh/gc_thresh2") $(cat "$neigh/gc_thresh3")" > "$st/neigh-thresh"
  echo "$need" > "$neigh/gc_thresh1"
  echo $(( 2 * need )) > "$neigh/gc_thresh2"
  echo $(( 4 * need )) > "$neigh/gc_thresh3"
}
restore_neigh() {
  [ -f "$st/neigh-thresh" ] || return 0
  read -r t1 t2 t3 < "$st/neigh-thresh"
  echo "$t1" > "$neigh/gc_thresh1"; echo "$t2" > "$neigh/gc_thresh2"; echo "$t3" > "$neigh/gc_thresh3"
}

down() {
  restore_neigh
  if [ -f "$st/nodes" ]; then
    for k in $(seq 0 "$(cat "$st/nodes")"); do
      umount "$st/mnt/node$k" 2>/dev/null || true
      ip netns del "$(ns_of "$k")" 2>/dev/null || true
    done
  fi
  ip netns del "$hub" 2>/dev/null || true
  umount "$st/mnt" 2>/dev/null || true
  rm -rf "$st"
}

up() {
  local n=$1 rate=$2
  down
  mkdir -p "$st/mnt"
  echo "$n" > "$st/nodes"
  raise_neigh "$n"
  echo "$rate" > "$st/rate"
  # A private bind mount holds the per-node mount namespace files.
  mount --bind "$st/mnt" "$st/mnt"
  mount --make-private "$st/mnt"
  ip netns add "$hub"
  ip -n "$hub" link add br0 type bridge
  ip -n "$hub" link set br0 up
  ip -n "$hub" link set lo up
  # tbf needs a burst of at least rate/HZ; 1/100 s of traffic keeps rates exact at 100 Mbit/s-10 Gbit/s.
  local bits=${rate%bit}; local burst
  case "$bits" in *g) burst=$(( ${bits%g} * 1250000 ));; *m) burst=$(( ${bits%m} * 1250 ));; *k) burst=$(( ${bits%k} * 2 ));; *) burst=$bits;; esac
  [ "$burst" -ge 32768 ] || burst=32768
  for k in $(seq 0 "$n"); do
    local ns; ns=$(ns_of "$k")
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip link add "p2pb$k" netns "$hub" type veth peer name eth0 netns "$ns"
    ip -n "$hub" link set "p2pb$k" master br0 up
    ip -n "$ns" addr add "$(addr_of "$k")/16" dev eth0
    ip -n "$ns" link set eth0 up
    tc -n "$ns" qdisc add dev eth0 root tbf rate "$rate" burst "$burst" latency 100ms
    tc -n "$hub" qdisc add dev "p2pb$k" root tbf rate "$rate" burst "$burst" latency 100ms
    touch "$st/mnt/node$k"
    unshare --mount="$st/mnt/node$k" --propagation private true
  done
}

case "${1:-}" in
  up) up "${2:?N}" "${3:-100mbit}" ;;
  down) down ;;
  addr) addr_of "${2:?K}" ;;
  exec)
    k=${2:?K}; shift 2
    exec nsenter --net="/run/netns/$(ns_of "$k")" --mount="$st/mnt/node$k" --wd="$PWD" "$@" ;;
  *) echo "usage: $0 up N RATE | exec K CMD... | addr K | down" >&2; exit 2 ;;
esac
