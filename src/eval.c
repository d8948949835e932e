#include "eval.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#ifdef _OPENMP
#include <omp.h>
#else
static int omp_get_max_threads(void) { return 1; }
static int omp_get_thread_num(void) { return 0; }
#endif

#include "batch.h"
#include "common.h"
#include "progress.h"

void eval_result_init(EvalResult *result, const char *set, const DataConfig *cfg) {
    memset(result, 0, sizeof(*result));
    snprintf(result->set, sizeof(result->set), "%s", set);
    result->max_label = cfg->max_v;
    result->hist_lo = -0.5f;
    result->hist_hi = (float)cfg->max_v + 1.5f;
}

void eval_result_add(EvalResult *result, const float *pred, const float *labels, const float *weights, int B) {
    float bin_width = (result->hist_hi - result->hist_lo) / EVAL_BINS;
    for (int b = 0; b < B; b++) {
        int label = (int)labels[b];
        long copies = weights ? (long)weights[b] : 1;
        double diff = (double)pred[b] - labels[b];
        int correct = lroundf(pred[b]) == label;
        result->count += copies;
        result->sse += (double)copies * diff * diff;
        result->correct += correct * copies;
        if (label < 0 || label > result->max_label) continue;
        result->label_count[label] += copies;
        result->label_sse[label] += (double)copies * diff * diff;
        result->label_correct[label] += correct * copies;
        float position = (pred[b] - result->hist_lo) / bin_width;
        int bin = isfinite(position) ? (int)floorf(position) : EVAL_BINS - 1;
        bin = bin < 0 ? 0 : bin >= EVAL_BINS ? EVAL_BINS - 1 : bin;
        result->hist[label][bin] += copies;
    }
}

double eval_mse(const EvalResult *result) { return result->count ? result->sse / result->count : NAN; }
double eval_accuracy(const EvalResult *result) {
    return result->count ? (double)result->correct / result->count : NAN;
}

uint64_t eval_stream_step(const char *set) {
    uint64_t hash = 1469598103934665603ULL;  // FNV-1a of the name
    for (const char *p = set; *p; p++) hash = (hash ^ (unsigned char)*p) * 1099511628211ULL;
    return (1ULL << 62) | (hash >> 2);
}

// Adds src's counts into dst (same set and label range).
// Examples drawn at a time: each block is reduced to its distinct examples (batch_distinct_collect),
// which the threads then share; a repeat counts with its representative's prediction.
enum { EVAL_BLOCK = 1 << 15 };

int eval_model(EvalResult *result, Model *model, const char *set_name, const DataConfig *cfg, uint64_t seed,
               long count) {
    DataSet set;
    if (dataset_lookup(&set, set_name, cfg) != 0) return -1;
    if (data_config_seq_len(cfg) != model->config.seq_len || data_config_vocab(cfg) != model->config.vocab)
        return pf_fail("data settings (seq %d, vocab %d) do not match the model (seq %d, vocab %d)",
                       data_config_seq_len(cfg), data_config_vocab(cfg), model->config.seq_len,
                       model->config.vocab);
    eval_result_init(result, set_name, cfg);
    // Data-parallel like training: each thread runs whole chunks on its own replica of the model,
    // and each chunk's predictions join the result in chunk order (ordered), so the sums do not
    // depend on the thread count.
    int capacity = model->batch_capacity, T = model->config.seq_len;
    int block = count < EVAL_BLOCK ? (int)(count > 0 ? count : 1) : EVAL_BLOCK;
    long max_chunks = (block + capacity - 1) / capacity;
    int threads = omp_get_max_threads();
    int workers = max_chunks < threads ? (int)max_chunks : threads;
    Model *replicas = mallocCheck(sizeof(Model) * workers);
    model_pack_weights(model);  // for every worker: the weights hold still throughout
    for (int id = 1; id < workers; id++) model_create_replica(&replicas[id], model, capacity);
    Batch drawn;
    batch_alloc(&drawn, block, T);
    BatchDistinct distinct;
    batch_distinct_create(&distinct, block, T);
    uint64_t step = eval_stream_step(set_name);
    Progress progress;
    char what[96];
    snprintf(what, sizeof(what), "eval on %s", set_name);
    progress_begin(&progress, what, "examples", count);
    for (long start = 0; start < count; start += block) {
        drawn.B = (int)(count - start < block ? count - start : block);
        batch_fill(&drawn, &set, cfg, seed, step, (uint64_t)start);
        batch_distinct_collect(&distinct, &drawn);
        const Batch *run = &distinct.batch;
        long chunks = (run->B + capacity - 1) / capacity;
#pragma omp parallel num_threads(workers)
        {
            int id = omp_get_thread_num();
            Model *m = id == 0 ? model : &replicas[id];
#pragma omp for schedule(static, 1) ordered
            for (long k = 0; k < chunks; k++) {
                long first = k * capacity;
                int B = (int)(run->B - first < capacity ? run->B - first : capacity);
                model_infer(m, run->tokens + (size_t)first * T * 2, NULL, B);
#pragma omp ordered
                eval_result_add(result, m->pred, run->labels + first, distinct.counts + first, B);
            }
        }
        progress_add(&progress, drawn.B);
    }
    progress_end(&progress);
    for (int id = 1; id < workers; id++) model_free(&replicas[id]);
    model_unpack_weights(model);
    batch_free(&drawn);
    batch_distinct_free(&distinct);
    free(replicas);
    return 0;
}

