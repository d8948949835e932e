// The experiment over several seeds (`pathformer run --seeds 1,2,3`): one full run folder per seed
// (DIR/seed-S), then every number of the report as the mean over the seeds with a 95% interval and
// the per-seed values, beside the published number and whether the interval holds it
// (DIR/metrics.json, DIR/report.html).
#ifndef PATHFORMER_SEEDS_H
#define PATHFORMER_SEEDS_H

#include <stdint.h>

#include "experiment/experiment.h"

#define MAX_SEEDS 32

// Mean and 95% interval of n values: mean ± t(0.975, n - 1) · s / √n (s the sample standard
// deviation); half_width is NAN for n < 2.
typedef struct {
    int n;
    double mean, sd, half_width;
} Interval;
Interval interval95(const double *values, int n);
// Student's t quantile t(0.975, df) for df >= 1 (exact to 3 decimals from a table; 1.96 past 120).
double t975(int df);

// Runs cfg once per seed into dir/seed-S (each an experiment_run with the seed replaced), then
// writes the summary over seeds. With options->resume, continues a folder made by this function
// (its seeds.json must list the same seeds). 0, TRAIN_INTERRUPTED, or -1 with the error set.
int experiment_run_seeds(const ExperimentConfig *cfg, const uint64_t *seeds, int num_seeds, const char *dir,
                         const ExperimentOptions *options);
// Reads the seeds of a multi-seed folder (dir/seeds.json) and the experiment config of its first
// seed; 0, 1 when dir is not a multi-seed folder, -1 with the error set.
int experiment_load_seeds(ExperimentConfig *cfg, uint64_t *seeds, int *num_seeds, const char *dir);

// The seeds a seeds.json text lists (1 to MAX_SEEDS distinct decimal strings). `name` names the
// file in errors. 0, or -1 with the error set.
int experiment_parse_seeds(uint64_t *seeds, int *num_seeds, const char *text, const char *name);

#endif
