// Common includes for the cmocka unit tests, and small helpers they share.
#ifndef PATHFORMER_TESTUTIL_H
#define PATHFORMER_TESTUTIL_H

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common.h"

// True under the sanitizer build (tests/run_tests.sh sets PF_SANITIZER=1): slow tests size down.
static inline int test_under_sanitizer(void) {
    const char *v = getenv("PF_SANITIZER");
    return v && v[0] == '1';
}

// A fresh scratch folder under $TMPDIR (or /tmp), created once per call.
static inline void test_scratch_dir(char *out, size_t size, const char *tag) {
    const char *base = getenv("TMPDIR");
    snprintf(out, size, "%s/pathformer-%s-XXXXXX", base && base[0] ? base : "/tmp", tag);
    if (!mkdtemp(out)) fail_msg("cannot create scratch folder %s", out);
}

#endif
