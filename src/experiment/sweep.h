// Sweeps: many training runs that differ in some settings and in the seed, each in its own run
// folder under one sweep folder, each stopped at the same budget (examples, or seconds of
// training), evaluated on fresh examples, and compared in one table (sweep.csv, sweep.json) and a
// report with every run's loss against examples seen and against training time on shared axes.
// A sweep is stopped and resumed like a run: finished runs are kept, an unfinished one continues
// from its checkpoint.
#ifndef PATHFORMER_SWEEP_H
#define PATHFORMER_SWEEP_H

#include <stdint.h>

#include "config.h"

#define SWEEP_MAX_RUNS 256
#define SWEEP_MAX_SETTINGS 16
#define SWEEP_SETTING_MAX 300

// One run of the sweep: its settings (key=value, applied after the base) and its seed.
typedef struct {
    char name[32];  // r01-s1: the settings' index and the seed
    int num_settings;
    char settings[SWEEP_MAX_SETTINGS][SWEEP_SETTING_MAX];
    uint64_t seed;
} SweepRun;

typedef struct {
    char preset[32];               // the train preset each run starts from
    int num_base;                  // settings every run shares
    char base[SWEEP_MAX_SETTINGS][SWEEP_SETTING_MAX];
    long budget_examples;          // > 0: each run stops after this many examples (a whole step more at most)
    double budget_seconds;         // > 0: each run stops after this much training time
    long eval_examples;            // fresh examples of the training set per run's evaluation
    int num_runs;
    SweepRun runs[SWEEP_MAX_RUNS];
} SweepSpec;

// Builds the runs from the command line's settings: a key given once holds for every run; a key
// given several times is an axis, and the runs are the grid of every axis' values (in the order
// given, the first axis slowest) times the seeds. Alternatively list_path names a JSON Lines file,
// one object of settings per line, each line a run (times the seeds). 0 or -1 with the error set.
int sweep_build(SweepSpec *spec, const char *preset, int num_settings, const char *const *settings,
                const char *list_path, const uint64_t *seeds, int num_seeds);
// Runs (or resumes) the sweep in dir: writes sweep.json first, then each run in dir/runs/NAME,
// then sweep.csv, sweep.json's results and report.html. resume continues the sweep dir holds
// (spec may then be NULL). 0, TRAIN_INTERRUPTED after Ctrl-C, or -1 with the error set.
int sweep_run(const SweepSpec *spec, const char *dir, int resume);
// The spec a sweep.json text holds (what --resume reads). 0, or -1 with the error set.
int sweep_parse_spec(SweepSpec *spec, const char *text);

#endif
