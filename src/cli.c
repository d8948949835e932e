#include "cli.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

// Where die writes: stderr, or the real stderr once cli_quiet has discarded the rest.
static FILE *error_stream;
static int failed;  // die has reported an error: the exit's status already says so

void die(const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    FILE *out = error_stream ? error_stream : stderr;
    fprintf(out, "pathformer: ");
    vfprintf(out, fmt, args);
    fprintf(out, "\n");
    va_end(args);
    failed = 1;
    exit(EXIT_FAILURE);
}

void die_error(void) { die("%s", pf_last_error()); }

const char *need_value(int argc, char **argv, int *i) {
    if (*i + 1 >= argc) die("option %s needs a value", argv[*i]);
    return argv[++*i];
}

long parse_long(const char *option, const char *text, long lo, long hi) {
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (end == text || *end != '\0' || errno || v < lo || v > hi)
        die("option %s: '%s' is not an integer in %ld..%ld", option, text, lo, hi);
    return v;
}

uint64_t parse_u64(const char *option, const char *text) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (end == text || *end != '\0' || errno || text[0] == '-')
        die("option %s: '%s' is not a non-negative integer", option, text);
    return v;
}

double parse_double(const char *option, const char *text, double lo, double hi) {
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (end == text || *end != '\0' || errno || !(v >= lo && v <= hi))
        die("option %s: '%s' is not a number in %g..%g", option, text, lo, hi);
    return v;
}

// "--name=value" or "-n=value": an option (a dash, then a letter or a second dash and a letter)
// whose name is followed by '='.
static const char *inline_value(const char *arg) {
    const char *p = arg + 1;
    if (*p == '-') p++;
    if (arg[0] != '-' || !((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z'))) return NULL;
    for (; *p && *p != '='; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-'))
            return NULL;
    return *p == '=' ? p : NULL;
}

// The normalized argument list lives as long as the process, as argv does (held here, so that it
// stays reachable after main returns: a leak checker at exit does not count it).
static char **volatile normalized_argv;  // volatile: a store the compiler may not drop

char **cli_normalize(int *argc, char **argv) {
    char **out = mallocCheck(sizeof(char *) * (2 * (size_t)*argc + 1));
    normalized_argv = out;
    int n = 0, quiet = 0;
    for (int i = 0; i < *argc; i++) {
        const char *eq = i > 0 ? inline_value(argv[i]) : NULL;
        if (i > 0 && (strcmp(argv[i], "--quiet") == 0 || strcmp(argv[i], "-q") == 0)) {
            quiet = 1;
        } else if (eq) {
            size_t len = (size_t)(eq - argv[i]);
            char *name = mallocCheck(len + 1);  // kept for the process's life, as argv is
            memcpy(name, argv[i], len);
            name[len] = '\0';
            out[n++] = name;
            out[n++] = (char *)eq + 1;
        } else {
            out[n++] = argv[i];
        }
    }
    out[n] = NULL;
    *argc = n;
    if (quiet) cli_quiet();
    return out;
}

int cli_failed(void) { return failed; }

FILE *cli_errors(void) { return error_stream ? error_stream : stderr; }

void cli_quiet(void) {
    FILE *sink = fopen("/dev/null", "w");
    if (!sink) return;
    error_stream = stderr;
    stderr = sink;  // glibc's stderr is a variable: writers that name it now write to the sink
}
