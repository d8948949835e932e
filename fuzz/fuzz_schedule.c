// Learning-rate schedules: parsed, read at a few steps (every rate finite and non-negative), and
// written back as text that parses to the same schedule.
#include <math.h>

#include "adam.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = fuzz_text(data, size);
    LrSchedule s, back;
    if (lr_schedule_parse(&s, text) == 0) {
        long total = lr_schedule_total_steps(&s);
        long steps[] = {0, 1, total / 3, total / 2, total - 1, total, total + 7};
        for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
            double rate = lr_schedule_at(&s, steps[i]);
            if (!(rate >= 0.0) || !isfinite(rate)) abort();
        }
        char formatted[8192];
        lr_schedule_format(&s, formatted, sizeof(formatted));
        if (strlen(formatted) < sizeof(formatted) - 1 && lr_schedule_parse(&back, formatted) != 0) abort();
    }
    free(text);
    return 0;
}
