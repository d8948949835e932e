// The training loop: fresh batches per step from a named data set, gradient accumulation over
// micro-batches, Adam with a learning-rate schedule, CSV logging, progress, checkpoints, resume.
#ifndef PATHFORMER_TRAIN_H
#define PATHFORMER_TRAIN_H

#include "batch.h"
#include "config.h"

// Loss statistics of one batch.
typedef struct {
    double sse;  // sum of squared errors
    double label_sse[PF_MAX_VERTICES + 1];
    long label_count[PF_MAX_VERTICES + 1];
} BatchStats;

// Data-parallel gradient accumulation: each worker thread runs its own micro-batches of a step on
// its own replica of the model (shared parameters, own gradients and activations). The step's
// gradient is the sum of the micro-batches' gradients in one binary tree over their index (pairs,
// then pairs of pairs; a partial tree at the end), added in micro-batch order whichever thread ran
// each, and the loss statistics are summed in micro-batch order: a step's result depends on neither
// the thread count nor timing.
typedef struct GradientWorkers GradientWorkers;
GradientWorkers *gradient_workers_create(Model *model, const RunConfig *cfg, int threads);
int gradient_workers_count(const GradientWorkers *workers);
// Leaves the gradient of the MSE of step `step`'s full batch in model->grads and its statistics in
// *stats. Returns 0, or 1 when Ctrl-C came part-way (the step is void).
int gradient_workers_step(GradientWorkers *workers, const DataSet *set, long step, BatchStats *stats);
// The examples the last step ran: its distinct examples, or its whole batch when cfg->dedupe is 0.
const Batch *gradient_workers_last_batch(const GradientWorkers *workers);
void gradient_workers_free(GradientWorkers *workers);

// Exit status of an interrupted (Ctrl-C) run whose checkpoint was saved.
#define TRAIN_INTERRUPTED 130

// Trains into run_dir: a fresh run needs a folder without a checkpoint; resume continues the
// run the folder holds (its config.json must equal cfg). With stop_after > 0, stops after that
// many steps of this session and checkpoints (continue later with resume). Returns 0 when
// finished or stopped as asked, TRAIN_INTERRUPTED after a clean stop on Ctrl-C, -1 with the
// error set on failure.
int train_run(const RunConfig *cfg, const char *run_dir, int resume, long stop_after);

// The life of an MPI rank other than 0 (dist.h): it follows rank 0's runs, each train_run of rank 0
// (its settings, weights and optimizer state sent over), running its share of each step and the
// same update, and each eval_model (its share of the predictions), and writes nothing; rank 0's end of the process ends it. Returns the exit status:
// rank 0's, or TRAIN_INTERRUPTED after a Ctrl-C (SIGINT or SIGTERM).
int train_follow(void);

// A wall-clock limit for the next train_run calls of this process: > 0 stops a run (checkpointed,
// as stop_after does) once this many seconds of its session have passed; 0 = none.
void train_set_time_limit(double seconds);

// Training examples per second of cfg on this machine, measured on a few steps of a fresh model
// (batches of cfg->batch_size, at most 4,096, from steps far past any run's); for estimates before a
// run starts. -1 with the error set on bad settings.
double train_measure_rate(const RunConfig *cfg);

// Whether run_dir holds a checkpoint to resume, after finishing or dropping a commit that a kill
// interrupted (train.c: one checkpoint, one unit). 1, 0, or -1 with the error set.
int train_has_checkpoint(const char *run_dir);

// Reads a run folder's config.json.
int train_load_run_config(RunConfig *cfg, const char *run_dir);

#endif
