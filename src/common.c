#include "common.h"

#include <errno.h>
#include <dirent.h>
#include <math.h>
#include <libgen.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

static _Thread_local char last_error[512];

int pf_fail(const char *fmt, ...) {
    // formatted aside first: the arguments may include pf_last_error() itself
    char message[sizeof(last_error)];
    va_list args;
    va_start(args, fmt);
    vsnprintf(message, sizeof(message), fmt, args);
    va_end(args);
    memcpy(last_error, message, sizeof(last_error));
    return -1;
}

const char *pf_last_error(void) { return last_error[0] ? last_error : "unknown error"; }

static void die_os(const char *what, const char *file, int line) {
    fprintf(stderr, "pathformer: %s failed at %s:%d: %s\n", what, file, line, strerror(errno));
    exit(EXIT_FAILURE);
}

void *malloc_check(size_t size, const char *file, int line) {
    void *ptr = malloc(size ? size : 1);
    if (!ptr) die_os("malloc", file, line);
    return ptr;
}

void *calloc_check(size_t count, size_t size, const char *file, int line) {
    void *ptr = calloc(count ? count : 1, size ? size : 1);
    if (!ptr) die_os("calloc", file, line);
    return ptr;
}

void *large_alloc_check(size_t size, const char *file, int line) {
    size_t huge = (size_t)2 << 20, bytes = (size + huge - 1) / huge * huge;
    if (size < huge) return malloc_check(size, file, line);
    void *ptr = aligned_alloc(huge, bytes);
    if (!ptr) die_os("aligned_alloc", file, line);
#ifdef MADV_HUGEPAGE
    madvise(ptr, bytes, MADV_HUGEPAGE);  // advice: where the system has no huge pages, nothing changes
#endif
    return ptr;
}

FILE *fopen_check(const char *path, const char *mode, const char *file, int line) {
    FILE *f = fopen(path, mode);
    if (!f) {
        fprintf(stderr, "pathformer: cannot open %s (%s) at %s:%d: %s\n", path, mode, file, line,
                strerror(errno));
        exit(EXIT_FAILURE);
    }
    return f;
}

void fread_check(void *ptr, size_t size, size_t count, FILE *stream, const char *file, int line) {
    if (fread(ptr, size, count, stream) != count) {
        if (feof(stream)) {
            fprintf(stderr, "pathformer: unexpected end of file at %s:%d\n", file, line);
            exit(EXIT_FAILURE);
        }
        die_os("fread", file, line);
    }
}

void fwrite_check(const void *ptr, size_t size, size_t count, FILE *stream, const char *file, int line) {
    if (fwrite(ptr, size, count, stream) != count) die_os("fwrite", file, line);
}

void fclose_check(FILE *stream, const char *file, int line) {
    if (fclose(stream) != 0) die_os("fclose", file, line);
}

char *pf_read_input(const char *path, size_t *size_out) {
    if (strcmp(path, "-") != 0) return pf_read_file(path, size_out);
    size_t size = 0, capacity = 4096;
    char *data = mallocCheck(capacity);
    for (;;) {
        size += fread(data + size, 1, capacity - size - 1, stdin);
        if (size < capacity - 1) break;
        char *bigger = mallocCheck(capacity * 2);
        memcpy(bigger, data, size);
        free(data);
        data = bigger;
        capacity *= 2;
    }
    if (ferror(stdin)) {
        free(data);
        pf_fail("cannot read standard input: %s", strerror(errno));
        return NULL;
    }
    data[size] = '\0';
    *size_out = size;
    return data;
}

cJSON *pf_read_json(const char *path) {
    size_t size;
    char *text = pf_read_file(path, &size);
    if (!text) return NULL;
    cJSON *json = cJSON_Parse(text);
    free(text);
    if (!json) pf_fail("%s is not valid JSON", path);
    return json;
}

char *pf_read_file(const char *path, size_t *size_out) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        pf_fail("cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        pf_fail("%s is not a regular file", path);
        return NULL;
    }
    size_t size = (size_t)st.st_size;
    char *data = mallocCheck(size + 1);
    if (size && fread(data, 1, size, f) != size) {
        fclose(f);
        free(data);
        pf_fail("cannot read %s: %s", path, strerror(errno));
        return NULL;
    }
    fclose(f);
    data[size] = '\0';
    *size_out = size;
    return data;
}

