// Shared helpers: checked allocation and file I/O that exit with file/line and the OS error,
// and a recoverable error channel for bad input (library functions return -1 and set a message;
// the command line prints it on one line and exits non-zero).
#ifndef PATHFORMER_COMMON_H
#define PATHFORMER_COMMON_H

#include <stddef.h>
#include <stdio.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#define PF_VERSION "0.1.0"
// Longest path a run folder or checkpoint setting may hold.
#define PF_PATH_MAX 1024

void *malloc_check(size_t size, const char *file, int line);
void *calloc_check(size_t count, size_t size, const char *file, int line);
// Large working memory (a model's activations and training scratch: tens of MiB touched on every
// step), in whole 2 MiB pages and, where the system offers them, asked for as huge pages: with 4 KiB
// pages an AVX2 training step ran 1-3% slower. Freed with free().
void *large_alloc_check(size_t size, const char *file, int line);
FILE *fopen_check(const char *path, const char *mode, const char *file, int line);
void fread_check(void *ptr, size_t size, size_t count, FILE *stream, const char *file, int line);
void fwrite_check(const void *ptr, size_t size, size_t count, FILE *stream, const char *file, int line);
void fclose_check(FILE *stream, const char *file, int line);

#define mallocCheck(size) malloc_check(size, __FILE__, __LINE__)
#define callocCheck(count, size) calloc_check(count, size, __FILE__, __LINE__)
#define largeAllocCheck(size) large_alloc_check(size, __FILE__, __LINE__)
#define fopenCheck(path, mode) fopen_check(path, mode, __FILE__, __LINE__)
#define freadCheck(ptr, size, count, stream) fread_check(ptr, size, count, stream, __FILE__, __LINE__)
#define fwriteCheck(ptr, size, count, stream) fwrite_check(ptr, size, count, stream, __FILE__, __LINE__)
#define fcloseCheck(stream) fclose_check(stream, __FILE__, __LINE__)

// The calling thread's number in its parallel region and the region's thread count (0 and 1 outside
// one, or without OpenMP), and its share [lo, hi) of `total` items split in contiguous ranges.
static inline int pf_thread_id(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

static inline int pf_thread_count(void) {
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

static inline void pf_thread_share(int total, int *lo, int *hi) {
    int threads = pf_thread_count(), id = pf_thread_id();
    *lo = (int)((long)total * id / threads);
    *hi = (int)((long)total * (id + 1) / threads);
}

// Records a one-line message for the caller (printf-style) and returns -1, so that
// `return pf_fail("bad thing %d", x);` reads naturally in functions returning int.
int pf_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
const char *pf_last_error(void);

// Reads a whole file into a fresh buffer; returns NULL and sets the error on failure.
char *pf_read_file(const char *path, size_t *size_out);
// pf_read_file, with "-" meaning all of standard input.
char *pf_read_input(const char *path, size_t *size_out);
// A whole JSON file parsed (free with cJSON_Delete); NULL with the error set when it cannot be read
// or is not valid JSON.
struct cJSON;
struct cJSON *pf_read_json(const char *path);

// Writes `size` bytes to `path` atomically: a temporary file in the same folder, fsync, rename, fsync
// of the folder.
// Returns 0, or -1 with the error set (the old file, if any, is left untouched).
int pf_write_file_atomic(const char *path, const void *data, size_t size);

// Renames from to to, then fsyncs the folder: after it returns, the rename survives a crash.
int pf_rename_durable(const char *from, const char *to);
// Takes dir/.lock exclusively (flock, released when the process ends however it ends) and writes
// the pid into it; a second process gets a one-line error naming the holder's pid. *fd_out keeps
// the lock until pf_unlock_folder.
int pf_lock_folder(const char *dir, int *fd_out);
void pf_unlock_folder(int fd);
// The folder holding pathformer's own files (scripts, node_modules): $PATHFORMER_HOME when set (the
// only one tried then), else the executable's folder or one of its two parents (or its
// share/pathformer, where `make install` puts them beside PREFIX/bin), else the current folder; the first for which has(folder) is true goes to out. 1 when found, 0 when not.
int pf_find_home(int (*has)(const char *folder), char *out, size_t size);
// A place where the kill tests may stop the process (PF_FAULT_KILL_AT=N: SIGKILL at the N-th).
void pf_fault_point(void);

// out = dir/name; 0, or -1 with the error set when it does not fit in size (out is then cut).
int pf_path_join(char *out, size_t size, const char *dir, const char *name);
// Whether something exists at path.
int pf_file_exists(const char *path);

struct cJSON;
// Writes a cJSON tree as text (indented when pretty, else on one line) with pf_write_file_atomic.
int pf_write_json_atomic(const char *path, const struct cJSON *json, int pretty);

// Creates a folder (and its parents); 0 on success or if it exists.
int pf_mkdir_p(const char *path);

double pf_now_seconds(void);
// The median of n values (sorted in place); NaN when n = 0.
double pf_median(double *values, int n);

// cos(pi t) for t in [0, 2] and the natural logarithm of x > 0, in double precision to within a few
// units in the last place, by additions, multiplications and divisions alone: the same bits on every
// machine (the C library's cos and log have a variant per instruction set on x86-64, which may
// differ in the last bit). For what a training run computes: the cosine schedule, initial weights.
double pf_cos_pi(double t);
double pf_log(double x);

#endif
