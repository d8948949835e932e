// Training logs read back for analysis: the per-step CSV that train_run writes (train.csv), and the
// detection of phase changes — the step at which a label's loss, after a plateau, drops sharply.
#ifndef PATHFORMER_LOSSCURVE_H
#define PATHFORMER_LOSSCURVE_H

#include "graph.h"

typedef struct {
    long n;              // rows (steps)
    int max_label;       // per-label columns 1..max_label
    long *step;          // (n)
    double *lr;          // (n)
    double *mse;         // (n)
    double *label_mse;   // (n, max_label + 1), row-major; NAN where the step had no example of the label
    double *examples_per_s, *elapsed_s;  // (n)
} LossLog;

// Reads a train.csv; 0 or -1 with the error set (missing file, unexpected header, bad row).
int losslog_read(LossLog *log, const char *path);
// The same from a NUL-terminated text that it takes over (freed, also on failure); path names it
// in errors.
int losslog_parse(LossLog *log, char *text, const char *path);
void losslog_free(LossLog *log);
// The loss of `label` at row i (NAN when absent).
static inline double losslog_label(const LossLog *log, long i, int label) {
    return log->label_mse[i * (log->max_label + 1) + label];
}

// Phase-change detection: at each point i, the mean log-loss of the `window` points before i is
// compared with that of the `window` points after it (missing values are skipped). The phase change
// is the steepest point of the first stretch where the loss falls by at least `factor` (e.g. 3x)
// across i; the first window/4 points are ignored, because the fall from the random initialization
// is not a phase change. Returns that index, or -1.
long phase_change_index(const double *loss, long n, int window, double factor);

// The window used for a curve of n points: 4% of it, within 5..100 points.
int phase_change_window(long n);

#endif
