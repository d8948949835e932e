// Shared by the libFuzzer targets: the input as a fresh NUL-terminated string (parsers of text take
// C strings; the fuzzer's bytes are not terminated and may hold NULs, which end the text early).
#ifndef PATHFORMER_FUZZ_H
#define PATHFORMER_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

static inline char *fuzz_text(const uint8_t *data, size_t size) {
    char *text = mallocCheck(size + 1);
    memcpy(text, data, size);
    text[size] = '\0';
    return text;
}

#endif