// Fault injection for the kill tests: PF_FAULT_KILL_AT=N kills the process (SIGKILL, as the OOM
// killer or a preempted job would) at the N-th fault point it passes.
void pf_fault_point(void) {
    static long remaining = -2;
    if (remaining == -2) {
        const char *v = getenv("PF_FAULT_KILL_AT");
        remaining = v && v[0] ? strtol(v, NULL, 10) : -1;
    }
    if (remaining > 0 && --remaining == 0) raise(SIGKILL);
}

// The folder holding path: "." for a bare name, "/" for a name at the root.
static void parent_folder(char *out, size_t size, const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(out, size, ".");
    else if (slash == path) snprintf(out, size, "/");
    else snprintf(out, size, "%.*s", (int)(slash - path), path);
}

// fsync of the folder holding path, so that a rename in it survives a power loss.
static int sync_parent(const char *path) {
    char dir[4096];
    parent_folder(dir, sizeof(dir), path);
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return pf_fail("cannot open folder %s: %s", dir, strerror(errno));
    int rc = fsync(fd) == 0 || errno == EINVAL ? 0 : pf_fail("cannot sync folder %s: %s", dir, strerror(errno));
    close(fd);
    return rc;
}

int pf_rename_durable(const char *from, const char *to) {
    pf_fault_point();
    if (rename(from, to) != 0) return pf_fail("cannot rename %s to %s: %s", from, to, strerror(errno));
    pf_fault_point();
    return sync_parent(to);
}

int pf_lock_folder(const char *dir, int *fd_out) {
    char path[4096];
    if ((size_t)snprintf(path, sizeof(path), "%s/.lock", dir) >= sizeof(path)) return pf_fail("path too long: %s", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return pf_fail("cannot write %s: %s", path, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        char holder[32] = "";
        ssize_t n = pread(fd, holder, sizeof(holder) - 1, 0);
        holder[n > 0 ? n : 0] = '\0';
        holder[strcspn(holder, "\n")] = '\0';
        close(fd);
        return pf_fail("%s is in use by another pathformer process (pid %s); wait for it or stop it", dir,
                       holder[0] ? holder : "unknown");
    }
    char pid[32];
    int len = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)len, 0) != len) {
        close(fd);
        return pf_fail("cannot write %s: %s", path, strerror(errno));
    }
    *fd_out = fd;
    return 0;
}

void pf_unlock_folder(int fd) {
    if (fd >= 0) close(fd);  // closing releases the lock
}

// A path that is not a regular file (a device such as /dev/stdout or /dev/null, a pipe) is written
// in place: renaming a temporary file over it would replace the device with a file.
static int write_in_place(const char *path, const void *data, size_t size) {
    int fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC);
    if (fd < 0) return pf_fail("cannot write %s: %s", path, strerror(errno));
    const char *p = data;
    while (size > 0) {
        ssize_t n = write(fd, p, size);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            int saved = n < 0 ? errno : ENOSPC;
            close(fd);
            return pf_fail("cannot write %s: %s", path, strerror(saved));
        }
        p += n;
        size -= (size_t)n;
    }
    if (close(fd) != 0) return pf_fail("cannot write %s: %s", path, strerror(errno));
    return 0;
}

// A writer killed between creating its temporary file and the rename leaves `path.tmp.PID`
// behind; the next write of the same path removes those whose process is gone.
static void remove_stale_temporaries(const char *path) {
    char dir[4096];
    parent_folder(dir, sizeof(dir), path);
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    size_t base_len = strlen(base);
    DIR *d = opendir(dir);
    if (!d) return;
    for (struct dirent *entry; (entry = readdir(d));) {
        const char *name = entry->d_name;
        if (strncmp(name, base, base_len) != 0 || strncmp(name + base_len, ".tmp.", 5) != 0) continue;
        char *end;
        long pid = strtol(name + base_len + 5, &end, 10);
        if (*end || pid <= 0 || pid == (long)getpid()) continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;  // its writer may still be at work
        char stale[4096 + 256];
        snprintf(stale, sizeof(stale), "%s/%s", dir, name);
        unlink(stale);
    }
    closedir(d);
}

