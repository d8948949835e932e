#include "train.h"

#include <errno.h>
#include <math.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include <cjson/cJSON.h>

#include "adam.h"
#include "batch.h"
#include "common.h"
#include "dist.h"
#include "eval.h"
#include "model.h"
#include "ops/ops.h"
#include "progress.h"

static volatile sig_atomic_t interrupted = 0;
static double time_limit = 0.0;

void train_set_time_limit(double seconds) { time_limit = seconds > 0 ? seconds : 0.0; }

static void on_interrupt(int signum) {
    (void)signum;
    interrupted = 1;
}

int train_load_run_config(RunConfig *cfg, const char *run_dir) {
    char path[PF_PATH_MAX + 32];
    pf_path_join(path, sizeof(path), run_dir, "config.json");
    size_t size;
    char *text = pf_read_file(path, &size);
    if (!text) return -1;
    config_preset(cfg, "blog-pretrain");
    int rc = config_from_json(cfg, text);
    free(text);
    if (rc != 0) return pf_fail("%s: %s", path, pf_last_error());
    return config_finalize(cfg);
}

// A checkpoint is the model and the optimizer state of one step, committed as one unit so that a
// kill at any instant (SIGKILL, OOM, power loss) leaves a complete one: both files are first written
// as model.next.safetensors and optimizer.next.safetensors (each written whole, fsync'ed, renamed
// into place), then renamed over model.safetensors and optimizer.safetensors, model first.
// repair_checkpoint, run before any read of the folder's checkpoint, finishes or drops a commit that
// a kill interrupted: with both .next files there, they are the newer checkpoint and the renames
// are finished; a lone model.next is a commit that never completed and is removed; a lone
// optimizer.next means the model was renamed already and only the optimizer's rename is left.
static void checkpoint_paths(const char *run_dir, char model[][PF_PATH_MAX + 32], char opt[][PF_PATH_MAX + 32]) {
    pf_path_join(model[0], PF_PATH_MAX + 32, run_dir, "model.safetensors");
    pf_path_join(model[1], PF_PATH_MAX + 32, run_dir, "model.next.safetensors");
    pf_path_join(opt[0], PF_PATH_MAX + 32, run_dir, "optimizer.safetensors");
    pf_path_join(opt[1], PF_PATH_MAX + 32, run_dir, "optimizer.next.safetensors");
}

static int repair_checkpoint(const char *run_dir) {
    char model[2][PF_PATH_MAX + 32], opt[2][PF_PATH_MAX + 32];
    checkpoint_paths(run_dir, model, opt);
    int model_next = pf_file_exists(model[1]), opt_next = pf_file_exists(opt[1]);
    if (model_next && opt_next) {
        if (pf_rename_durable(model[1], model[0]) != 0) return -1;
        return pf_rename_durable(opt[1], opt[0]);
    }
    if (model_next && unlink(model[1]) != 0) return pf_fail("cannot remove %s: %s", model[1], strerror(errno));
    if (opt_next) return pf_rename_durable(opt[1], opt[0]);
    return 0;
}

int train_has_checkpoint(const char *run_dir) {
    char model[2][PF_PATH_MAX + 32], opt[2][PF_PATH_MAX + 32];
    checkpoint_paths(run_dir, model, opt);
    if (!pf_file_exists(model[1]) && !pf_file_exists(opt[1])) return pf_file_exists(model[0]);
    int lock = -1;  // a repair renames files: not while another process trains there
    if (pf_lock_folder(run_dir, &lock) != 0) return -1;
    int rc = repair_checkpoint(run_dir);
    pf_unlock_folder(lock);
    return rc != 0 ? -1 : pf_file_exists(model[0]);
}

// Saves the model and the optimizer state after `step` completed steps (one unit, see above).
static int save_checkpoint(const Model *model, const AdamState *adam, const RunConfig *cfg, const char *run_dir,
                           long step) {
    char step_text[32], seed_text[32], model_path[2][PF_PATH_MAX + 32], opt_path[2][PF_PATH_MAX + 32];
    checkpoint_paths(run_dir, model_path, opt_path);
    snprintf(step_text, sizeof(step_text), "%ld", step);
    snprintf(seed_text, sizeof(seed_text), "%llu", (unsigned long long)cfg->seed);
    const char *keys[] = {"step", "seed", "set"};
    const char *values[] = {step_text, seed_text, cfg->set};
    if (model_save(model, model_path[1], 3, keys, values) != 0) return -1;
    const char *extra_keys[] = {"seed"};
    const char *extra_values[] = {seed_text};
    if (adam_save(adam, opt_path[1], step, 1, extra_keys, extra_values) != 0) return -1;
    if (pf_rename_durable(model_path[1], model_path[0]) != 0) return -1;
    return pf_rename_durable(opt_path[1], opt_path[0]);
}

static int metadata_long(const StFile *file, const char *key, const char *path, long *out) {
    const char *text = st_metadata(file, key);
    char *end;
    if (!text) return pf_fail("%s: metadata '%s' missing", path, key);
    *out = strtol(text, &end, 10);
    if (end == text || *end != '\0' || *out < 0) return pf_fail("%s: metadata %s='%s' is not a count", path, key, text);
    return 0;
}

// Loads the run's checkpoint (repair_checkpoint has run); returns the number of completed steps or -1.
static long load_checkpoint(Model *model, AdamState *adam, const char *run_dir) {
    char path[PF_PATH_MAX + 32];
    StFile file;
    long model_step = 0, opt_step = 0;
    pf_path_join(path, sizeof(path), run_dir, "model.safetensors");
    if (model_open_checkpoint(&file, path) != 0) return -1;
    ModelConfig saved = model->config;
    int rc = model_config_from_file(&saved, &file);
    if (rc == 0 && memcmp(&saved, &model->config, sizeof(saved)) != 0)
        rc = pf_fail("%s: the checkpoint's model shape differs from the run's config", path);
    if (rc == 0) rc = model_load_params(model, &file);
    if (rc == 0) rc = metadata_long(&file, "step", path, &model_step);
    st_free(&file);
    if (rc != 0) return rc;

    pf_path_join(path, sizeof(path), run_dir, "optimizer.safetensors");
    if (adam_load(adam, path, &opt_step) != 0) return -1;
    if (model_step != opt_step)
        return pf_fail("%s: model checkpoint is at step %ld but the optimizer state at step %ld", run_dir, model_step,
                       opt_step);
    return model_step;
}

