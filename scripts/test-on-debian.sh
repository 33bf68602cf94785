#!/usr/bin/env bash
# Runs test files on another Debian release than the host's: its glibc, loader, libfuse, Python and
# musl, on the host's kernel. The parts that depend on them (the load closure, the LD_AUDIT module,
# the rank step, the FUSE server, the mapped store) are what differ between releases.
#   scripts/test-on-debian.sh [RELEASE] [TEST FILE...]
#   scripts/test-on-debian.sh RELEASE --run COMMAND [ARG...]     (a bench, e.g. bench/audit/start-cost.sh)
#     RELEASE    a Debian suite debootstrap knows (default: trixie, Debian 13)
#     TEST FILE  default: the zero-configuration, mount, rank-step, swarm and wire tests
# Needs root, debootstrap and the network (a minimal Debian, ~400 MB, in /var/tmp/p2prun-RELEASE,
# kept for the next run). The checkout's committed HEAD is cloned into it with this tree's
# node_modules (Node itself comes from there), built there against that release's libraries, and
# run in a mount namespace of its own with the release as its root (pivot_root: the mount code
# expects a real root, not a chroot); the namespace takes every mount the tests make with it.
set -euo pipefail
release=${1:-trixie}
shift || true
tests=("$@")
[ ${#tests[@]} -gt 0 ] || tests=(test/zero-config.test.ts test/mount.test.ts test/rank-step.test.ts test/swarm.test.ts test/wire.test.ts)
if [ "${tests[0]}" = --run ]; then run=("${tests[@]:1}"); else run=(tap "${tests[@]}"); fi
root=$(cd "$(dirname "$0")/.." && pwd)
target=/var/tmp/p2prun-$release
if [ "$(id -u)" != 0 ]; then echo "test-on-debian: run as root (debootstrap, mount namespaces, FUSE)" >&2; exit 2; fi
command -v debootstrap > /dev/null || { echo "test-on-debian: debootstrap is missing (hint: apt-get install debootstrap)" >&2; exit 2; }
[ -x "$root/node_modules/node/bin/node" ] || { echo "test-on-debian: $root has no node_modules (hint: npm ci)" >&2; exit 2; }

if [ ! -x "$target/usr/bin/apt-get" ]; then
  debootstrap --variant=minbase "$release" "$target" http://deb.debian.org/debian
fi
cp /etc/resolv.conf "$target/etc/resolv.conf"
# debootstrap resolves dependencies one level deep: the build and test packages come through apt.
mount -t proc proc "$target/proc"
trap 'umount "$target/proc" 2> /dev/null || true' EXIT
chroot "$target" env DEBIAN_FRONTEND=noninteractive sh -c 'apt-get update -qq && apt-get install -y -qq --no-install-recommends \
  ca-certificates build-essential pkg-config libfuse3-dev fuse3 musl-tools python3 python3-dev procps iproute2 git > /dev/null'
umount "$target/proc"
trap - EXIT

rm -rf "$target/root/p2prun"
git clone -q "$root" "$target/root/p2prun"
# The tree itself, where node_modules is a link (a worktree's), not the link.
cp -a "$(readlink -f "$root/node_modules")" "$target/root/p2prun/node_modules"
cat > "$target/root/run-tests.sh" << EOF
#!/bin/bash
cd /root/p2prun
export PATH=/root/p2prun/node_modules/node/bin:/root/p2prun/node_modules/.bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root CI=true
echo "test-on-debian: \$(. /etc/os-release && echo "\$PRETTY_NAME"), \$(ldd --version | head -1)"
node scripts/build.ts
exec $(printf '%q ' "${run[@]}")
EOF
chmod +x "$target/root/run-tests.sh"
exec unshare --mount --propagation private bash -c '
set -e
R=$1
mount --bind "$R" "$R"
mount -t proc proc "$R/proc"
mount --rbind /dev "$R/dev"
mount --rbind /sys "$R/sys"
mount -t tmpfs tmpfs "$R/tmp"
mount -t tmpfs -o size=2g tmpfs "$R/dev/shm"
cd "$R"
mkdir -p old
pivot_root . old
umount -l /old
exec /root/run-tests.sh
' test-on-debian "$target"
