#!/bin/sh
# A remote-launch agent (Open MPI's plm_rsh_agent, Hydra's -launcher-exec) for hosts that are this
# machine under other names: `uts-hosts.sh [ssh options] HOST COMMAND…` runs COMMAND here in a UTS
# namespace of its own named HOST, so that the launcher, its ranks and p2prun's agents see n hosts
# by host name, on loopback. Hydra passes ssh options (-x) first: they are skipped.
while [ "${1#-}" != "$1" ]; do shift; done
host=$1
shift
exec unshare --uts sh -c 'hostname "$0" && exec sh -c "$1"' "$host" "$*"