// The step of the folder's checkpoint after repair_checkpoint (0 without one), or -1 with the error set.
static long checkpoint_step(const char *run_dir) {
    if (repair_checkpoint(run_dir) != 0) return -1;
    char path[PF_PATH_MAX + 32];
    pf_path_join(path, sizeof(path), run_dir, "model.safetensors");
    if (!pf_file_exists(path)) return 0;
    StFile file;
    if (st_load(&file, path) != 0) return -1;
    long step = 0;
    int rc = metadata_long(&file, "step", path, &step);
    st_free(&file);
    return rc == 0 ? step : -1;
}

// Whether the folder's run has reached total_steps and written its summary (a run killed between
// its last checkpoint and its summary is not finished: the resume writes the summary).
static int run_finished(const char *run_dir, long total_steps) {
    char summary[PF_PATH_MAX + 32];
    pf_path_join(summary, sizeof(summary), run_dir, "summary.json");
    return pf_file_exists(summary) && checkpoint_step(run_dir) >= total_steps;
}

// After a start refused before anything was written: the lock file goes, and the folder too when
// nothing else is in it (a folder that holds anything else stays as it was).
static void remove_if_empty(const char *run_dir, int lock) {
    char path[PF_PATH_MAX + 32];
    pf_path_join(path, sizeof(path), run_dir, ".lock");
    unlink(path);
    pf_unlock_folder(lock);
    rmdir(run_dir);
}

// Keeps the header and the rows of steps before `keep_steps` (a resumed run rewrites the rest).
static int truncate_log(const char *path, long keep_steps) {
    size_t size;
    char *text = pf_read_file(path, &size);
    if (!text) return -1;
    size_t keep = 0;
    int line = 0;
    for (char *p = text; *p;) {
        char *next = strchr(p, '\n');
        if (!next) break;  // a partial last line is dropped
        if (line > 0 && strtol(p, NULL, 10) >= keep_steps) break;
        line++;
        keep = (size_t)(next + 1 - text);
        p = next + 1;
    }
    int rc = pf_write_file_atomic(path, text, keep);
    free(text);
    return rc;
}

static int write_summary(const RunConfig *cfg, const char *run_dir, long steps, double final_mse, double wall,
                         double examples_per_s, const EvalResult *eval, int threads) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "version", PF_VERSION);
    cJSON_AddStringToObject(root, "set", cfg->set);
    cJSON_AddNumberToObject(root, "steps", (double)steps);
    cJSON_AddNumberToObject(root, "examples", (double)steps * (double)cfg->batch_size);
    cJSON_AddNumberToObject(root, "final_train_mse", final_mse);
    cJSON_AddNumberToObject(root, "wall_seconds", wall);
    cJSON_AddNumberToObject(root, "examples_per_second", examples_per_s);
    cJSON_AddNumberToObject(root, "threads", threads);
    cJSON_AddStringToObject(root, "matmul", ops_backend());
    if (eval) {
        char *json = eval_to_json(eval);
        cJSON *parsed = cJSON_Parse(json);
        free(json);
        cJSON_DeleteItemFromObject(parsed, "histogram");
        cJSON_AddItemToObject(root, "eval", parsed);
    }
    char path[PF_PATH_MAX + 32];
    pf_path_join(path, sizeof(path), run_dir, "summary.json");
    int rc = pf_write_json_atomic(path, root, 1);
    cJSON_Delete(root);
    return rc;
}

// The sum of a step's micro-batch gradients in one binary tree over their index, built as they
// arrive in order (a binary counter): level[j] holds the sum of a whole subtree of 2^j micro-batches
// while bit j of the count is set, and each new gradient joins the subtrees it completes, left
// operand first. What remains at the end is joined from the smallest subtree up: the tree that
// splits n micro-batches at the largest power of two below n. The order of every addition follows
// from the micro-batch index alone.
//
// A gradient joins without a copy: a first operand (even index) becomes a tree buffer as it is, the
// worker's model taking a free buffer in its place; and an operand added into another is cleared in
// the same pass. So the free buffers, and a model's gradients after they join, are all zeros, and a
// worker clears its gradients once a step instead of once a micro-batch (the copy and the clearing
// took 0.5% of an AVX2 training step by perf; best-of-five training, eight alternating pairs: 4,000
// -> 4,039 examples/s).
enum { TREE_LEVELS = 64 };
typedef struct {
    size_t n;  // floats per gradient
    long count;
    float *level[TREE_LEVELS];
    float **free;  // buffers not holding a subtree, all zeros
    int num_free;
} GradientTree;

// extra: free buffers beyond those the tree itself needs (gradients waiting for their turn)
static void gradient_tree_create(GradientTree *tree, size_t n, long max_count, int extra) {
    memset(tree, 0, sizeof(*tree));
    tree->n = n;
    int buffers = 2 + extra;  // one per bit of max_count, plus the one being joined
    while (max_count >>= 1) buffers++;
    tree->free = mallocCheck(sizeof(float *) * buffers);
    for (int i = 0; i < buffers; i++) tree->free[tree->num_free++] = callocCheck(n, sizeof(float));
}

static void gradient_tree_free(GradientTree *tree) {
    for (int j = 0; j < TREE_LEVELS; j++)
        if (tree->level[j]) tree->free[tree->num_free++] = tree->level[j];
    for (int i = 0; i < tree->num_free; i++) free(tree->free[i]);
    free(tree->free);
}

