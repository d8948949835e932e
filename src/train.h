// The training loop: fresh batches per step from a named data set, gradient accumulation over
// micro-batches, Adam with a learning-rate schedule, CSV logging, progress, checkpoints, resume.
#ifndef PATHFORMER_TRAIN_H
#define PATHFORMER_TRAIN_H

#include "config.h"

// Exit status of an interrupted (Ctrl-C) run whose checkpoint was saved.
#define TRAIN_INTERRUPTED 130

// Trains into run_dir: a fresh run needs a folder without a checkpoint; resume continues the
// run the folder holds (its config.json must equal cfg). With stop_after > 0, stops after that
// many steps of this session and checkpoints (continue later with resume). Returns 0 when
// finished or stopped as asked, TRAIN_INTERRUPTED after a clean stop on Ctrl-C, -1 with the
// error set on failure.
int train_run(const RunConfig *cfg, const char *run_dir, int resume, long stop_after);

// Reads a run folder's config.json.
int train_load_run_config(RunConfig *cfg, const char *run_dir);

#endif
