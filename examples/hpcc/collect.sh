#!/usr/bin/env bash
# Gathers everything Debian's HPCC loads into OUT, as a site would stage an application's
# libraries: OUT/lib (the shared libraries /usr/bin/hpcc links: Open MPI, BLAS, libc…),
# OUT/openmpi and OUT/pmix (the plugins Open MPI and PMIx dlopen at MPI_Init). Files keep their
# mtimes, so describing OUT again gives the same description.
set -euo pipefail
out=${1:?usage: collect.sh OUT}
hpcc=/usr/bin/hpcc
[ -x "$hpcc" ] || { echo "collect.sh: $hpcc is missing (hint: apt-get install hpcc)" >&2; exit 1; }
rm -rf "$out/lib" "$out/openmpi" "$out/pmix"
mkdir -p "$out/lib"
ldd "$hpcc" | awk '$2 == "=>" && $3 ~ /^\// { print $1, $3 }' | while read -r soname file; do
  cp -L --preserve=timestamps "$file" "$out/lib/$soname"
done
cp -rL --preserve=timestamps /usr/lib/x86_64-linux-gnu/openmpi/lib/openmpi3 "$out/openmpi"
cp -rL --preserve=timestamps /usr/lib/x86_64-linux-gnu/pmix2/lib/pmix "$out/pmix"
