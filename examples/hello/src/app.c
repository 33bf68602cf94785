/* Linked against libgreet and libcount (DT_NEEDED), dlopens libplugin by name, then prints where
   each library was mapped from, so a run shows whether the libraries came from the p2prun mount. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <stdio.h>
#include <string.h>
#include "greet.h"
#include "count.h"

#ifdef WITH_MPI
#include <mpi.h>
#endif

static int print_lib(struct dl_phdr_info *info, size_t size, void *data) {
    (void)size;
    const char *rank = data;
    if (strstr(info->dlpi_name, "libgreet") || strstr(info->dlpi_name, "libcount") || strstr(info->dlpi_name, "libplugin"))
        printf("%s lib %s\n", rank, info->dlpi_name);
    return 0;
}

int main(int argc, char **argv) {
    char rank[32] = "rank 0";
#ifdef WITH_MPI
    int r, n;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &r);
    MPI_Comm_size(MPI_COMM_WORLD, &n);
    snprintf(rank, sizeof rank, "rank %d/%d", r, n);
#else
    (void)argc; (void)argv;
#endif
    void *plugin = dlopen("libplugin.so", RTLD_NOW);
    if (!plugin) { fprintf(stderr, "%s: %s\n", rank, dlerror()); return 3; }
    const char *(*name)(void) = (const char *(*)(void))dlsym(plugin, "plugin_name");
    char msg[128];
    greet("world", msg, sizeof msg);
    printf("%s %s; count %lu; %s loaded\n", rank, msg, count_bytes(), name());
    dl_iterate_phdr(print_lib, rank);
#ifdef WITH_MPI
    MPI_Finalize();
#endif
    return 0;
}
