#!/usr/bin/env bash
# A real Slurm 22.05 cluster of N virtual nodes (n1..nN) on this host, for tests and trying p2prun:
# a private munged, slurmctld and one `slurmd -N nX` per node, all state under $P2PRUN_SLURM_DIR,
# with p2prun's prolog/epilog hooks and SPANK plugin configured.
#   slurm/cluster.sh up [N]   start (idempotent: an already running cluster is left as it is)
#   slurm/cluster.sh down     stop the daemons this script started (by their pid files) and cancel jobs
#   slurm/cluster.sh env      print the SLURM_CONF line clients need
# P2PRUN_SLURM_INSTALL=PREFIX/lib/p2prun: configure an installation's plugin, hooks and p2prun
# (scripts/install.sh), not this tree's.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
st=${P2PRUN_SLURM_DIR:-/tmp/p2prun-slurm}
nodes=${2:-4}
ctld_port=${P2PRUN_SLURM_PORT:-16817}
node_port=$((ctld_port + 100))
conf=$st/slurm.conf
export SLURM_CONF=$conf

pid_of() { [ -f "$1" ] && cat "$1" 2>/dev/null || true; }
alive() { # a live, non-zombie process
  [ -n "$1" ] && [ -d "/proc/$1" ] && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null
}
wait_for() { # bounded wait for a condition that only polling can observe (daemons coming up)
  local what=$1; shift
  for _ in $(seq 1 300); do "$@" && return 0; sleep 0.05; done
  echo "cluster.sh: $what did not happen within 15 s (logs in $st/log)" >&2
  return 1
}
all_idle() { [ "$(sinfo -h -o '%T' 2>/dev/null | sort -u | tr -d ' \n')" = idle ]; }

write_config() {
  mkdir -p "$st"/{munge,spool,state,run,log}
  chmod 711 "$st/munge"   # munged: the socket directory needs o+x
  [ -f "$st/munge/munge.key" ] || mungekey -c -k "$st/munge/munge.key"
  chmod 600 "$st/munge/munge.key"
  # P2PRUN_SLURM_INSTALL: an installation's lib/p2prun (scripts/install.sh) instead of this tree.
  local from=${P2PRUN_SLURM_INSTALL:-$root}
  [ -n "${P2PRUN_SLURM_INSTALL:-}" ] || make -s -C "$root/slurm" p2plibs.so
  cat > "$st/plugstack.conf" <<PLUG
required $from/slurm/p2plibs.so p2prun=$from/bin/p2prun run_dir=$st/p2prun-run mount_root=$st/mnt store_dir=/dev/shm mode=eager
PLUG
  cat > "$conf" <<CONF
ClusterName=p2prun
SlurmctldHost=$(hostname -s)(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$st/munge/munge.socket
StateSaveLocation=$st/state
SlurmdSpoolDir=$st/spool/%n
SlurmctldPidFile=$st/run/slurmctld.pid
SlurmdPidFile=$st/run/slurmd-%n.pid
SlurmctldLogFile=$st/log/slurmctld.log
SlurmdLogFile=$st/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SlurmdParameters=config_overrides
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
PrologFlags=Alloc
Prolog=$from/hooks/prolog
Epilog=$from/hooks/epilog
PlugStackConfig=$st/plugstack.conf
NodeName=n[1-$nodes] NodeHostname=localhost NodeAddr=127.0.0.1 Port=[$node_port-$((node_port + nodes - 1))] CPUs=2
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
}

up() {
  if alive "$(pid_of "$st/run/slurmctld.pid")" && all_idle; then echo "SLURM_CONF=$conf"; return; fi
  write_config
  if ! alive "$(pid_of "$st/munge/munged.pid")"; then
    munged -S "$st/munge/munge.socket" --key-file="$st/munge/munge.key" --pid-file="$st/munge/munged.pid" \
      --log-file="$st/log/munged.log" --seed-file="$st/munge/munged.seed"
  fi
  # A fresh controller starts from a clean state (-c): a node drained by an earlier run's failed
  # prolog would otherwise stay drained, and every later `up` would wait for it in vain.
  alive "$(pid_of "$st/run/slurmctld.pid")" || slurmctld -c
  for i in $(seq 1 "$nodes"); do
    alive "$(pid_of "$st/run/slurmd-n$i.pid")" || slurmd -N "n$i"
  done
  wait_for "all $nodes nodes idle" all_idle
  echo "SLURM_CONF=$conf"
}

gone() { ! alive "$1"; }
# SIGTERM, then SIGKILL if it has not stopped within 15 s: a slurmd retrying an RPC to the
# controller sleeps 15 s between tries and does not stop meanwhile (seen after a prolog failure),
# and one daemon left must not keep `down` from stopping the others.
stop() {
  kill "$1" 2>/dev/null || true
  wait_for "process $1 to stop on SIGTERM (killing it)" gone "$1" && return 0
  kill -KILL "$1" 2>/dev/null || true
  wait_for "process $1 to stop after SIGKILL" gone "$1" || true
}

down() {
  if alive "$(pid_of "$st/run/slurmctld.pid")"; then
    scancel --partition=debug 2>/dev/null || true
    # Let epilogs run before the daemons go: jobs leave the queue once they are done.
    wait_for "running jobs to finish" sh -c '[ -z "$(squeue -h 2>/dev/null)" ]' || true
  fi
  for pidfile in "$st"/run/slurmd-*.pid "$st/run/slurmctld.pid" "$st/munge/munged.pid"; do
    pid=$(pid_of "$pidfile")
    if alive "$pid"; then stop "$pid"; fi
    rm -f "$pidfile"
  done
  # A cancelled batch job's srun outlives its step (it is reparented to init and keeps retrying the
  # stopped controller for a minute): stop those of this cluster, known by their SLURM_CONF.
  for proc in /proc/[0-9]*; do
    [ "$(cat "$proc/comm" 2>/dev/null)" = srun ] || continue
    { tr '\0' '\n' < "$proc/environ"; } 2>/dev/null | grep -qx "SLURM_CONF=$conf" || continue
    pid=${proc#/proc/}
    kill -KILL "$pid" 2>/dev/null || true
    wait_for "srun $pid to stop" gone "$pid" || true
  done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  env) echo "SLURM_CONF=$conf" ;;
  *) echo "usage: $0 up [N] | down | env" >&2; exit 2 ;;
esac
