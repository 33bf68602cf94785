#!/usr/bin/env bash
# Builds the example: libs/ holds the shared libraries (with the usual soname symlink chains) and
# app is linked against them without an rpath, so only LD_LIBRARY_PATH can find them.
# Uses $MPICC (default mpicc; WITH_MPI) when it is installed, cc otherwise; --no-mpi forces cc.
# Usage: build.sh [--no-mpi] [OUTDIR]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mpi=yes
if [ "${1:-}" = "--no-mpi" ]; then mpi=no; shift; fi
out=${1:-$here}
mkdir -p "$out/libs"
cd "$here/src"
lib() { # name version sources…
  local name=$1 version=$2; shift 2
  cc -shared -fPIC -O1 -Wl,-soname,"lib$name.so.${version%%.*}" -o "$out/libs/lib$name.so.$version" "$@"
  ln -sf "lib$name.so.$version" "$out/libs/lib$name.so.${version%%.*}"
  ln -sf "lib$name.so.${version%%.*}" "$out/libs/lib$name.so"
}
lib greet 1.0.0 greet.c
lib count 2.1.0 count.c
cc -shared -fPIC -O1 -o "$out/libs/libplugin.so" plugin.c
mpicc=${MPICC:-mpicc}
if [ "$mpi" = yes ] && command -v "$mpicc" >/dev/null 2>&1; then
  "$mpicc" -DWITH_MPI -O1 -o "$out/app" app.c -L"$out/libs" -lgreet -lcount -ldl
else
  cc -O1 -o "$out/app" app.c -L"$out/libs" -lgreet -lcount -ldl
fi