// left = left + right, element by element, and right = 0
static void add_into(float *left, float *right, size_t n) {
    for (size_t i = 0; i < n; i++) {
        left[i] = left[i] + right[i];
        right[i] = 0.0f;
    }
}

// The free buffers, shared by the workers (hand_over takes them, the joining worker returns them).
static void push_free(GradientTree *tree, float *buf) {
#pragma omp critical(pf_gradient_buffers)
    tree->free[tree->num_free++] = buf;
}

static float *pop_free(GradientTree *tree) {
    float *buf = NULL;
#pragma omp critical(pf_gradient_buffers)
    if (tree->num_free > 0) buf = tree->free[--tree->num_free];
    return buf;
}

// The gradient in buf (the next micro-batch's) joins the tree; the buffers it empties, all zeros,
// go back to the free ones.
static void gradient_tree_join(GradientTree *tree, float *buf) {
    long i = tree->count++;
    float *acc = buf;
    int j = 0;
    for (; (i >> j) & 1; j++) {  // completes the subtrees of 2^j: left operand first
        float *left = tree->level[j];
        add_into(left, acc, tree->n);
        push_free(tree, acc);
        acc = left;
        tree->level[j] = NULL;
    }
    tree->level[j] = acc;
}

// out = the sum of every gradient added (zeros for none); the tree is empty again.
static void gradient_tree_sum(GradientTree *tree, float *out) {
    float *acc = NULL;
    for (int j = 0; j < TREE_LEVELS; j++) {
        if (!tree->level[j]) continue;
        if (acc) {
            add_into(tree->level[j], acc, tree->n);
            push_free(tree, acc);
        }
        acc = tree->level[j];
        tree->level[j] = NULL;
    }
    if (acc) {
        memcpy(out, acc, sizeof(float) * tree->n);
        memset(acc, 0, sizeof(float) * tree->n);
        push_free(tree, acc);
    } else {
        memset(out, 0, sizeof(float) * tree->n);
    }
    tree->count = 0;
}

// One thread's share of a step: micro-batches k = id, id + W, id + 2W, ... of the step.
typedef struct {
    Model *model;  // worker 0 uses the master model itself
    Model replica;
} Worker;

enum { RUN_AHEAD = 2 };  // free gradient buffers a worker, beyond the tree's own (hand_over)

struct GradientWorkers {
    const RunConfig *cfg;
    int count;
    Worker *workers;
    GradientTree tree;
    // The micro-batches' gradients on their way into the tree (run_micro_batches): micro-batch k's
    // in pending[k] once arrived[k] says so; `joined` of them have joined (first to end).
    float **pending;
    int *arrived;
    long joined, end;
    int joining;             // 1 while a worker joins gradients to the tree (one at a time)
    Batch drawn;             // the step's full batch as drawn
    BatchDistinct distinct;  // its distinct examples (cfg->dedupe)
    BatchStats *micro_stats; // of each micro-batch of the step, summed in micro-batch order at its end
    // Over MPI ranks (gradient_workers_distribute; NULL in one process): this rank's pieces of the
    // step (dist.h), the sum of the one being run, and the exchange that combines every rank's.
    DistExchange *exchange;
    DistPiece *pieces;
    float *piece_sum;
};

GradientWorkers *gradient_workers_create(Model *model, const RunConfig *cfg, int threads) {
    long num_micro = (cfg->batch_size + cfg->micro_batch - 1) / cfg->micro_batch;
    GradientWorkers *gw = mallocCheck(sizeof(GradientWorkers));
    gw->cfg = cfg;
    gw->count = num_micro < threads ? (int)num_micro : threads;
    gw->workers = callocCheck(gw->count, sizeof(Worker));
    for (int i = 0; i < gw->count; i++) {
        Worker *w = &gw->workers[i];
        if (i > 0) model_create_replica(&w->replica, model, cfg->micro_batch);
        w->model = i == 0 ? model : &w->replica;
    }
    gradient_tree_create(&gw->tree, model->num_parameters, num_micro, gw->count * RUN_AHEAD);
    gw->pending = callocCheck((size_t)num_micro, sizeof(float *));
    gw->arrived = callocCheck((size_t)num_micro, sizeof(int));
    gw->joining = 0;
    batch_alloc(&gw->drawn, (int)cfg->batch_size, cfg->model.seq_len);
    batch_distinct_create(&gw->distinct, (int)cfg->batch_size, cfg->model.seq_len);
    gw->micro_stats = mallocCheck(sizeof(BatchStats) * (size_t)num_micro);
    gw->exchange = NULL;
    gw->pieces = NULL;
    gw->piece_sum = NULL;
    return gw;
}

// Every step from now on is shared between the MPI ranks, each running its pieces of the step
// (every rank must make this call on its own workers, and run the same steps).
static void gradient_workers_distribute(GradientWorkers *gw, const Model *model) {
    long max_micro = (gw->cfg->batch_size + gw->cfg->micro_batch - 1) / gw->cfg->micro_batch;
    gw->exchange = dist_exchange_create(model->num_parameters, max_micro);
    gw->pieces = mallocCheck(sizeof(DistPiece) * (size_t)dist_max_pieces(max_micro));
    gw->piece_sum = mallocCheck(sizeof(float) * model->num_parameters);
}

int gradient_workers_count(const GradientWorkers *gw) { return gw->count; }

const Batch *gradient_workers_last_batch(const GradientWorkers *gw) {
    return gw->cfg->dedupe ? &gw->distinct.batch : &gw->drawn;
}

void gradient_workers_free(GradientWorkers *gw) {
    for (int i = 1; i < gw->count; i++) model_free(&gw->workers[i].replica);
    gradient_tree_free(&gw->tree);
    free(gw->pending);
    free(gw->arrived);
    batch_free(&gw->drawn);
    batch_distinct_free(&gw->distinct);
    free(gw->micro_stats);
    dist_exchange_free(gw->exchange);
    free(gw->pieces);
    free(gw->piece_sum);
    free(gw->workers);
    free(gw);
}

