// Adam with PyTorch's semantics (bias correction, eps outside the square root, weight decay as L2
// added to the gradient, as torch.optim.Adam(weight_decay=...)), and the piecewise-constant
// learning-rate schedule "5e-4@6400,1e-4@3200" (rate@steps, in order).
#ifndef PATHFORMER_ADAM_H
#define PATHFORMER_ADAM_H

#include <stddef.h>

typedef struct {
    float beta1, beta2, eps, weight_decay;
} AdamConfig;

AdamConfig adam_config_default(void);  // 0.9, 0.999, 1e-8, 0

typedef struct {
    size_t n;
    float *m;   // first moments (n)
    float *v;   // second moments (n)
    long step;  // updates done so far
} AdamState;

void adam_create(AdamState *state, size_t n);
void adam_free(AdamState *state);
// One update of params (n) from grads (n) with learning rate lr; increments state->step.
void adam_update(AdamState *state, float *params, const float *grads, float lr, const AdamConfig *cfg);

// Optimizer checkpoint (safetensors): exp_avg and exp_avg_sq (n each, PyTorch's state names), the
// update count as metadata adam_step, the training step it belongs to as metadata step, and the
// caller's extra metadata pairs. Atomic write. 0 or -1 with the error set.
int adam_save(const AdamState *state, const char *path, long step, int num_extra, const char *const *extra_keys,
              const char *const *extra_values);
// Loads moments and update count into a state created for the same n; *step gets the training
// step of the file. 0 or -1 with the error set (missing file, other size, bad metadata, non-finite).
int adam_load(AdamState *state, const char *path, long *step);

// Gradient clipping as torch.nn.utils.clip_grad_norm_: the global L2 norm of grads (n) is computed
// (in double, in index order, so the same on every run); when it exceeds max_norm, every gradient is
// multiplied by max_norm / (norm + 1e-6). Returns the norm before clipping.
double clip_grad_norm(float *grads, size_t n, double max_norm);

// The learning-rate schedule: segments "rate@steps" (constant), "a..b@steps" (from a towards b in
// a straight line: step i of n has a + (b - a) i / n, so a warm-up from 0 starts at 0 and reaches
// b on the next segment) and "a..b@steps:cos" (half a cosine: b + (a - b) (1 + cos(pi i / n)) / 2),
// in order, e.g. "0..1e-3@200,1e-3..1e-5@4800:cos" or the blog's "5e-4@6400,1e-4@3200".
#define LR_MAX_SEGMENTS 32
typedef enum { LR_CONSTANT, LR_LINEAR, LR_COSINE } LrShape;
typedef struct {
    int num_segments;
    double rate[LR_MAX_SEGMENTS];      // the rate at the segment's first step
    double end_rate[LR_MAX_SEGMENTS];  // what a ramp heads for (= rate for a constant)
    LrShape shape[LR_MAX_SEGMENTS];
    long steps[LR_MAX_SEGMENTS];
} LrSchedule;

// Parses a schedule; 0 or -1 with the error set.
int lr_schedule_parse(LrSchedule *schedule, const char *text);
long lr_schedule_total_steps(const LrSchedule *schedule);
// Learning rate at step (0-based); past the end, the last segment's end rate.
double lr_schedule_at(const LrSchedule *schedule, long step);
// The first step of segment i.
long lr_schedule_segment_start(const LrSchedule *schedule, int i);
// Writes the schedule back as text.
void lr_schedule_format(const LrSchedule *schedule, char *out, size_t size);

#endif
