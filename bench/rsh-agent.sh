#!/bin/sh
# Open MPI's remote-launch agent for the emulated cluster (mpirun --mca plm_rsh_agent, with
# plm_rsh_no_tree_spawn): instead of ssh, `rsh-agent.sh HOST COMMAND…` runs COMMAND on the node
# whose address is HOST (10.77.1.K), in that node's network and mount namespaces and in a UTS
# namespace of its own named nK: Open MPI and p2prun tell nodes apart by host name.
host=$1
shift
case $host in 10.77.1.*) ;; *) echo "rsh-agent.sh: $host is not a node of bench/cluster.sh" >&2; exit 1 ;; esac
k=${host##*.}
exec "$(dirname "$0")/cluster.sh" exec "$k" unshare --uts sh -c 'hostname "$0" && exec sh -c "$1"' "n$k" "$*"