// A worker does not wait for the gradients before its own to join the tree: it hands its gradient
// over (pending, arrived) and goes on with its next micro-batch on a free buffer, and whichever
// worker finds the turn free joins every gradient that has arrived, in order of micro-batch. A
// worker waits only when the free buffers run out, RUN_AHEAD a worker beyond what the tree needs.
// The additions are those of the tree, in its order, whoever does them. (In turns, with the join
// inside an ordered loop, the even micro-batches' worker waited for the odd ones' additions: 1-3%
// of its time at two threads, AVX2, batch 32,768; handed over, under 0.1%, and a step 2% faster,
// median of six alternating rounds.)
enum { GRADIENT_PENDING = 0, GRADIENT_ARRIVED = 1, GRADIENT_SKIPPED = 2 };  // arrived[k]

static int arrived(GradientWorkers *gw, long k) {
    int state;
#pragma omp atomic read seq_cst
    state = gw->arrived[k];
    return state;
}

// Joins the gradients that have arrived, in order, unless another worker is at it (who then sees
// them: a gradient arrives before its worker looks here, and the joiner looks again after it
// gives up its turn).
static void join_arrived(GradientWorkers *gw) {
    for (;;) {
        int busy;
#pragma omp atomic capture seq_cst
        {
            busy = gw->joining;
            gw->joining = 1;
        }
        if (busy) return;
        int state;
        while (gw->joined < gw->end && (state = arrived(gw, gw->joined)) != GRADIENT_PENDING) {
            if (state == GRADIENT_ARRIVED) gradient_tree_join(&gw->tree, gw->pending[gw->joined]);
            gw->joined++;
        }
        long next = gw->joined;
#pragma omp atomic write seq_cst
        gw->joining = 0;
        if (next >= gw->end || arrived(gw, next) == GRADIENT_PENDING) return;
    }
}

// Micro-batch k's gradient (in the worker's model, or none if it did not run) goes to the tree;
// the model takes a free buffer, all zeros, for its next one.
static void hand_over(GradientWorkers *gw, Model *model, long k, int ran) {
    if (ran) gw->pending[k] = model->grads_memory;
#pragma omp atomic write seq_cst
    gw->arrived[k] = ran ? GRADIENT_ARRIVED : GRADIENT_SKIPPED;
    join_arrived(gw);
    if (!ran) return;
    float *buf;
    // none free: all wait to join behind a micro-batch still running on another worker
    while (!(buf = pop_free(&gw->tree))) {
        join_arrived(gw);
        sched_yield();
    }
    model_swap_grads(model, buf);
}

// Micro-batches [first, end) of the step's examples `run` (weighted by counts, or NULL), spread over
// the worker threads: out (NULL: the master model's gradients) = the sum of their gradients in the
// tree over [first, end), and gw->micro_stats[k] = the statistics of micro-batch k. The weights are
// packed.
static void run_micro_batches(GradientWorkers *gw, const Batch *run, const float *counts, long first, long end,
                              float *out) {
    const RunConfig *cfg = gw->cfg;
    int T = run->T;
    float scale = 1.0f / (float)cfg->batch_size;
    memset(gw->arrived + first, 0, sizeof(int) * (size_t)(end - first));
    gw->joined = first;
    gw->end = end;
#pragma omp parallel num_threads(gw->count)
    {
#ifdef _OPENMP
        int id = omp_get_thread_num();
#else
        int id = 0;
#endif
        Worker *w = &gw->workers[id];
        model_zero_grad(w->model);  // then a free buffer, zeros, after each hand-over
        // Micro-batches to the workers as they come free; the gradients join the tree in order.
#pragma omp for schedule(dynamic, 1)
        for (long k = first; k < end; k++) {
            int ran = !interrupted;
            BatchStats *stats = &gw->micro_stats[k];
            memset(stats, 0, sizeof(*stats));
            if (ran) {
                long offset = k * cfg->micro_batch;
                int B = (int)(run->B - offset < cfg->micro_batch ? run->B - offset : cfg->micro_batch);
                const float *labels = run->labels + offset, *weights = counts ? counts + offset : NULL;
                model_forward(w->model, run->tokens + (size_t)offset * T * 2, labels, B);
                for (int b = 0; b < B; b++) {
                    int label = (int)labels[b];
                    double diff = (double)w->model->pred[b] - labels[b], copies = weights ? weights[b] : 1.0;
                    stats->sse += copies * diff * diff;
                    stats->label_sse[label] += copies * diff * diff;
                    stats->label_count[label] += (long)copies;
                }
                model_backward(w->model, labels, weights, B, scale);
            }
            hand_over(gw, w->model, k, ran);
        }
    }
    join_arrived(gw);  // all have arrived
    // the master's gradients are where it holds them now (the tree moves them)
    gradient_tree_sum(&gw->tree, out ? out : gw->workers[0].model->grads_memory);
}

int gradient_workers_step(GradientWorkers *gw, const DataSet *set, long step, BatchStats *stats) {
    const RunConfig *cfg = gw->cfg;
    batch_fill(&gw->drawn, set, &cfg->data, cfg->seed, (uint64_t)step, 0);
    const Batch *run = &gw->drawn;
    const float *counts = NULL;
    if (cfg->dedupe) {  // each distinct example once, weighted by its copies (batch_distinct_collect)
        batch_distinct_collect(&gw->distinct, &gw->drawn);
        run = &gw->distinct.batch;
        counts = gw->distinct.counts;
    }
    long num_micro = (run->B + cfg->micro_batch - 1) / cfg->micro_batch;
    Model *master = gw->workers[0].model;
    model_pack_weights(master);  // for every worker: the weights hold still until the step's end
    if (!gw->exchange) {
        run_micro_batches(gw, run, counts, 0, num_micro, NULL);
    } else {
        // This rank's pieces (each rank draws the whole batch, so that the distinct examples and
        // their weights are those of the whole batch); then every rank's, combined.
        long first, end;
        dist_range(num_micro, dist_rank(), dist_size(), &first, &end);
        int count = dist_pieces(gw->pieces, dist_max_pieces(num_micro), num_micro, first, end);
        for (int i = 0; i < count && !interrupted; i++) {
            run_micro_batches(gw, run, counts, gw->pieces[i].first, gw->pieces[i].end, gw->piece_sum);
            dist_exchange_put(gw->exchange, i, count, gw->piece_sum);
        }
    }
    model_unpack_weights(master);
    if (gw->exchange && (interrupted || dist_exchange_sum(gw->exchange, master->grads_memory, num_micro) != 0 ||
                         dist_gather(gw->micro_stats, sizeof(BatchStats), num_micro) != 0))
        return 1;
    memset(stats, 0, sizeof(*stats));
    for (long k = 0; k < num_micro; k++) {
        const BatchStats *micro = &gw->micro_stats[k];
        stats->sse += micro->sse;
        for (int label = 0; label <= PF_MAX_VERTICES; label++) {
            stats->label_sse[label] += micro->label_sse[label];
            stats->label_count[label] += micro->label_count[label];
        }
    }
    return interrupted ? 1 : 0;
}

