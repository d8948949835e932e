// The files a resume reads back from a run folder besides the config: an experiment's state.json,
// a run over seeds' seeds.json and a sweep's sweep.json.
#include "experiment/experiment.h"
#include "experiment/seeds.h"
#include "experiment/sweep.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = fuzz_text(data, size);
    int done[NUM_PHASES];
    double seconds[NUM_PHASES];
    experiment_parse_state(done, seconds, text, "state.json");
    uint64_t seeds[MAX_SEEDS];
    int num_seeds;
    experiment_parse_seeds(seeds, &num_seeds, text, "seeds.json");
    static SweepSpec spec;  // 16 MB: too large for the stack
    sweep_parse_spec(&spec, text);
    free(text);
    return 0;
}