void eval_print(const EvalResult *r, FILE *out) {
    fprintf(out, "%s: %ld examples, MSE %.6g, accuracy %.4f\n", r->set, r->count, eval_mse(r), eval_accuracy(r));
    fprintf(out, "  label  count      MSE        accuracy\n");
    for (int label = 0; label <= r->max_label; label++) {
        long n = r->label_count[label];
        if (!n) continue;
        fprintf(out, "  %5d  %-9ld  %-10.5g  %.4f\n", label, n, r->label_sse[label] / n,
                (double)r->label_correct[label] / n);
    }
}

char *eval_to_json(const EvalResult *r) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "set", r->set);
    cJSON_AddNumberToObject(root, "examples", (double)r->count);
    cJSON_AddNumberToObject(root, "mse", eval_mse(r));
    cJSON_AddNumberToObject(root, "accuracy", eval_accuracy(r));
    cJSON *labels = cJSON_AddArrayToObject(root, "labels");
    cJSON *hist = cJSON_AddObjectToObject(root, "histogram");
    cJSON_AddNumberToObject(hist, "output_lo", r->hist_lo);
    cJSON_AddNumberToObject(hist, "output_hi", r->hist_hi);
    cJSON_AddNumberToObject(hist, "bins", EVAL_BINS);
    cJSON *columns = cJSON_AddArrayToObject(hist, "columns");
    for (int label = 0; label <= r->max_label; label++) {
        long n = r->label_count[label];
        if (!n) continue;
        cJSON *row = cJSON_CreateObject();
        cJSON_AddNumberToObject(row, "label", label);
        cJSON_AddNumberToObject(row, "count", (double)n);
        cJSON_AddNumberToObject(row, "mse", r->label_sse[label] / n);
        cJSON_AddNumberToObject(row, "accuracy", (double)r->label_correct[label] / n);
        cJSON_AddItemToArray(labels, row);
        cJSON *column = cJSON_CreateObject();
        cJSON_AddNumberToObject(column, "label", label);
        cJSON *counts = cJSON_AddArrayToObject(column, "counts");
        cJSON *fraction = cJSON_AddArrayToObject(column, "fraction");
        for (int bin = 0; bin < EVAL_BINS; bin++) {
            cJSON_AddItemToArray(counts, cJSON_CreateNumber((double)r->hist[label][bin]));
            cJSON_AddItemToArray(fraction, cJSON_CreateNumber((double)r->hist[label][bin] / n));
        }
        cJSON_AddItemToArray(columns, column);
    }
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    return text;
}