// A training run while it runs: what it trains, where, and how far it has come.
typedef struct {
    const RunConfig *cfg;
    const char *run_dir;
    DataSet set;
    LrSchedule schedule;
    long total_steps;
    int threads;
    int distributed;      // shared with the other MPI ranks (rank 0's side; train_follow the others')
    Model model;
    GradientWorkers *workers;
    AdamState adam;
    AdamConfig adam_cfg;
    FILE *log;            // train.csv, open for appending
    long start_step;      // the step this session began at (0, or the checkpoint's on resume)
    long step;            // steps completed
    long saved_step;      // the step of the last checkpoint written
    double final_mse;     // the training MSE of the last step
    double start_time;    // when this session's first step began
} TrainRun;

// The run folder: created, and config.json written for a fresh run (refused where a run is
// already); for a resumed run, its config.json must equal cfg but for the settings a resume may
// change. 0; 1 for a resumed run that is finished (nothing written); -1 with the error set.
static int prepare_folder(const RunConfig *cfg, const char *run_dir, int resume, long total_steps) {
    char path[PF_PATH_MAX + 32];
    if (pf_mkdir_p(run_dir) != 0) return -1;
    char *config_json = config_to_json(cfg);
    pf_path_join(path, sizeof(path), run_dir, "config.json");
    int rc = 0;
    if (resume) {
        RunConfig saved;
        char changes[1024];
        if (train_load_run_config(&saved, run_dir) != 0) {
            rc = -1;
        } else if ((rc = config_resume_changes(&saved, cfg, changes, sizeof(changes))) < 0) {
            rc = pf_fail("%s holds a run with a different config (%s); resume it without that override", run_dir,
                         pf_last_error());
        } else if (run_finished(run_dir, total_steps)) {
            fprintf(stderr, "%s: the run is finished (%ld of %ld steps); nothing to do (steps=N lengthens it)\n",
                    run_dir, total_steps, total_steps);
            rc = 1;
        } else if (rc == 1) {
            fprintf(stderr, "resuming with changed settings: %s\n", changes);
            rc = pf_write_file_atomic(path, config_json, strlen(config_json));
        }
    } else {
        // a folder whose run died before its first checkpoint is begun again (the lock rules out
        // a run still at work in it)
        char model_path[2][PF_PATH_MAX + 32], opt_path[2][PF_PATH_MAX + 32], log_path[PF_PATH_MAX + 32];
        checkpoint_paths(run_dir, model_path, opt_path);
        pf_path_join(log_path, sizeof(log_path), run_dir, "train.csv");
        rc = repair_checkpoint(run_dir);
        if (rc == 0 && pf_file_exists(model_path[0]))
            rc = pf_fail("%s already holds a run; continue it with --resume or choose another --out", run_dir);
        if (rc == 0 && pf_file_exists(log_path) && unlink(log_path) != 0)
            rc = pf_fail("cannot remove %s: %s", log_path, strerror(errno));
        if (rc == 0) rc = pf_write_file_atomic(path, config_json, strlen(config_json));
    }
    free(config_json);
    return rc;
}

// Allocates the model, its workers and the optimizer (freed by free_run whatever happens), and
// sets the weights: the run's own checkpoint on resume, cfg->init_from (and its Adam state, with
// init_optimizer) for fine-tuning, else PyTorch's initialization.
static int init_run(TrainRun *run, int resume) {
    const RunConfig *cfg = run->cfg;
    run->threads = ops_set_threads(cfg->threads);
    model_create(&run->model, &cfg->model, cfg->micro_batch, 1);
    run->workers = gradient_workers_create(&run->model, cfg, run->threads);
    if (run->distributed) gradient_workers_distribute(run->workers, &run->model);
    adam_create(&run->adam, run->model.num_parameters);
    run->adam_cfg = (AdamConfig){cfg->beta1, cfg->beta2, cfg->eps, cfg->weight_decay};
    if (resume) {
        char path[PF_PATH_MAX + 32];
        pf_path_join(path, sizeof(path), run->run_dir, "model.safetensors");
        if (repair_checkpoint(run->run_dir) != 0) return -1;
        if (pf_file_exists(path)) {
            run->start_step = load_checkpoint(&run->model, &run->adam, run->run_dir);
            return run->start_step < 0 ? -1 : 0;
        }
        // the run died before its first checkpoint: it begins again (open_log keeps only the header)
        fprintf(stderr, "%s has no checkpoint yet: starting from step 0\n", run->run_dir);
    }
    if (!cfg->init_from[0]) {
        model_init(&run->model, cfg->seed, cfg->identical_layers);
        return 0;
    }
    StFile file;
    int rc = model_open_checkpoint(&file, cfg->init_from);
    if (rc == 0) {
        ModelConfig from = cfg->model;
        rc = model_config_from_file(&from, &file);
        if (rc == 0 && memcmp(&from, &cfg->model, sizeof(from)) != 0)
            rc = pf_fail("%s: its model shape differs from the configured one", cfg->init_from);
        if (rc == 0) rc = model_load_params(&run->model, &file);
        st_free(&file);
    }
    long from_step;
    if (rc == 0 && cfg->init_optimizer[0] && (rc = adam_load(&run->adam, cfg->init_optimizer, &from_step)) == 0)
        fprintf(stderr, "continuing the optimizer of %s (step %ld, %ld Adam updates)\n", cfg->init_optimizer,
                from_step, run->adam.step);
    return rc;
}

