// Common includes for the cmocka unit tests, and small helpers they share.
#ifndef PATHFORMER_TESTUTIL_H
#define PATHFORMER_TESTUTIL_H

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <setjmp.h>
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "common.h"
#include "ops/ops.h"

// True under an emulator (scripts/variant_tests.sh sets PF_EMULATED=1 under qemu-user).
static inline int test_emulated(void) {
    const char *e = getenv("PF_EMULATED");
    return e && e[0] == '1';
}

// True under the sanitizer build (tests/run_tests.sh sets PF_SANITIZER=1) or an emulator: slow
// tests size down.
static inline int test_under_sanitizer(void) {
    const char *v = getenv("PF_SANITIZER");
    return (v && v[0] == '1') || test_emulated();
}

// Runs the cmocka group once for every kernel variant this CPU runs (ops_kernel_variants), each
// run named after its variant; returns the failures of all runs together. The variants give the
// same bits (test_determinism); a test that holds each to the reference runs its group here.
static inline int test_run_group_per_variant(const struct CMUnitTest *tests, size_t count) {
    char variants[128], *rest = NULL;
    snprintf(variants, sizeof(variants), "%s", ops_kernel_variants());
    int failed = 0;
    for (char *v = strtok_r(variants, " ", &rest); v; v = strtok_r(NULL, " ", &rest)) {
        if (ops_set_kernels_variant(v) != 0) {
            fprintf(stderr, "cannot select kernel variant %s\n", v);
            return failed + 1;
        }
        failed += _cmocka_run_group_tests(v, tests, count, NULL, NULL);
    }
    return failed;
}
#define test_run_per_variant(tests) test_run_group_per_variant((tests), sizeof(tests) / sizeof((tests)[0]))

// A fresh scratch folder under $TMPDIR (or /tmp), created once per call.
static inline void test_scratch_dir(char *out, size_t size, const char *tag) {
    const char *base = getenv("TMPDIR");
    snprintf(out, size, "%s/pathformer-%s-XXXXXX", base && base[0] ? base : "/tmp", tag);
    if (!mkdtemp(out)) fail_msg("cannot create scratch folder %s", out);
}

// The whole of dir/name (dir may be NULL: name is then the path); a missing file fails the test.
static inline char *test_read_file(const char *dir, const char *name) {
    char path[2048];
    if (dir)
        snprintf(path, sizeof(path), "%s/%s", dir, name);
    else
        snprintf(path, sizeof(path), "%s", name);
    size_t size;
    char *text = pf_read_file(path, &size);
    if (!text) fail_msg("%s", pf_last_error());
    return text;
}

// ---------------------------------------------------------------------------------------------
// Running the pathformer binary ($PF_BIN, default ./pathformer) with exact arguments: posix_spawn,
// no shell; stdin, stdout and stderr are unlinked temporary files, which (unlike pipes) never block
// the child and need no cleaning up.

extern char **environ;

typedef struct {
    pid_t pid;
    int out_fd, err_fd;
} TestChild;

typedef struct {
    int status;  // exit status (a death by signal fails the test instead)
    char *out, *err;
} TestResult;

static inline const char *test_binary_path(void) {
    const char *bin = getenv("PF_BIN");
    return bin && bin[0] ? bin : "./pathformer";
}

static inline int test_temp_file(void) {
    const char *base = getenv("TMPDIR");
    char path[512];
    snprintf(path, sizeof(path), "%s/pathformer-test-io-XXXXXX", base && base[0] ? base : "/tmp");
    int fd = mkostemp(path, O_CLOEXEC);
    if (fd < 0) fail_msg("cannot create %s: %s", path, strerror(errno));
    unlink(path);
    return fd;
}

static inline char *test_read_fd(int fd) {
    struct stat st;
    if (fstat(fd, &st) != 0) fail_msg("fstat: %s", strerror(errno));
    size_t size = (size_t)st.st_size;
    char *text = malloc(size + 1);
    if (!text) fail_msg("out of memory");
    if (pread(fd, text, size, 0) != (ssize_t)size) fail_msg("cannot read child output: %s", strerror(errno));
    text[size] = '\0';
    return text;
}

// Starts `pathformer args...` (args NULL-terminated) with stdin_text (or nothing) on its stdin.
static inline TestChild test_spawn(const char *const *args, const char *stdin_text) {
    int in_fd = test_temp_file();
    if (stdin_text) {
        size_t len = strlen(stdin_text);
        if (pwrite(in_fd, stdin_text, len, 0) != (ssize_t)len) fail_msg("cannot write stdin: %s", strerror(errno));
    }
    TestChild child = {0, test_temp_file(), test_temp_file()};
    int argc = 0;
    while (args[argc]) argc++;
    char **argv = malloc(sizeof(char *) * (size_t)(argc + 2));
    if (!argv) fail_msg("out of memory");
    argv[0] = (char *)test_binary_path();
    for (int i = 0; i < argc; i++) argv[i + 1] = (char *)args[i];
    argv[argc + 1] = NULL;
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, in_fd, STDIN_FILENO);
    posix_spawn_file_actions_adddup2(&actions, child.out_fd, STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&actions, child.err_fd, STDERR_FILENO);
    int rc = posix_spawn(&child.pid, argv[0], &actions, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    free(argv);
    close(in_fd);
    if (rc != 0) fail_msg("cannot run %s: %s (set PF_BIN)", test_binary_path(), strerror(rc));
    return child;
}

// Waits for the child and collects what it wrote; a sanitizer report or a signal fails the test.
static inline TestResult test_finish(TestChild child) {
    int wait_status;
    while (waitpid(child.pid, &wait_status, 0) < 0)
        if (errno != EINTR) fail_msg("waitpid: %s", strerror(errno));
    TestResult result = {0, test_read_fd(child.out_fd), test_read_fd(child.err_fd)};
    close(child.out_fd);
    close(child.err_fd);
    if (WIFSIGNALED(wait_status))
        fail_msg("pathformer died of signal %d; stderr:\n%s", WTERMSIG(wait_status), result.err);
    if (strstr(result.err, "AddressSanitizer") || strstr(result.err, "runtime error") ||
        strstr(result.err, "LeakSanitizer"))
        fail_msg("sanitizer report:\n%s", result.err);
    result.status = WEXITSTATUS(wait_status);
    return result;
}

static inline TestResult test_run(const char *const *args, const char *stdin_text) {
    return test_finish(test_spawn(args, stdin_text));
}

static inline void test_result_free(TestResult *result) {
    free(result->out);
    free(result->err);
}

// TEST_RUN(stdin_text, "gen", "--set", ...) runs the binary with exactly these arguments.
#define TEST_RUN(stdin_text, ...) test_run((const char *const[]){__VA_ARGS__, NULL}, stdin_text)

#endif
