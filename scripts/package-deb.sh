#!/usr/bin/env bash
# Builds p2prun_VERSION_ARCH.deb from this tree's installation (scripts/install.sh --prefix /usr):
# /usr/bin/p2prun, /usr/lib/p2prun (Node 24 included), the man page, and the module file where
# Debian's Lmod looks (/etc/lmod/modules/p2prun). Install with `apt install ./p2prun_*.deb`.
# Usage: scripts/package-deb.sh [OUTDIR]   (default: the current directory)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=$(cd "${1:-.}" && pwd)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
bash "$root/scripts/install.sh" --prefix /usr --destdir "$stage" >/dev/null
version=$("$stage/usr/lib/p2prun/node/bin/node" -p "require('$root/package.json').version")
arch=$(dpkg --print-architecture)
install -d "$stage/etc/lmod/modules" "$stage/DEBIAN"
ln -s /usr/share/modulefiles/p2prun "$stage/etc/lmod/modules/p2prun"
cat > "$stage/DEBIAN/control" <<CONTROL
Package: p2prun
Version: $version
Architecture: $arch
Maintainer: The p2prun authors <p2prun@localhost>
Depends: libc6, libfuse3-3, fuse3, libssl3
Recommends: lmod
Section: admin
Priority: optional
Installed-Size: $(du -sk "$stage/usr" | cut -f1)
Description: peer-to-peer shared-library loading for HPC job launches
 p2prun launches MPI and Slurm jobs (p2prun -n N ./app) whose shared libraries
 load from a read-only FUSE mount on every node, backed by a BitTorrent swarm of
 the job's own nodes, so the shared file system is read about once.
CONTROL
deb="$out/p2prun_${version}_${arch}.deb"
# gzip: xz takes ~40 s on the Node binary, for a package a site builds and installs once.
dpkg-deb --build --root-owner-group -Zgzip -z6 "$stage" "$deb" >/dev/null
echo "$deb"