static void free_run(TrainRun *run) {
    if (run->log) fclose(run->log);
    if (run->workers) gradient_workers_free(run->workers);
    adam_free(&run->adam);
    model_free(&run->model);
}

// Opens train.csv for appending: a header when it is new; a resumed run's rows from its
// checkpoint's step on are dropped (they are run again).
static int open_log(TrainRun *run, int resume) {
    char path[PF_PATH_MAX + 32];
    pf_path_join(path, sizeof(path), run->run_dir, "train.csv");
    if (resume && pf_file_exists(path) && truncate_log(path, run->start_step) != 0) return -1;
    int fresh = !pf_file_exists(path);
    run->log = fopen(path, "a");
    if (!run->log) return pf_fail("cannot open %s: %s", path, strerror(errno));
    if (fresh) {
        fprintf(run->log, "step,lr,mse");
        for (int label = 1; label <= run->cfg->data.max_v; label++) fprintf(run->log, ",mse_%d", label);
        fprintf(run->log, ",examples_per_s,elapsed_s\n");
    }
    return 0;
}

// One train.csv row: the step's rate, MSE and MSE per label (empty where the batch had none).
static int log_step(TrainRun *run, long step, float lr, const BatchStats *stats, double examples_per_s,
                    double elapsed) {
    fprintf(run->log, "%ld,%g,%.9g", step, lr, run->final_mse);
    for (int label = 1; label <= run->cfg->data.max_v; label++) {
        if (stats->label_count[label])
            fprintf(run->log, ",%.9g", stats->label_sse[label] / stats->label_count[label]);
        else
            fprintf(run->log, ",");
    }
    fprintf(run->log, ",%.1f,%.3f\n", examples_per_s, elapsed);
    if (fflush(run->log) != 0 || ferror(run->log))
        return pf_fail("cannot write %s/train.csv: %s", run->run_dir, strerror(errno));
    return 0;
}

// The progress display: one line rewritten in place on a terminal, a line every 2 s in a pipe.
static void print_progress(const TrainRun *run, long done_steps, float lr, double examples_per_s, double now,
                           int terminal, double *last_print) {
    double eta = (now - run->start_time) / (done_steps - run->start_step) * (run->total_steps - done_steps);
    char eta_text[32];
    progress_format_duration(eta_text, sizeof(eta_text), eta);
    if (terminal) {
        fprintf(stderr, "\rstep %ld/%ld | loss %.5f | lr %.2g | %.0f ex/s | ETA %s   ", done_steps, run->total_steps,
                run->final_mse, lr, examples_per_s, eta_text);
    } else if (now - *last_print >= 2.0 || done_steps == run->total_steps) {
        fprintf(stderr, "step %ld/%ld loss %.5f lr %.2g %.0f ex/s ETA %s\n", done_steps, run->total_steps,
                run->final_mse, lr, examples_per_s, eta_text);
        *last_print = now;
    }
}

// The steps up to end_step (or a Ctrl-C): gradient, Adam update, log row, progress, and a
// checkpoint every checkpoint_every steps. 0, or -1 with the error set (divergence, a failed write).
static int run_steps(TrainRun *run, long end_step) {
    const RunConfig *cfg = run->cfg;
    BatchStats stats;
    struct sigaction action, old_action;
    memset(&action, 0, sizeof(action));
    action.sa_handler = on_interrupt;
    sigaction(SIGINT, &action, &old_action);
    // under MPI, a Ctrl-C reaches the ranks as the launcher's SIGTERM (SIGKILL follows, by default
    // a second later: README, Scaling out)
    struct sigaction old_term;
    if (run->distributed) sigaction(SIGTERM, &action, &old_term);
    interrupted = 0;

    int rc = 0, terminal = isatty(STDERR_FILENO);
    double last_print = 0.0;
    run->start_time = pf_now_seconds();
    run->final_mse = NAN;
    run->saved_step = run->step = run->start_step;
    for (; run->step < end_step && !interrupted; run->step++) {
        long step = run->step;
        double step_start = pf_now_seconds();
        if (time_limit > 0 && step_start - run->start_time >= time_limit) break;
        float lr = (float)lr_schedule_at(&run->schedule, step);
        DistControl order = {.kind = DIST_STEP, .step = step};
        if (run->distributed && dist_control(&order) != 0) break;
        int void_step = gradient_workers_step(run->workers, &run->set, step, &stats);
        if (void_step) break;  // a partly accumulated step is dropped; the checkpoint is the last full step
        // a gradient that is not finite would poison the weights: stop before the update
        double norm = clip_grad_norm(run->model.grads_memory, run->model.num_parameters,
                                     cfg->clip_grad_norm > 0.0f ? cfg->clip_grad_norm : INFINITY);
        if (!isfinite(norm)) {
            rc = pf_fail("training diverged at step %ld (gradient norm %g); the checkpoint of step %ld is kept: "
                         "continue with --resume and a lower lr",
                         step, norm, run->saved_step);
            break;
        }
        adam_update(&run->adam, run->model.params_memory, run->model.grads_memory, lr, &run->adam_cfg);

        double now = pf_now_seconds();
        double examples_per_s = cfg->batch_size / (now - step_start);
        run->final_mse = stats.sse / cfg->batch_size;
        if (!isfinite(run->final_mse)) {
            rc = pf_fail("training diverged at step %ld (MSE %g); the checkpoint of step %ld is kept: continue with "
                         "--resume and a lower lr",
                         step, run->final_mse, run->saved_step);
            break;
        }
        if ((rc = log_step(run, step, lr, &stats, examples_per_s, now - run->start_time)) != 0) break;
        long done_steps = step + 1;
        print_progress(run, done_steps, lr, examples_per_s, now, terminal, &last_print);
        if (cfg->checkpoint_every > 0 && done_steps % cfg->checkpoint_every == 0 && done_steps < run->total_steps) {
            if ((rc = save_checkpoint(&run->model, &run->adam, cfg, run->run_dir, done_steps)) != 0) break;
            run->saved_step = done_steps;
        }
    }
    if (terminal) fprintf(stderr, "\n");
    sigaction(SIGINT, &old_action, NULL);
    if (run->distributed) sigaction(SIGTERM, &old_term, NULL);
    return rc;
}

