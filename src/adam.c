#include "adam.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "safetensors.h"

AdamConfig adam_config_default(void) {
    AdamConfig cfg = {.beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 0.0f};
    return cfg;
}

void adam_create(AdamState *state, size_t n) {
    state->n = n;
    state->m = callocCheck(n, sizeof(float));
    state->v = callocCheck(n, sizeof(float));
    state->step = 0;
}

void adam_free(AdamState *state) {
    free(state->m);
    free(state->v);
    memset(state, 0, sizeof(*state));
}

// x^n by squaring: multiplications alone, so the same bits on every machine (the C library's pow
// has a variant per instruction set on x86-64, which may differ in the last bit).
static double power(double x, long n) {
    double result = 1.0;
    for (; n > 0; n >>= 1, x *= x)
        if (n & 1) result *= x;
    return result;
}

void adam_update(AdamState *state, float *params, const float *grads, float lr, const AdamConfig *cfg) {
    state->step++;
    // PyTorch computes the bias corrections in double precision (Python floats) and then applies
    // them to float tensors: step_size = lr / bc1, denom = sqrt(v) / sqrt(bc2) + eps.
    double bc1 = 1.0 - power((double)cfg->beta1, state->step);
    double bc2 = 1.0 - power((double)cfg->beta2, state->step);
    float step_size = (float)(lr / bc1);
    float bc2_sqrt = (float)sqrt(bc2);
    float beta1 = cfg->beta1, beta2 = cfg->beta2, eps = cfg->eps, wd = cfg->weight_decay;
    float one_minus_beta1 = (float)(1.0 - (double)beta1), one_minus_beta2 = (float)(1.0 - (double)beta2);
    float *m = state->m, *v = state->v;
    size_t n = state->n;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float g = grads[i];
        if (wd != 0.0f) g += wd * params[i];
        m[i] = m[i] * beta1 + one_minus_beta1 * g;
        v[i] = v[i] * beta2 + one_minus_beta2 * g * g;
        float denom = sqrtf(v[i]) / bc2_sqrt + eps;
        params[i] += (-step_size * m[i]) / denom;  // addcdiv's order of operations
    }
}

int adam_save(const AdamState *state, const char *path, long step, int num_extra, const char *const *extra_keys,
              const char *const *extra_values) {
    StWriter writer;
    st_writer_init(&writer);
    int64_t shape[1] = {(int64_t)state->n};
    st_writer_add(&writer, "exp_avg", ST_F32, 1, shape, state->m);
    st_writer_add(&writer, "exp_avg_sq", ST_F32, 1, shape, state->v);
    char step_text[32], adam_step[32];
    snprintf(step_text, sizeof(step_text), "%ld", step);
    snprintf(adam_step, sizeof(adam_step), "%ld", state->step);
    st_writer_metadata(&writer, "step", step_text);
    st_writer_metadata(&writer, "adam_step", adam_step);
    for (int i = 0; i < num_extra; i++) st_writer_metadata(&writer, extra_keys[i], extra_values[i]);
    int rc = st_writer_save(&writer, path);
    st_writer_free(&writer);
    return rc;
}

static int metadata_count(const StFile *file, const char *key, const char *path, long *out) {
    const char *text = st_metadata(file, key);
    char *end;
    if (!text) return pf_fail("%s: metadata '%s' missing", path, key);
    errno = 0;
    *out = strtol(text, &end, 10);
    if (end == text || *end != '\0' || errno || *out < 0)
        return pf_fail("%s: metadata %s='%s' is not a count", path, key, text);
    return 0;
}

int adam_load(AdamState *state, const char *path, long *step) {
    StFile file;
    if (st_load(&file, path) != 0) return -1;
    int64_t shape[1] = {(int64_t)state->n};
    const float *m, *v;
    long adam_step = 0;
    int rc = st_get_f32(&file, "exp_avg", 1, shape, &m);
    if (rc == 0) rc = st_get_f32(&file, "exp_avg_sq", 1, shape, &v);
    if (rc != 0) rc = pf_fail("%s: %s", path, pf_last_error());
    if (rc == 0) rc = metadata_count(&file, "step", path, step);
    if (rc == 0) rc = metadata_count(&file, "adam_step", path, &adam_step);
    for (size_t i = 0; rc == 0 && i < state->n; i++)
        if (!isfinite(m[i]) || !(v[i] >= 0.0f) || !isfinite(v[i]))
            rc = pf_fail("%s: optimizer state holds a non-finite or negative moment", path);
    if (rc == 0) {
        memcpy(state->m, m, state->n * sizeof(float));
        memcpy(state->v, v, state->n * sizeof(float));
        state->step = adam_step;
    }
    st_free(&file);
    return rc;
}

double clip_grad_norm(float *grads, size_t n, double max_norm) {
    double sum = 0.0;
    for (size_t i = 0; i < n; i++) sum += (double)grads[i] * grads[i];
    double norm = sqrt(sum);
    double coef = max_norm / (norm + 1e-6);
    if (coef < 1.0) {
        float scale = (float)coef;
        for (size_t i = 0; i < n; i++) grads[i] *= scale;
    }
    return norm;
}

