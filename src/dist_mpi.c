// The launcher's side of dist.h over MPI (compiled only in a build with MPI). Every wait is a
// non-blocking collective polled until it completes, so that a Ctrl-C (a signal handler's flag) ends
// it, and so that a rank that waits for a slower one leaves its cores to it (it sleeps between
// polls). A rank that dies ends the job: MPI_COMM_WORLD keeps MPI's default handler (errors are
// fatal) and the launcher (mpirun, srun) kills the other ranks when one exits abnormally; a rank
// that hangs instead ends the job after PF_MPI_TIMEOUT seconds (default 600) in one exchange.
#include <fcntl.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "dist.h"

static int started, rank, ranks = 1;
static volatile sig_atomic_t *watched;
static double exchange_timeout = 600.0;
static int real_stderr = -1;  // a silenced rank's own stderr, for the message that ends the job
static int *gather_counts;    // dist_gather's counts and offsets, per rank (allocated once)

// Whether an MPI launcher started this process: Open MPI's mpirun, a PMI or PMIx one (srun, MPICH's
// mpiexec). Without one, the binary runs as one process and never starts MPI.
static int launched_by_mpi(void) {
    const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"};
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
        if (getenv(vars[i])) return 1;
    return 0;
}

int dist_init(int *argc, char ***argv) {
    if (!launched_by_mpi()) return 0;
    int provided;
    // FUNNELED: OpenMP threads compute, only the main thread calls MPI
    MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
    started = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &ranks);
    gather_counts = mallocCheck(sizeof(int) * 2 * (size_t)ranks);
    const char *timeout = getenv("PF_MPI_TIMEOUT");
    if (timeout && *timeout) {
        char *end;
        double seconds = strtod(timeout, &end);
        if (*end != '\0' || !(seconds >= 0)) {
            if (rank == 0) fprintf(stderr, "error: PF_MPI_TIMEOUT='%s' is not a number of seconds\n", timeout);
            MPI_Abort(MPI_COMM_WORLD, 2);
        }
        exchange_timeout = seconds;
    }
    if (rank != 0) {  // rank 0 alone prints
        fflush(NULL);
        real_stderr = dup(STDERR_FILENO);
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0) {
            dup2(null, STDOUT_FILENO);
            dup2(null, STDERR_FILENO);
            close(null);
        }
    }
    return 0;
}

int dist_rank(void) { return rank; }
int dist_size(void) { return ranks; }

const char *dist_library(void) {
    static char text[MPI_MAX_LIBRARY_VERSION_STRING];
    int length;
    MPI_Get_library_version(text, &length);
    char *newline = strpbrk(text, ",\n");  // "Open MPI v4.1.4, package: ..." -> "Open MPI v4.1.4"
    if (newline) *newline = '\0';
    return text;
}

void dist_watch(volatile sig_atomic_t *stop) { watched = stop; }

// Polls *request until it completes: 0; 1 when the watched flag is set first (the request is left:
// the process is about to end). With a timeout (> 0), a wait longer than it ends the job.
static int wait_for(MPI_Request *request, double timeout) {
    double start = MPI_Wtime();
    struct timespec nap = {0, 50000};
    for (long polls = 0;; polls++) {
        int done = 0;
        MPI_Test(request, &done, MPI_STATUS_IGNORE);
        if (done) return 0;
        if (watched && *watched) return 1;
        if (timeout > 0 && MPI_Wtime() - start > timeout) {
            char line[160];
            int length = snprintf(line, sizeof(line),
                                  "pathformer: rank %d waited %.0f s for the other ranks (PF_MPI_TIMEOUT): ending "
                                  "the job\n",
                                  rank, timeout);
            if (write(real_stderr >= 0 ? real_stderr : STDERR_FILENO, line, (size_t)length) < 0) length = 0;
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
        if (polls > 1000) nanosleep(&nap, NULL);  // a slower rank may need this core
    }
}

int dist_control(DistControl *msg) {
    MPI_Request request;
    MPI_Ibcast(msg, (int)sizeof(*msg), MPI_BYTE, 0, MPI_COMM_WORLD, &request);
    return wait_for(&request, 0);
}

int dist_broadcast(void *data, size_t bytes) {
    const size_t most = (size_t)1 << 30;  // MPI counts are ints
    for (size_t done = 0; done < bytes; done += most) {
        size_t count = bytes - done < most ? bytes - done : most;
        MPI_Request request;
        MPI_Ibcast((char *)data + done, (int)count, MPI_BYTE, 0, MPI_COMM_WORLD, &request);
        if (wait_for(&request, 0)) return 1;
    }
    return 0;
}

int dist_gather(void *items, size_t item_bytes, long n) {
    int *counts = gather_counts, *displs = counts + ranks;
    for (int r = 0; r < ranks; r++) {
        long first, end;
        dist_range(n, r, ranks, &first, &end);
        counts[r] = (int)((size_t)(end - first) * item_bytes);
        displs[r] = (int)((size_t)first * item_bytes);
    }
    MPI_Request request;
    MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_BYTE, items, counts, displs, MPI_BYTE, MPI_COMM_WORLD, &request);
    return wait_for(&request, exchange_timeout);
}