// After the steps: the checkpoint of the last one; then, for a run that reached its end, the
// evaluation (eval_SET.json) and summary.json. 0 also when stopped as asked, TRAIN_INTERRUPTED
// after a Ctrl-C.
static int finish_run(TrainRun *run) {
    const RunConfig *cfg = run->cfg;
    long step = run->step;
    if (step != run->saved_step && save_checkpoint(&run->model, &run->adam, cfg, run->run_dir, step) != 0) return -1;
    double wall = pf_now_seconds() - run->start_time;
    if (interrupted) {
        fprintf(stderr, "interrupted: checkpoint saved at step %ld in %s; continue with --resume\n", step,
                run->run_dir);
        return TRAIN_INTERRUPTED;
    }
    if (step < run->total_steps) {
        fprintf(stderr, "stopped after %ld steps as asked: checkpoint at step %ld in %s; continue with --resume\n",
                step - run->start_step, step, run->run_dir);
        return 0;
    }
    double examples_per_s = wall > 0 ? (double)(step - run->start_step) * cfg->batch_size / wall : 0.0;
    fprintf(stderr, "finished %ld steps in %.1f s (%.0f examples/s); final train MSE %.6g\n", step - run->start_step,
            wall, examples_per_s, run->final_mse);

    int rc = 0;
    EvalResult *eval = NULL;
    if (cfg->eval_examples > 0) {
        eval = mallocCheck(sizeof(EvalResult));
        rc = eval_model(eval, &run->model, cfg->set, &cfg->data, cfg->seed, cfg->eval_examples);
        if (rc == 0) {
            eval_print(eval, stderr);
            char *json = eval_to_json(eval);
            char eval_path[PF_PATH_MAX + 64];
            snprintf(eval_path, sizeof(eval_path), "%s/eval_%s.json", run->run_dir, cfg->set);
            rc = pf_write_file_atomic(eval_path, json, strlen(json));
            free(json);
        }
    }
    if (rc == 0)
        rc = write_summary(cfg, run->run_dir, step, run->final_mse, wall, examples_per_s, eval, run->threads);
    free(eval);
    return rc;
}

double train_measure_rate(const RunConfig *cfg) {
    RunConfig probe = *cfg;
    if (probe.batch_size > 4096) probe.batch_size = 4096;
    if (probe.micro_batch > probe.batch_size) probe.micro_batch = (int)probe.batch_size;
    DataSet set;
    if (dataset_lookup(&set, probe.set, &probe.data) != 0) return -1;
    int threads = ops_set_threads(probe.threads);
    Model model;
    model_create(&model, &probe.model, probe.micro_batch, 1);
    model_init(&model, probe.seed, probe.identical_layers);
    GradientWorkers *workers = gradient_workers_create(&model, &probe, threads);
    BatchStats stats;
    // Two steps warm caches, pages and the threads; then 8 steps (or a second, if sooner) timed as
    // one: the best of two small steps (batch 256: 35 ms each) read 4,600 examples/s where
    // training ran at 7,200.
    double rate = 0.0, start = 0.0;
    long examples = 0;
    for (long k = 0; k < 2 + 8; k++) {
        if (k == 2) start = pf_now_seconds();
        if (gradient_workers_step(workers, &set, (1L << 40) + k, &stats) != 0) break;
        if (k < 2) continue;
        examples += probe.batch_size;
        double elapsed = pf_now_seconds() - start;
        rate = examples / elapsed;
        if (elapsed >= 1.0) break;
    }
    gradient_workers_free(workers);
    model_free(&model);
    return rate;
}

// The weights and the optimizer state, rank 0's to every rank. 0, or 1 when interrupted.
static int broadcast_state(Model *model, AdamState *adam) {
    size_t bytes = sizeof(float) * model->num_parameters;
    return dist_broadcast(model->params_memory, bytes) || dist_broadcast(adam->m, bytes) ||
           dist_broadcast(adam->v, bytes) || dist_broadcast(&adam->step, sizeof(adam->step));
}

// Rank 0 hands its run to the other ranks (train_follow): the settings, then the weights and the
// optimizer state it begins from. 0, or 1 when interrupted.
static int share_run(TrainRun *run) {
    DistControl order = {.kind = DIST_TRAIN};
    RunConfig cfg = *run->cfg;
    return dist_control(&order) || dist_broadcast(&cfg, sizeof(cfg)) || broadcast_state(&run->model, &run->adam);
}

