// The launcher's side of dist.h in a build without MPI: one process, rank 0 of 1. Nothing here is
// reached with more than one rank; the exchange's functions are never called.
#include <stdio.h>
#include <stdlib.h>

#include "dist.h"

int dist_init(int *argc, char ***argv) { return 0; }
int dist_rank(void) { return 0; }
int dist_size(void) { return 1; }
const char *dist_library(void) { return "none"; }
void dist_watch(volatile sig_atomic_t *stop) {}
int dist_control(DistControl *msg) { return 0; }
int dist_broadcast(void *data, size_t bytes) { return 0; }
int dist_gather(void *items, size_t item_bytes, long n) { return 0; }

static void unreachable(const char *name) {
    fprintf(stderr, "%s: this build has no MPI\n", name);
    abort();
}
DistExchange *dist_exchange_create(size_t len, long max_micro) {
    unreachable("dist_exchange_create");
    return NULL;
}
void dist_exchange_free(DistExchange *ex) {}
void dist_exchange_put(DistExchange *ex, int piece, int count, const float *sum) {
    unreachable("dist_exchange_put");
}
int dist_exchange_sum(DistExchange *ex, float *out, long n) {
    unreachable("dist_exchange_sum");
    return 1;
}
int dist_end(int status) { return status; }
