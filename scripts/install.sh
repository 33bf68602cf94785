#!/usr/bin/env bash
# Installs p2prun from a built tree (`npm ci` has run: dist/ holds the bundle, the FUSE addon and
# the audit module) into PREFIX, relocatable and without npm at run time:
#   PREFIX/lib/p2prun/      bin/p2prun, bin/p2prun-rank, dist/, node/bin/node (Node 24), hooks/,
#                           slurm/p2plibs.so (if built: make -C slurm)
#   PREFIX/bin/p2prun       a link into it (the scripts find their installation through it)
#   PREFIX/bin/p2prun-agent a link to the native node agent (dist/p2prun-agent)
#   PREFIX/share/man/man1/p2prun.1, PREFIX/share/doc/p2prun/LICENSE
#   PREFIX/share/modulefiles/p2prun/VERSION.lua (Lmod; `module use PREFIX/share/modulefiles`)
# Every rank starts Node from here: install it on node-local storage (the compute image), not on
# a shared file system (p2prun warns when it is started from one).
# Usage: scripts/install.sh [--prefix DIR] [--destdir DIR]   (default prefix /usr/local; destdir
# stages the files under DIR for a package, as DESTDIR does for make install)
set -euo pipefail
prefix=/usr/local
destdir=
while [ $# -gt 0 ]; do
  case $1 in
    --prefix) prefix=${2:?--prefix needs a directory}; shift 2 ;;
    --prefix=*) prefix=${1#*=}; shift ;;
    --destdir) destdir=${2:?--destdir needs a directory}; shift 2 ;;
    --destdir=*) destdir=${1#*=}; shift ;;
    *) echo "install.sh: unknown argument '$1' (usage: install.sh [--prefix DIR] [--destdir DIR])" >&2; exit 2 ;;
  esac
done
case $prefix in /*) ;; *) echo "install.sh: --prefix must be an absolute path, not '$prefix'" >&2; exit 2 ;; esac
root=$(cd "$(dirname "$0")/.." && pwd)
node="$root/node_modules/node/bin/node"
for f in "$root/dist/cli.mjs" "$root/dist/cli-bundle.js" "$root/dist/p2prun-native.node" "$root/dist/p2prun-audit.so" "$root/dist/p2prun-rank-step" "$root/dist/p2prun-agent" "$node"; do
  [ -e "$f" ] || { echo "install.sh: $f is missing (hint: run npm ci in $root first)" >&2; exit 1; }
done
if [ -n "$(find "$root/lib" "$root/launcher" "$root/native" "$root/package.json" -newer "$root/dist/cli.mjs" -print -quit)" ]; then
  echo "install.sh: $root/dist is older than the sources (hint: npm run build)" >&2; exit 1
fi
version=$("$node" -p "require('$root/package.json').version")
lib="$destdir$prefix/lib/p2prun"
share="$destdir$prefix/share"

rm -rf "$lib"
install -d "$lib/bin" "$lib/dist" "$lib/node/bin" "$lib/hooks" "$destdir$prefix/bin" "$share/man/man1" "$share/doc/p2prun" "$share/modulefiles/p2prun"
install -m 755 "$root/bin/p2prun" "$root/bin/p2prun-rank" "$lib/bin/"
install -m 644 "$root/dist/cli.mjs" "$root/dist/cli-bundle.js" "$lib/dist/"
install -m 755 "$root/dist/p2prun-native.node" "$root/dist/p2prun-audit.so" "$root/dist/p2prun-rank-step" "$root/dist/p2prun-agent" "$lib/dist/"
install -m 755 "$(readlink -f "$node")" "$lib/node/bin/node"
install -m 644 "$root/package.json" "$lib/"
install -m 755 "$root/hooks/prolog" "$root/hooks/epilog" "$lib/hooks/"
if [ -f "$root/slurm/p2plibs.so" ]; then install -d "$lib/slurm" && install -m 755 "$root/slurm/p2plibs.so" "$lib/slurm/"; fi
ln -sfn ../lib/p2prun/bin/p2prun "$destdir$prefix/bin/p2prun"
ln -sfn ../lib/p2prun/dist/p2prun-agent "$destdir$prefix/bin/p2prun-agent"
install -m 644 "$root/doc/p2prun.1" "$share/man/man1/"
install -m 644 "$root/LICENSE" "$share/doc/p2prun/"
cat > "$share/modulefiles/p2prun/$version.lua" <<EOF
help([[p2prun $version: MPI and Slurm launches whose shared libraries load peer-to-peer (man p2prun)]])
whatis("Name: p2prun")
whatis("Version: $version")
prepend_path("PATH", "$prefix/bin")
prepend_path("MANPATH", "$prefix/share/man")
EOF
echo "installed p2prun $version in $destdir$prefix (run $prefix/bin/p2prun)"
