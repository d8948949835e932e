// train.csv as the report and sweeps read it back.
#include "fuzz.h"
#include "experiment/losscurve.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    LossLog log;
    if (losslog_parse(&log, fuzz_text(data, size), "fuzz") == 0) {
        for (long i = 0; i < log.n; i++) {
            volatile double v = losslog_label(&log, i, log.max_label);
            (void)v;
        }
        losslog_free(&log);
    }
    return 0;
}