int pf_write_file_atomic(const char *path, const void *data, size_t size) {
    struct stat st;
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
        if (S_ISDIR(st.st_mode)) return pf_fail("cannot write %s: it is a folder", path);
        return write_in_place(path, data, size);
    }
    remove_stale_temporaries(path);
    pf_fault_point();
    size_t len = strlen(path);
    char *tmp = mallocCheck(len + 32);
    snprintf(tmp, len + 32, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        int rc = pf_fail("cannot write %s: %s", path, strerror(errno));
        free(tmp);
        return rc;
    }
    int ok = fwrite(data, 1, size, f) == size;
    ok = ok && fflush(f) == 0 && fsync(fileno(f)) == 0;
    int saved_errno = errno;
    ok = (fclose(f) == 0) && ok;
    if (!ok) {
        unlink(tmp);
        int rc = pf_fail("cannot write %s: %s", path, strerror(saved_errno ? saved_errno : errno));
        free(tmp);
        return rc;
    }
    pf_fault_point();
    if (rename(tmp, path) != 0) {
        int rc = pf_fail("cannot rename %s to %s: %s", tmp, path, strerror(errno));
        unlink(tmp);
        free(tmp);
        return rc;
    }
    free(tmp);
    pf_fault_point();
    return sync_parent(path);
}

int pf_path_join(char *out, size_t size, const char *dir, const char *name) {
    if ((size_t)snprintf(out, size, "%s/%s", dir, name) >= size) return pf_fail("path too long: %s/%s", dir, name);
    return 0;
}

int pf_write_json_atomic(const char *path, const struct cJSON *json, int pretty) {
    char *text = pretty ? cJSON_Print(json) : cJSON_PrintUnformatted(json);
    if (!text) return pf_fail("cannot format %s", path);
    int rc = pf_write_file_atomic(path, text, strlen(text));
    free(text);
    return rc;
}

int pf_file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

int pf_mkdir_p(const char *path) {
    char buf[4096];
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof(buf)) return pf_fail("bad folder name '%s'", path);
    memcpy(buf, path, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (buf[i] == '/' || buf[i] == '\0') {
            char saved = buf[i];
            buf[i] = '\0';
            if (mkdir(buf, 0755) != 0 && errno != EEXIST)
                return pf_fail("cannot create folder %s: %s", buf, strerror(errno));
            buf[i] = saved;
        }
    }
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) return pf_fail("%s is not a folder", path);
    return 0;
}

double pf_now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double pf_median(double *values, int n) {
    if (n <= 0) return NAN;
    qsort(values, (size_t)n, sizeof(double), compare_doubles);
    return n % 2 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

int pf_find_home(int (*has)(const char *folder), char *out, size_t size) {
    const char *home = getenv("PATHFORMER_HOME");
    if (home && home[0]) {
        snprintf(out, size, "%s", home);
        return has(home);
    }
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *dir = dirname(exe);
        for (int up = 0; up < 3; up++) {
            // the folder itself (a build), or its share/pathformer (an install: PREFIX/bin's parent)
            char shared[4096 + 32];
            snprintf(shared, sizeof(shared), "%s/share/pathformer", dir);
            const char *found = has(dir) ? dir : has(shared) ? shared : NULL;
            if (found) {
                snprintf(out, size, "%s", found);
                return 1;
            }
            dir = dirname(dir);
        }
    }
    snprintf(out, size, ".");
    return has(".");
}

double pf_cos_pi(double t) {
    if (t > 1.0) t = 2.0 - t;               // cos(pi t) = cos(pi (2 - t))
    if (t > 0.5) return -pf_cos_pi(1.0 - t);  // cos(pi t) = -cos(pi (1 - t)); 1 - t is exact here
    // the Taylor series to x^22 on [0, pi/2]: truncation below 1e-19
    double x = M_PI * t, x2 = x * x, sum = 0.0, factorial = 1.0;
    double terms[12];
    for (int k = 0; k < 12; k++) {
        terms[k] = (k % 2 ? -1.0 : 1.0) / factorial;  // (-1)^k / (2k)!
        factorial *= (double)(2 * k + 1) * (double)(2 * k + 2);
    }
    for (int k = 11; k >= 0; k--) sum = sum * x2 + terms[k];
    return sum;
}

double pf_log(double x) {
    // x = m 2^e with m in [sqrt(1/2), sqrt(2)); log m = 2 atanh(s), s = (m - 1) / (m + 1), |s| < 0.172:
    // the series s + s^3/3 + ... to s^41 leaves below 1e-32
    int e;
    double m = frexp(x, &e);  // exact: [1/2, 1)
    if (m < M_SQRT1_2) {
        m *= 2.0;
        e--;
    }
    double s = (m - 1.0) / (m + 1.0), s2 = s * s, sum = 0.0;
    for (int k = 20; k >= 0; k--) sum = sum * s2 + 1.0 / (double)(2 * k + 1);
    return 2.0 * s * sum + (double)e * M_LN2;
}
