// Evaluation: MSE, rounded-output accuracy, per-label MSE, and the 2-D histogram of outputs per
// true label (SPEC §4), over fresh examples of a named data set.
#ifndef PATHFORMER_EVAL_H
#define PATHFORMER_EVAL_H

#include <stdint.h>

#include "graph.h"
#include "model.h"

#define EVAL_BINS 50

typedef struct {
    char set[64];
    int max_label;                           // labels 0..max_label (max_v)
    long count;
    double sse;                              // sum of squared errors
    long correct;                            // round(output) == label
    long label_count[PF_MAX_VERTICES + 1];
    double label_sse[PF_MAX_VERTICES + 1];
    long label_correct[PF_MAX_VERTICES + 1];
    float hist_lo, hist_hi;                  // output range of the histogram (outliers land in the end bins)
    long hist[PF_MAX_VERTICES + 1][EVAL_BINS];
} EvalResult;

void eval_result_init(EvalResult *result, const char *set, const DataConfig *cfg);
// Adds B predictions with their labels; weights (B, or NULL for all 1) count each as that many
// examples (a distinct example standing for its copies).
void eval_result_add(EvalResult *result, const float *pred, const float *labels, const float *weights, int B);
double eval_mse(const EvalResult *result);
double eval_accuracy(const EvalResult *result);

// The data stream of evaluation sets: step numbers far above any training step, one per set, so
// evaluation examples never coincide with training batches of the same seed.
uint64_t eval_stream_step(const char *set);

// Runs `count` fresh examples of the set through the model in micro-batches of
// model->batch_capacity; under MPI, with every rank's share (the same result). 0 or -1 with the
// error set.
int eval_model(EvalResult *result, Model *model, const char *set, const DataConfig *cfg, uint64_t seed, long count);

// Under MPI, a rank other than 0 in one eval_model of rank 0's (train_follow): its share of the
// predictions. 0; 1 when interrupted; -1 with the error set.
int eval_follow(void);

// One-line summary and per-label table.
void eval_print(const EvalResult *result, FILE *out);
// JSON object with the metrics and the histogram (counts and per-label normalized columns).
char *eval_to_json(const EvalResult *result);

#endif
