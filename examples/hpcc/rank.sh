#!/bin/sh
# One HPCC rank: Open MPI and PMIx look for their plugins in the directories named openmpi and pmix
# that p2prun put on LD_LIBRARY_PATH (the mount), not in the system's plugin directories.
for dir in $(echo "$LD_LIBRARY_PATH" | tr ':' ' '); do
  case $dir in
    */openmpi) OMPI_MCA_mca_base_component_path=$dir; export OMPI_MCA_mca_base_component_path ;;
    */pmix) PMIX_MCA_mca_base_component_path=$dir; export PMIX_MCA_mca_base_component_path ;;
  esac
done
exec /usr/bin/hpcc "$@"
