// Data-parallel training over processes: the ranks that an MPI launcher (mpirun, srun) starts each
// run a share of every step's micro-batches and the step's gradient is combined so that every rank
// holds the same bits, those of one process (README: Scaling out).
//
// The shares follow the micro-batch tree of train.c (GradientTree): the step's micro-batches
// [0, n) are cut into K contiguous ranges, rank r taking [n r / K, n (r + 1) / K), and a rank's
// range into the tree's largest whole sub-trees inside it, its pieces. Each rank sums each of its
// pieces in its own tree, as one process would; the pieces of every rank are then combined in the
// tree's own order on every rank, so the sum is that of one process for any K. The exchange is by
// slices: rank s gathers slice s of every piece (all-to-all), combines them, and the combined slices
// are gathered back.
//
// dist.c holds what is plain arithmetic (the shares, the combination); the launcher's side is
// dist_mpi.c in a build with MPI and dist_single.c (one process) in one without.
#ifndef PATHFORMER_DIST_H
#define PATHFORMER_DIST_H

#include <signal.h>
#include <stddef.h>

// Micro-batches [first, end) of a step, one whole sub-tree of its micro-batch tree.
typedef struct {
    long first, end;
} DistPiece;

// Rank `rank`'s micro-batches of a step of n: [n rank / ranks, n (rank + 1) / ranks).
void dist_range(long n, int rank, int ranks, long *first, long *end);
// The largest sub-trees of the tree over [0, n) that lie inside [first, end), in order; returns
// their count (at most dist_max_pieces(n), of which only `max` are written).
int dist_pieces(DistPiece *pieces, int max, long n, long first, long end);
// An upper bound on the pieces of one rank's range for any step of at most n micro-batches.
int dist_max_pieces(long n);
// Sums parts[i] (one per piece, len floats each; pieces in order and covering [0, n)) in the
// micro-batch tree's order, in place; returns the buffer holding the sum (one of parts).
float *dist_combine(float *const *parts, const DistPiece *pieces, int count, long n, size_t len);
// Slice s of K of a vector of n floats: [*first, *first + *count), the first n % K slices one longer.
void dist_slice(int s, int K, size_t n, size_t *first, size_t *count);

// The launcher's side. dist_init starts MPI when an MPI launcher started this process (otherwise
// this is the one rank of one); ranks other than 0 print nothing from then on.
int dist_init(int *argc, char ***argv);
int dist_rank(void);
int dist_size(void);
// What this binary was built with, for --version ("Open MPI 4.1.4", "none").
const char *dist_library(void);
// The flag (a signal handler's) that ends every wait below: they return 1 once it is set.
void dist_watch(volatile sig_atomic_t *stop);

// Rank 0's instructions to the other ranks, which follow them (train.c: train_follow): a training
// run (then its steps, then its end), an evaluation (eval.c), the end of the process.
typedef enum { DIST_TRAIN = 1, DIST_STEP, DIST_TRAIN_END, DIST_EVAL, DIST_DONE } DistKind;
typedef struct {
    int kind;    // DistKind
    int status;  // DIST_DONE: the exit status
    long step;   // DIST_STEP: the step to run
} DistControl;
// Rank 0 sends *msg, the others receive it. 0, or 1 when the watched flag was set while waiting.
int dist_control(DistControl *msg);
// Rank 0's bytes to every rank. 0, or 1 when the watched flag was set while waiting.
int dist_broadcast(void *data, size_t bytes);
// items holds n items of item_bytes; each rank's own, those of dist_range(n, rank, ranks), are
// copied to every rank. 0, or 1 when the watched flag was set while waiting.
int dist_gather(void *items, size_t item_bytes, long n);

// The gradient exchange of one rank: its pieces put one by one, then every rank's combined.
typedef struct DistExchange DistExchange;
// For gradients of len floats and steps of at most max_micro micro-batches.
DistExchange *dist_exchange_create(size_t len, long max_micro);
void dist_exchange_free(DistExchange *ex);
// This rank's piece `piece` of `count` (dist_pieces of its range) for the step of n micro-batches.
void dist_exchange_put(DistExchange *ex, int piece, int count, const float *sum);
// out = the pieces of every rank combined in the tree over [0, n). 0, or 1 when the watched flag
// was set while waiting.
int dist_exchange_sum(DistExchange *ex, float *out, long n);

// The end of the process with `status`: rank 0 tells the others, and MPI ends, unless the watched
// flag is set (an interrupt: a rank may be inside a collective; the launcher ends the job when
// this rank exits). Returns status.
int dist_end(int status);

#endif
