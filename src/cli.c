#include "cli.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "common.h"

void die(const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    fprintf(stderr, "pathformer: ");
    vfprintf(stderr, fmt, args);
    fprintf(stderr, "\n");
    va_end(args);
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