// A rank other than 0 in one run of rank 0's: the same model, workers and optimizer, and each step
// rank 0 orders (its pieces of the step, the exchange, the same update), writing nothing. 0 at the
// run's end, TRAIN_INTERRUPTED, or -1 with the error set.
static int follow_run(void) {
    RunConfig cfg;
    if (dist_broadcast(&cfg, sizeof(cfg)) != 0) return TRAIN_INTERRUPTED;
    TrainRun run = {.cfg = &cfg, .distributed = 1};
    int rc = dataset_lookup(&run.set, cfg.set, &cfg.data);
    if (rc == 0) rc = lr_schedule_parse(&run.schedule, cfg.lr_schedule);
    if (rc != 0) return -1;  // rank 0 checked the same settings: not reached
    run.threads = ops_set_threads(cfg.threads);
    model_create(&run.model, &cfg.model, cfg.micro_batch, 1);
    run.workers = gradient_workers_create(&run.model, &cfg, run.threads);
    gradient_workers_distribute(run.workers, &run.model);
    adam_create(&run.adam, run.model.num_parameters);
    AdamConfig adam_cfg = {cfg.beta1, cfg.beta2, cfg.eps, cfg.weight_decay};
    rc = broadcast_state(&run.model, &run.adam) ? TRAIN_INTERRUPTED : 0;
    BatchStats stats;
    while (rc == 0) {
        DistControl order;
        if (dist_control(&order) != 0) {
            rc = TRAIN_INTERRUPTED;
        } else if (order.kind == DIST_TRAIN_END) {
            break;
        } else if (order.kind != DIST_STEP) {
            rc = pf_fail("rank %d: order %d from rank 0 in the middle of a run", dist_rank(), order.kind);
        } else if (gradient_workers_step(run.workers, &run.set, order.step, &stats) != 0) {
            rc = TRAIN_INTERRUPTED;
        } else {
            // rank 0 stops before an update from a gradient that is not finite; so does this one
            float lr = (float)lr_schedule_at(&run.schedule, order.step);
            double norm = clip_grad_norm(run.model.grads_memory, run.model.num_parameters,
                                         cfg.clip_grad_norm > 0.0f ? cfg.clip_grad_norm : INFINITY);
            if (isfinite(norm)) adam_update(&run.adam, run.model.params_memory, run.model.grads_memory, lr, &adam_cfg);
        }
    }
    free_run(&run);
    return rc;
}

// A follower's exit on an interrupt waits first: the launcher ends the whole job as soon as one
// rank exits non-zero, and rank 0 needs a moment to save its checkpoint (the launcher's own
// SIGKILL, a second after its SIGTERM with mpirun's defaults, usually ends this wait).
static int after_interrupt(void) {
    struct timespec nap = {0, 100000000};
    for (int i = 0; i < 100; i++) nanosleep(&nap, NULL);
    return TRAIN_INTERRUPTED;
}

int train_follow(void) {
    struct sigaction action;
    memset(&action, 0, sizeof(action));
    action.sa_handler = on_interrupt;
    sigaction(SIGINT, &action, NULL);
    sigaction(SIGTERM, &action, NULL);
    interrupted = 0;
    dist_watch(&interrupted);
    for (;;) {
        DistControl order;
        if (dist_control(&order) != 0) return after_interrupt();
        if (order.kind == DIST_DONE) return order.status;
        int rc;
        if (order.kind == DIST_TRAIN)
            rc = follow_run();
        else if (order.kind == DIST_EVAL)
            rc = eval_follow() == 1 ? TRAIN_INTERRUPTED : 0;  // its errors are rank 0's too
        else
            rc = pf_fail("rank %d: order %d from rank 0 between runs", dist_rank(), order.kind);
        if (rc == TRAIN_INTERRUPTED) return after_interrupt();
        if (rc != 0) return 1;
    }
}

int train_run(const RunConfig *cfg, const char *run_dir, int resume, long stop_after) {
    TrainRun run = {.cfg = cfg, .run_dir = run_dir, .distributed = dist_size() > 1};
    if (run.distributed) dist_watch(&interrupted);
    if (dataset_lookup(&run.set, cfg->set, &cfg->data) != 0) return -1;
    if (lr_schedule_parse(&run.schedule, cfg->lr_schedule) != 0) return -1;
    run.total_steps = config_total_steps(cfg);
    int lock = -1;
    if (pf_mkdir_p(run_dir) != 0 || pf_lock_folder(run_dir, &lock) != 0) return -1;
    if (!resume && init_run(&run, 0) != 0) {
        // the settings' files (init_from, init_optimizer) are checked before anything is written: a
        // folder made for this run goes again, so that a retry starts clean
        free_run(&run);
        remove_if_empty(run_dir, lock);
        return -1;
    }
    int prepared = prepare_folder(cfg, run_dir, resume, run.total_steps);
    if (prepared != 0) {  // refused, or a finished run: nothing to do, and nothing touched
        free_run(&run);
        pf_unlock_folder(lock);
        return prepared < 0 ? -1 : 0;
    }

    int rc = resume ? init_run(&run, resume) : 0;
    if (rc == 0) rc = open_log(&run, resume);
    if (rc == 0) {
        // printed only once the folder is known good, so that a refused run fails with one line
        fprintf(stderr, "run folder: %s\n", run_dir);
        model_describe(&run.model, stderr);
        fprintf(stderr,
                "training on '%s': steps %ld..%ld of %ld, batch %ld (micro %d), lr %s, %d threads (%d workers), "
                "matmul %s\n",
                cfg->set, run.start_step, run.total_steps - 1, run.total_steps, cfg->batch_size, cfg->micro_batch,
                cfg->lr_schedule, run.threads, gradient_workers_count(run.workers), ops_backend());
        if (run.distributed)
            fprintf(stderr, "over %d MPI ranks (%s), each with %d threads: the same bits as one process\n",
                    dist_size(), dist_library(), run.threads);
        long end_step = stop_after > 0 && run.start_step + stop_after < run.total_steps ? run.start_step + stop_after
                                                                                           : run.total_steps;
        if (run.distributed && share_run(&run) != 0) {
            fclose(run.log);
            run.log = NULL;
            free_run(&run);
            pf_unlock_folder(lock);
            return TRAIN_INTERRUPTED;  // before any step: the folder is as it was
        }
        rc = run_steps(&run, end_step);
        DistControl end = {.kind = DIST_TRAIN_END};
        if (run.distributed && !interrupted) dist_control(&end);
        fclose(run.log);
        run.log = NULL;
        if (rc == 0) rc = finish_run(&run);
    }
    free_run(&run);
    pf_unlock_folder(lock);
    return rc;
}
