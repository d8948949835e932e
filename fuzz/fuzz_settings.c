// Settings: a run's config.json (config_from_json, then the checks of config_finalize), a key=value
// assignment, and an experiment's experiment.json.
#include "config.h"
#include "experiment/experiment.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = fuzz_text(data, size);
    static RunConfig cfg;
    config_preset(&cfg, "tiny");
    if (config_from_json(&cfg, text) == 0) config_finalize(&cfg);
    config_preset(&cfg, "tiny");
    if (config_set(&cfg, text) == 0) config_finalize(&cfg);
    static ExperimentConfig experiment;
    if (experiment_from_json(&experiment, text) == 0) {
        experiment_finalize(&experiment);
        char *back = experiment_to_json(&experiment);
        free(back);
    }
    experiment_preset(&experiment, "tiny");
    experiment_set(&experiment, text);
    free(text);
    return 0;
}
