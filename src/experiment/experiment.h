// The whole experiment of SPEC §4 as one pipeline of phases in one run folder: pre-train, evaluate
// the pre-trained model on `pretrain` and on `tune` (the untuned baseline), fine-tune, evaluate the
// tuned model on `tune`, on `pretrain` again (forgetting) and on the five test sets, and write the
// report. A phase-state file (state.json) records finished phases, so an interrupted run continues
// where it stopped; a training phase interrupted mid-way continues through train_run's own resume.
#ifndef PATHFORMER_EXPERIMENT_H
#define PATHFORMER_EXPERIMENT_H

#include "experiment/experiment_config.h"

typedef struct {
    int resume;           // continue the run the folder holds (its experiment.json must equal cfg)
    int only_phase;       // -1: all phases; else run just this one (its predecessors must be finished)
    long stop_after;      // > 0: a training phase stops after this many steps (continue with resume)
} ExperimentOptions;

// Runs the experiment into run_dir. 0 when done (or stopped as asked), TRAIN_INTERRUPTED after a
// clean Ctrl-C, -1 with the error set.
int experiment_run(const ExperimentConfig *cfg, const char *run_dir, const ExperimentOptions *options);

// Which phases the text of a state.json marks finished, and the seconds spent in each. `name`
// names the file in errors. 0, or -1 with the error set (the text is not a phase-state file).
int experiment_parse_state(int done[NUM_PHASES], double seconds[NUM_PHASES], const char *text, const char *name);

#endif