struct DistExchange {
    size_t len;           // floats per gradient
    int max_pieces;       // per rank
    float *send;          // this rank's pieces by destination: slice s of each piece, for each s
    float *recv;          // this rank's slice of every piece of every rank, in piece order
    float **parts;        // into recv, one per piece
    DistPiece *pieces;    // every rank's pieces, in order
    int *counts;          // per rank: send counts, send offsets, receive counts, receive offsets,
                          // slice sizes, slice offsets
};

DistExchange *dist_exchange_create(size_t len, long max_micro) {
    DistExchange *ex = mallocCheck(sizeof(DistExchange));
    ex->len = len;
    ex->max_pieces = dist_max_pieces(max_micro);
    size_t first, mine;
    dist_slice(0, ranks, len, &first, &mine);  // slice 0 is a longest
    size_t all_pieces = (size_t)ex->max_pieces * (size_t)ranks;
    ex->send = mallocCheck(sizeof(float) * len * (size_t)ex->max_pieces);
    ex->recv = mallocCheck(sizeof(float) * (mine ? mine : 1) * all_pieces);
    ex->parts = mallocCheck(sizeof(float *) * all_pieces);
    ex->pieces = mallocCheck(sizeof(DistPiece) * all_pieces);
    ex->counts = mallocCheck(sizeof(int) * 6 * (size_t)ranks);
    return ex;
}

void dist_exchange_free(DistExchange *ex) {
    if (!ex) return;
    free(ex->send);
    free(ex->recv);
    free(ex->parts);
    free(ex->pieces);
    free(ex->counts);
    free(ex);
}

void dist_exchange_put(DistExchange *ex, int piece, int count, const float *sum) {
    for (int s = 0; s < ranks; s++) {
        size_t first, size;
        dist_slice(s, ranks, ex->len, &first, &size);
        memcpy(ex->send + (size_t)count * first + (size_t)piece * size, sum + first, sizeof(float) * size);
    }
}

int dist_exchange_sum(DistExchange *ex, float *out, long n) {
    int *send_counts = ex->counts, *send_displs = send_counts + ranks, *recv_counts = send_displs + ranks,
        *recv_displs = recv_counts + ranks, *slice_counts = recv_displs + ranks, *slice_displs = slice_counts + ranks;
    size_t mine_first, mine;
    dist_slice(rank, ranks, ex->len, &mine_first, &mine);
    int total = 0, own = 0;
    for (int r = 0; r < ranks; r++) {
        long first, end;
        dist_range(n, r, ranks, &first, &end);
        int count = dist_pieces(ex->pieces + total, ex->max_pieces, n, first, end);
        if (count > ex->max_pieces) {  // dist_max_pieces bounds every range: a caller's bug
            fprintf(stderr, "dist_exchange_sum: %d pieces for at most %d\n", count, ex->max_pieces);
            abort();
        }
        if (r == rank) own = count;
        recv_counts[r] = (int)((size_t)count * mine);
        recv_displs[r] = (int)((size_t)total * mine);
        total += count;
    }
    for (int s = 0; s < ranks; s++) {
        size_t first, size;
        dist_slice(s, ranks, ex->len, &first, &size);
        send_counts[s] = (int)((size_t)own * size);
        send_displs[s] = (int)((size_t)own * first);
        slice_counts[s] = (int)size;
        slice_displs[s] = (int)first;
    }
    MPI_Request request;
    MPI_Ialltoallv(ex->send, send_counts, send_displs, MPI_FLOAT, ex->recv, recv_counts, recv_displs, MPI_FLOAT,
                   MPI_COMM_WORLD, &request);
    if (wait_for(&request, exchange_timeout)) return 1;
    for (int i = 0; i < total; i++) ex->parts[i] = ex->recv + (size_t)i * mine;
    const float *sum = dist_combine(ex->parts, ex->pieces, total, n, mine);
    MPI_Iallgatherv(sum, (int)mine, MPI_FLOAT, out, slice_counts, slice_displs, MPI_FLOAT, MPI_COMM_WORLD, &request);
    return wait_for(&request, exchange_timeout);
}

int dist_end(int status) {
    if (!started || (watched && *watched)) return status;
    if (rank == 0 && ranks > 1) {
        DistControl done = {.kind = DIST_DONE, .status = status};
        dist_control(&done);
    }
    free(gather_counts);
    MPI_Finalize();
    return status;
}
