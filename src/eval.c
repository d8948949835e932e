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
#include "dist.h"
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

// An evaluation that rank 0 shares with the other MPI ranks (dist.h): what to run, then the weights.
typedef struct {
    char set[64];
    DataConfig data;
    uint64_t seed;
    long count;
    ModelConfig model;
    int capacity;
} EvalOrder;

// The examples of order through model: each block's distinct examples in chunks of the model's
// capacity, this rank's share of the chunks (dist_range; all of them in one process) spread over
// the threads, each on its own replica; then the predictions of every rank are gathered and join
// the result in chunk order, so that its sums depend on neither the thread nor the rank count.
// 0, or 1 when an MPI wait was interrupted.
static int eval_run(EvalResult *result, Model *model, const DataSet *set, const EvalOrder *order) {
    eval_result_init(result, order->set, &order->data);
    int capacity = model->batch_capacity, T = model->config.seq_len;
    long count = order->count;
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
    float *pred = mallocCheck(sizeof(float) * (size_t)max_chunks * capacity);  // chunk k at k * capacity
    uint64_t step = eval_stream_step(order->set);
    Progress progress;
    char what[96];
    snprintf(what, sizeof(what), "eval on %s", order->set);
    progress_begin(&progress, what, "examples", count);
    int rc = 0;
    for (long start = 0; start < count && rc == 0; start += block) {
        drawn.B = (int)(count - start < block ? count - start : block);
        batch_fill(&drawn, set, &order->data, order->seed, step, (uint64_t)start);
        batch_distinct_collect(&distinct, &drawn);
        const Batch *run = &distinct.batch;
        long chunks = (run->B + capacity - 1) / capacity, first_chunk, end_chunk;
        dist_range(chunks, dist_rank(), dist_size(), &first_chunk, &end_chunk);
#pragma omp parallel num_threads(workers)
        {
            int id = omp_get_thread_num();
            Model *m = id == 0 ? model : &replicas[id];
#pragma omp for schedule(static, 1)
            for (long k = first_chunk; k < end_chunk; k++) {
                long first = k * capacity;
                int B = (int)(run->B - first < capacity ? run->B - first : capacity);
                model_infer(m, run->tokens + (size_t)first * T * 2, NULL, B);
                memcpy(pred + first, m->pred, sizeof(float) * B);
            }
        }
        if (dist_size() > 1 && dist_gather(pred, sizeof(float) * capacity, chunks) != 0) rc = 1;
        for (long k = 0; k < chunks && rc == 0; k++) {
            long first = k * capacity;
            int B = (int)(run->B - first < capacity ? run->B - first : capacity);
            eval_result_add(result, pred + first, run->labels + first, distinct.counts + first, B);
        }
        progress_add(&progress, drawn.B);
    }
    progress_end(&progress);
    for (int id = 1; id < workers; id++) model_free(&replicas[id]);
    model_unpack_weights(model);
    batch_free(&drawn);
    batch_distinct_free(&distinct);
    free(pred);
    free(replicas);
    return rc;
}

int eval_model(EvalResult *result, Model *model, const char *set_name, const DataConfig *cfg, uint64_t seed,
               long count) {
    DataSet set;
    if (dataset_lookup(&set, set_name, cfg) != 0) return -1;
    if (data_config_seq_len(cfg) != model->config.seq_len || data_config_vocab(cfg) != model->config.vocab)
        return pf_fail("data settings (seq %d, vocab %d) do not match the model (seq %d, vocab %d)",
                       data_config_seq_len(cfg), data_config_vocab(cfg), model->config.seq_len,
                       model->config.vocab);
    EvalOrder order = {.data = *cfg, .seed = seed, .count = count, .model = model->config,
                       .capacity = model->batch_capacity};
    snprintf(order.set, sizeof(order.set), "%s", set_name);
    if (dist_size() > 1) {  // rank 0: the other ranks run their share (eval_follow)
        DistControl share = {.kind = DIST_EVAL};
        if (dist_control(&share) || dist_broadcast(&order, sizeof(order)) ||
            dist_broadcast(model->params_memory, sizeof(float) * model->num_parameters))
            return pf_fail("evaluation on %s interrupted", set_name);
    }
    if (eval_run(result, model, &set, &order) != 0) return pf_fail("evaluation on %s interrupted", set_name);
    return 0;
}

int eval_follow(void) {
    EvalOrder order;
    if (dist_broadcast(&order, sizeof(order)) != 0) return 1;
    DataSet set;
    if (dataset_lookup(&set, order.set, &order.data) != 0) return -1;  // rank 0 checked the same: not reached
    Model model;
    model_create(&model, &order.model, order.capacity, 0);
    int rc = dist_broadcast(model.params_memory, sizeof(float) * model.num_parameters);
    EvalResult *result = mallocCheck(sizeof(EvalResult));
    if (rc == 0) rc = eval_run(result, &model, &set, &order);
    free(result);
    model_free(&model);
    return rc;
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