// A rate that ends at "..", '@' or the text's end (strtod alone would read "0..1" as "0." and ".1").
static int parse_rate(const char *p, char **end, double *rate) {
    size_t len = strcspn(p, "@,:");
    const char *dots = strstr(p, "..");
    if (dots && (size_t)(dots - p) < len) len = (size_t)(dots - p);
    char number[64];
    if (len == 0 || len >= sizeof(number)) return 0;
    memcpy(number, p, len);
    number[len] = '\0';
    char *number_end;
    *rate = strtod(number, &number_end);
    *end = (char *)p + len;
    return *number_end == '\0' && *rate >= 0.0 && isfinite(*rate);
}

#define SCHEDULE_HELP "expected rate@steps, a..b@steps or a..b@steps:cos, comma-separated, e.g. 0..1e-3@200,1e-3..1e-5@4800:cos"

int lr_schedule_parse(LrSchedule *schedule, const char *text) {
    memset(schedule, 0, sizeof(*schedule));
    const char *p = text;
    while (*p) {
        int i = schedule->num_segments;
        if (i == LR_MAX_SEGMENTS)
            return pf_fail("learning-rate schedule '%s' has more than %d segments", text, LR_MAX_SEGMENTS);
        char *end;
        double rate, end_rate;
        if (!parse_rate(p, &end, &rate)) return pf_fail("bad learning-rate schedule '%s' (%s)", text, SCHEDULE_HELP);
        LrShape shape = LR_CONSTANT;
        end_rate = rate;
        if (end[0] == '.' && end[1] == '.') {
            if (!parse_rate(end + 2, &end, &end_rate))
                return pf_fail("bad learning-rate schedule '%s' (%s)", text, SCHEDULE_HELP);
            shape = LR_LINEAR;
        }
        if (*end != '@') return pf_fail("bad learning-rate schedule '%s' (%s)", text, SCHEDULE_HELP);
        p = end + 1;
        errno = 0;
        long steps = strtol(p, &end, 10);
        if (end == p || steps < 1 || errno)
            return pf_fail("bad learning-rate schedule '%s' (steps must be positive integers)", text);
        if (steps > LONG_MAX - lr_schedule_total_steps(schedule))
            return pf_fail("bad learning-rate schedule '%s' (its steps add up to more than %ld)", text, LONG_MAX);
        if (strncmp(end, ":cos", 4) == 0) {
            if (shape != LR_LINEAR)
                return pf_fail("bad learning-rate schedule '%s' (:cos goes with a range a..b@steps)", text);
            shape = LR_COSINE;
            end += 4;
        }
        if (*end != ',' && *end != '\0') return pf_fail("bad learning-rate schedule '%s' (%s)", text, SCHEDULE_HELP);
        schedule->rate[i] = rate;
        schedule->end_rate[i] = end_rate;
        schedule->shape[i] = shape;
        schedule->steps[i] = steps;
        schedule->num_segments++;
        if (*end == ',' && end[1] == '\0') return pf_fail("bad learning-rate schedule '%s' (trailing comma)", text);
        p = *end == ',' ? end + 1 : end;
    }
    if (schedule->num_segments == 0) return pf_fail("empty learning-rate schedule");
    return 0;
}

long lr_schedule_total_steps(const LrSchedule *schedule) {
    long total = 0;
    for (int i = 0; i < schedule->num_segments; i++) total += schedule->steps[i];
    return total;
}

long lr_schedule_segment_start(const LrSchedule *schedule, int i) {
    long start = 0;
    for (int k = 0; k < i && k < schedule->num_segments; k++) start += schedule->steps[k];
    return start;
}

double lr_schedule_at(const LrSchedule *schedule, long step) {
    for (int i = 0; i < schedule->num_segments; i++) {
        if (step < schedule->steps[i]) {
            double a = schedule->rate[i], b = schedule->end_rate[i], t = (double)step / (double)schedule->steps[i];
            switch (schedule->shape[i]) {
            case LR_CONSTANT: return a;
            case LR_LINEAR: return a + (b - a) * t;
            case LR_COSINE: {
                // the weight first: (a - b) * 0.5 rounds a subnormal difference, and the rate at the
                // segment's first step came out below 0 (found by fuzz_schedule)
                double w = 0.5 * (1.0 + pf_cos_pi(t));
                return b + (a - b) * w;
            }
            }
        }
        step -= schedule->steps[i];
    }
    return schedule->end_rate[schedule->num_segments - 1];
}

void lr_schedule_format(const LrSchedule *schedule, char *out, size_t size) {
    size_t used = 0;
    out[0] = '\0';
    for (int i = 0; i < schedule->num_segments && used < size; i++) {
        const char *sep = i ? "," : "";
        if (schedule->shape[i] == LR_CONSTANT)
            used += snprintf(out + used, size - used, "%s%g@%ld", sep, schedule->rate[i], schedule->steps[i]);
        else
            used += snprintf(out + used, size - used, "%s%g..%g@%ld%s", sep, schedule->rate[i], schedule->end_rate[i],
                             schedule->steps[i], schedule->shape[i] == LR_COSINE ? ":cos" : "");
    }
}
