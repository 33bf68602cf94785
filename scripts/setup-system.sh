#!/usr/bin/env bash
# Installs the Debian 12 packages p2prun and its tests need; idempotent, quiet when all is there.
# fuse3: fusermount (the old `fuse` package would remove fuse3 and sshfs). libfuse3-dev and pkg-config:
# p2prun's FUSE server (native/, built by scripts/build.ts). libssl-dev: the native agent's SHA-1 and job
# proof (libcrypto); zlib1g-dev: the description a job spec carries, deflated. build-essential: cc for
# them, the example and the test programs.
# Open MPI and MPICH (both: the launcher is tested against each; Debian keeps them side by side as
# mpirun.openmpi / mpirun.mpich). Slurm, munge and Slurm's headers: the SPANK plugin and the
# 4-node test cluster (slurm/cluster.sh). hpcc: a real Open MPI application launched through
# p2prun (examples/hpcc, test/hpcc.test.ts).
# With --bench also what bench/ needs: sshfs, socat and sftp-server (the shared-file-system
# baseline), aria2 (a stock BitTorrent client: the stage-in baseline), python3-dev (the Python
# extension-module workload), gnuplot-nox (the plots).
set -euo pipefail
packages=(fuse3 libfuse3-dev libssl-dev zlib1g-dev pkg-config build-essential musl-tools procps iproute2 man-db python3 python3-dev python3-venv lmod openmpi-bin libopenmpi-dev mpich libmpich-dev slurm-wlm munge libslurm-dev hpcc)
[ "${1:-}" != --bench ] || packages+=(sshfs socat openssh-sftp-server gnuplot-nox aria2)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# npm runs `npm ci`, which installs p2prun's own Node 24 (the npm package `node`). A fresh Debian 12
# has none; a machine whose npm comes from elsewhere (NodeSource's nodejs) keeps it: the command is
# what counts. Debian's npm (with its Node 18, used for nothing else) only installs a newer npm:
# npm 9 cannot read p2prun's lockfile (its overrides name a file: package, "Invalid comparator").
command -v npm > /dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup-system: missing Debian packages: ${missing[*]} (hint: run this script as root, or apt-get install them)" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
npm_major=$(npm --version | cut -d. -f1)
if [ "$npm_major" -lt 10 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup-system: npm $npm_major is too old for p2prun's lockfile (hint: run this script as root, or npm install -g npm@10)" >&2
    exit 1
  fi
  npm install -g --no-audit --no-fund npm@10 > /dev/null
fi
