// The experiments on the hand-built BFS transformer: the construction's error per N, and its
// robustness (damage one weight matrix or perturb all weights, retrain with Adam, watch the loss
// recover). Each writes CSV, a JSON summary and Vega-Lite figures into its folder.
#include "bfs/bfs_experiments.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "adam.h"
#include "common.h"
#include "experiment/report.h"
#include "progress.h"
#include "rng.h"

BfsExperiment bfs_experiment_default(void) {
    BfsExperiment exp = {
        .n_min = BFS_MIN_N,
        .n_max = 15,
        .scale = BFS_DEFAULT_SCALE,
        .eval_count = 16384,
        .seed = 1,
        .kinds = {BFS_REACH_Q, BFS_REACH_K, BFS_REACH_V, BFS_RECORD_Q, BFS_RECORD_K, BFS_RECORD_V, -2},
        .matrix_index = -1,
        .seeds = 5,
        .steps = 10000,
        .lr = 1e-6,
        .lrs = {1e-6},
        .num_lrs = 1,
        .batch = 512,
        .threshold = 1e-2,
        .sigmas = {1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0},  // the basin is narrow: MSE ~0.1 at 3e-5 (N = 8)
        .num_sigmas = 7,
    };
    return exp;
}

// ---------------------------------------------------------------------------------------------
// The files every experiment writes: a CSV log, a JSON summary and Vega-Lite figures. A write is
// skipped (its tree only freed) once an earlier one failed, so an experiment chains its writes as
// rc = write_...(rc, ...) and reports the first failure.

// The experiment's folder, created, and its CSV log opened with its header line; NULL with the
// error set.
static FILE *open_csv(const char *dir, const char *name, const char *header) {
    if (pf_mkdir_p(dir) != 0) return NULL;
    char path[4096];
    if (pf_path_join(path, sizeof(path), dir, name) != 0) return NULL;
    FILE *f = fopen(path, "w");
    if (!f) {
        pf_fail("cannot write %s: %s", path, strerror(errno));
        return NULL;
    }
    fprintf(f, "%s\n", header);
    return f;
}

static int close_csv(FILE *f, const char *name) {
    int ok = fflush(f) == 0 && !ferror(f);
    ok = fclose(f) == 0 && ok;
    return ok ? 0 : pf_fail("cannot write %s: %s", name, strerror(errno));
}

// Writes a cJSON tree (and frees it) to dir/name, atomically; pretty or on one line.
static int write_json(int rc, const char *dir, const char *name, cJSON *root, int pretty) {
    char path[4096];
    if (rc == 0) rc = pf_path_join(path, sizeof(path), dir, name);
    if (rc == 0) rc = pf_write_json_atomic(path, root, pretty);
    cJSON_Delete(root);
    return rc;
}

// The summary dir/name: the settings and results, indented.
static int write_summary(int rc, const char *dir, const char *name, cJSON *root) {
    return write_json(rc, dir, name, root, 1);
}

// A figure dir/name: a Vega-Lite v6 spec (as the main report's), the static part as JSON text, with `values` (taken over)
// inlined as its data.
static int write_figure(int rc, const char *dir, const char *name, const char *spec_text, cJSON *values) {
    if (rc != 0) {
        cJSON_Delete(values);
        return rc;
    }
    cJSON *spec = cJSON_Parse(spec_text);
    if (!spec) {
        cJSON_Delete(values);
        return pf_fail("internal error: bad Vega-Lite template for %s", name);
    }
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "$schema", "https://vega.github.io/schema/vega-lite/v6.json");
    cJSON *data = cJSON_AddObjectToObject(root, "data");
    cJSON_AddItemToObject(data, "values", values);
    for (cJSON *item = spec->child; item;) {
        cJSON *next = item->next;
        cJSON_AddItemToObject(root, item->string, cJSON_DetachItemViaPointer(spec, item));
        item = next;
    }
    cJSON_Delete(spec);
    return write_json(rc, dir, name, root, 0);  // figures hold thousands of points
}

// Log scales cannot show 0: plotted values are clamped to this floor (the tables keep the raw value).
static double plot_floor(double x) { return x > 1e-12 ? x : 1e-12; }

static cJSON *eval_json(const BfsEval *r) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "count", (double)r->count);
    cJSON_AddNumberToObject(o, "mse", bfs_eval_mse(r));
    cJSON_AddNumberToObject(o, "accuracy", r->count ? (double)r->correct / r->count : 0.0);
    cJSON_AddNumberToObject(o, "max_error", r->max_error);
    return o;
}

static cJSON *config_json(const BfsConfig *cfg) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "n", cfg->n);
    cJSON_AddBoolToObject(o, "target_input", cfg->target_input);
    cJSON_AddNumberToObject(o, "scale", cfg->scale);
    cJSON_AddStringToObject(o, "reach", cfg->blog_reach ? "blog" : "direct");
    return o;
}

static void print_model_size(const BfsModel *m) {
    printf("bfs model N=%d%s: %zu parameters, %.1f MiB of activations for batches of %d\n", m->N,
           m->config.target_input ? " (target input)" : "", m->num_parameters,
           (double)m->num_activations * sizeof(float) / (1 << 20), m->capacity);
}

// Draws a weight matrix's entries from sigma N(0, 1), replacing (replace) or adding to them.
static void fill_normal(float *w, size_t n, double sigma, int replace, Rng *rng) {
    for (size_t i = 0; i < n; i++) w[i] = (float)(sigma * rng_normal(rng)) + (replace ? 0.0f : w[i]);
}

// Trains with Adam at exp->lr for exp->steps steps on fresh batches of data_seed (bfs noise).
static void train_adam(BfsModel *model, const BfsExperiment *exp, uint64_t data_seed, Progress *progress) {
    AdamState adam;
    adam_create(&adam, model->num_parameters);
    AdamConfig adam_cfg = adam_config_default();
    float *labels = mallocCheck((size_t)exp->batch * sizeof(float));
    for (long step = 0; step < exp->steps; step++) {
        bfs_make_batch(model, labels, data_seed, (uint64_t)step, exp->batch);
        bfs_zero_grad(model);
        bfs_forward_backward(model, labels, exp->batch);
        adam_update(&adam, model->params_memory, model->grads_memory, (float)exp->lr, &adam_cfg);
        progress_add(progress, 1);
    }
    free(labels);
    adam_free(&adam);
}

// The data of run s's retraining: the same batches for every run with the same seed number.
static uint64_t retrain_seed(const BfsExperiment *exp, int s) {
    return rng_mix64(exp->seed + 0x5eedULL * (uint64_t)(s + 1));
}

// ---------------------------------------------------------------------------------------------
// sweep-n

// The construction at size n, one variant: a CSV row, a summary row and a figure point.
static void sweep_one(const BfsExperiment *exp, int n, int variant, FILE *csv, cJSON *rows, cJSON *plot) {
    static const char *const variants[2] = {"dist(1,2)", "dist(1,t)"};
    BfsConfig cfg = {n, variant, exp->scale, exp->blog_reach};
    BfsModel model;
    bfs_model_create(&model, &cfg, 256, 0);
    bfs_construct(&model);
    BfsEval r;
    bfs_evaluate(&r, &model, exp->seed, exp->eval_count);
    bfs_model_free(&model);
    double mse = bfs_eval_mse(&r), acc = (double)r.correct / r.count;
    long unreachable = r.label_count[n + 1];
    double mse_unreachable = unreachable ? r.label_sse[n + 1] / unreachable : 0.0;
    printf("%3d  %-10s %12.3e %10.6f %10.3e %14.3e\n", n, variants[variant], mse, acc, r.max_error, mse_unreachable);
    fflush(stdout);
    fprintf(csv, "%d,%s,%g,%ld,%.9g,%.9g,%.9g,%.9g\n", n, variants[variant], (double)exp->scale, r.count, mse, acc,
            r.max_error, mse_unreachable);
    cJSON *row = eval_json(&r);
    cJSON_AddNumberToObject(row, "n", n);
    cJSON_AddStringToObject(row, "variant", variants[variant]);
    cJSON_AddNumberToObject(row, "mse_unreachable", mse_unreachable);
    cJSON_AddItemToArray(rows, row);
    cJSON *point = cJSON_CreateObject();
    cJSON_AddNumberToObject(point, "n", n);
    cJSON_AddStringToObject(point, "variant", variants[variant]);
    cJSON_AddNumberToObject(point, "mse", plot_floor(mse));
    cJSON_AddNumberToObject(point, "accuracy", acc);
    cJSON_AddItemToArray(plot, point);
}

static int write_sweep_files(int rc, const char *out_dir, const BfsExperiment *exp, cJSON *rows, cJSON *plot) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "experiment", "bfs sweep-n");
    cJSON_AddNumberToObject(root, "scale", exp->scale);
    cJSON_AddStringToObject(root, "reach", exp->blog_reach ? "blog" : "direct");
    cJSON_AddNumberToObject(root, "seed", (double)exp->seed);
    cJSON_AddNumberToObject(root, "count", (double)exp->eval_count);
    cJSON_AddItemToObject(root, "rows", rows);
    rc = write_summary(rc, out_dir, "sweep_n.json", root);
    return write_figure(
        rc, out_dir, "sweep_n.vl.json",
        "{\"title\": \"Hand-built BFS transformer: MSE per N (floored at 1e-12)\","
        " \"width\": 400, \"height\": 250, \"mark\": {\"type\": \"line\", \"point\": true},"
        " \"encoding\": {"
        "  \"x\": {\"field\": \"n\", \"type\": \"quantitative\", \"title\": \"N (vertices = layers)\","
        "        \"axis\": {\"tickMinStep\": 1, \"format\": \"d\"}},"
        "  \"y\": {\"field\": \"mse\", \"type\": \"quantitative\", \"scale\": {\"type\": \"log\"},"
        "         \"title\": \"MSE\"},"
        "  \"color\": {\"field\": \"variant\", \"type\": \"nominal\"},"
        "  \"tooltip\": [{\"field\": \"n\"}, {\"field\": \"variant\"}, {\"field\": \"mse\"},"
        "              {\"field\": \"accuracy\"}]}}",
        plot);
}

int bfs_run_sweep_n(const BfsExperiment *exp, const char *out_dir) {
    FILE *csv = open_csv(out_dir, "sweep_n.csv", "n,variant,scale,count,mse,accuracy,max_error,mse_unreachable");
    if (!csv) return -1;
    cJSON *rows = cJSON_CreateArray(), *plot = cJSON_CreateArray();
    printf("%3s  %-10s %12s %10s %10s %14s\n", "N", "variant", "MSE", "accuracy", "max|err|", "MSE unreach.");
    Progress progress;
    progress_begin(&progress, "bfs sweep-n", "evaluations", 2L * (exp->n_max - exp->n_min + 1));
    for (int n = exp->n_min; n <= exp->n_max; n++)
        for (int variant = 0; variant < 2; variant++) {
            sweep_one(exp, n, variant, csv, rows, plot);
            progress_add(&progress, 1);
        }
    progress_end(&progress);
    int rc = close_csv(csv, "sweep_n.csv");
    return write_sweep_files(rc, out_dir, exp, rows, plot);
}

// ---------------------------------------------------------------------------------------------
// robust

// The protocol's runs are independent: damage one matrix (drawn from the seed, the kind list entry
// and the seed number), evaluate, retrain, evaluate again. They are spread over the threads, one run
// per thread with its own model (the model's own threading then idles), and each run leaves its
// files in DIR/runs/ when it ends: its steps (run-K.csv) and its results with a thinned loss curve
// (run-K.json, written last, so that it marks the run done). --resume keeps the finished runs of a
// folder started with the same settings; the summary, the CSV of every step and the figures are then
// made from the run files in run order, so they do not depend on how the threads shared the runs.

enum { ROBUST_CURVE_POINTS = 5000 };  // the loss figure's inlined data, over all runs

static int robust_runs_per_lr(const BfsExperiment *exp) {
    int lists = 0;
    while (exp->kinds[lists] != -2) lists++;
    return lists * exp->seeds;
}

static int robust_total_runs(const BfsExperiment *exp) { return exp->num_lrs * robust_runs_per_lr(exp); }

// The settings a run's results depend on (a resumed folder must have been started with them).
static cJSON *robust_settings_json(const BfsConfig *cfg, const BfsExperiment *exp) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "model", config_json(cfg));
    cJSON_AddNumberToObject(o, "seed", (double)exp->seed);
    cJSON_AddNumberToObject(o, "seeds", exp->seeds);
    cJSON *kinds = cJSON_AddArrayToObject(o, "kinds");
    for (int i = 0; exp->kinds[i] != -2; i++)
        cJSON_AddItemToArray(kinds, cJSON_CreateString(exp->kinds[i] >= 0 ? BFS_KIND_NAMES[exp->kinds[i]] : "random"));
    cJSON_AddNumberToObject(o, "index", exp->matrix_index);
    cJSON_AddNumberToObject(o, "steps", (double)exp->steps);
    cJSON *lrs = cJSON_AddArrayToObject(o, "lrs");
    for (int i = 0; i < exp->num_lrs; i++) cJSON_AddItemToArray(lrs, cJSON_CreateNumber(exp->lrs[i]));
    cJSON_AddNumberToObject(o, "batch", exp->batch);
    cJSON_AddNumberToObject(o, "threshold", exp->threshold);
    cJSON_AddNumberToObject(o, "eval_count", (double)exp->eval_count);
    return o;
}

static void run_path(char *out, size_t size, const char *dir, int run, const char *ext) {
    snprintf(out, size, "%s/runs/run-%04d.%s", dir, run, ext);
}

// 0 when DIR/robust_settings.json holds these settings; -1 with the error set otherwise.
static int robust_check_settings(const char *out_dir, const cJSON *settings) {
    char path[4096];
    if (pf_path_join(path, sizeof(path), out_dir, "robust_settings.json") != 0) return -1;
    cJSON *old = pf_read_json(path);
    if (!old) return -1;
    int same = cJSON_Compare(old, settings, 1);
    cJSON_Delete(old);
    if (!same)
        return pf_fail("bfs robust: %s was started with other settings (see its robust_settings.json); "
                       "give the same ones or use another --out",
                       out_dir);
    return 0;
}

// Starts the folder: a fresh start clears the run files of an earlier one; a resume checks that the
// folder was started with the same settings. Then writes the settings.
static int robust_prepare(const char *out_dir, const cJSON *settings, int resume, int total_runs) {
    char path[4096], runs_dir[4096];
    if (pf_path_join(runs_dir, sizeof(runs_dir), out_dir, "runs") != 0 || pf_mkdir_p(runs_dir) != 0) return -1;
    if (pf_path_join(path, sizeof(path), out_dir, "robust_settings.json") != 0) return -1;
    if (resume && pf_file_exists(path)) {
        if (robust_check_settings(out_dir, settings) != 0) return -1;
    } else {
        for (int run = 0; run < total_runs; run++) {
            run_path(path, sizeof(path), out_dir, run, "json");
            unlink(path);
            run_path(path, sizeof(path), out_dir, run, "csv");
            unlink(path);
        }
        if (pf_path_join(path, sizeof(path), out_dir, "robust_settings.json") != 0) return -1;
    }
    return pf_write_json_atomic(path, settings, 1);
}

// One run, on the calling thread's model: writes its CSV and then its JSON into DIR/runs/.
static int robust_one_run(BfsModel *model, const BfsExperiment *exp, const char *out_dir, int run, Progress *progress) {
    int per_lr = robust_runs_per_lr(exp);
    int lr_index = run / per_lr, list = (run % per_lr) / exp->seeds, s = run % exp->seeds;
    // The damage is drawn from (seed, kind list, seed number), the data from (seed, seed number):
    // runs with the same seed number see the same batches whatever matrix they damaged, and every
    // learning rate retrains the same damaged model.
    Rng rng = rng_stream(exp->seed, 0xDA3A6EULL + (uint64_t)list, (uint64_t)s);
    int kind = exp->kinds[list] >= 0 ? exp->kinds[list] : (int)rng_below(&rng, BFS_NUM_KINDS);
    int index = exp->matrix_index >= 0 ? exp->matrix_index : (int)rng_below(&rng, (uint32_t)bfs_kind_count(model, kind));
    bfs_construct(model);
    size_t size;
    float *damaged = bfs_matrix(model, &model->params, kind, index, &size);
    fill_normal(damaged, size, 1.0, 1, &rng);
    BfsEval before, after;
    bfs_evaluate(&before, model, exp->seed, exp->eval_count);

    char csv_path[4096], tmp_path[4200], json_path[4096];
    run_path(csv_path, sizeof(csv_path), out_dir, run, "csv");
    run_path(json_path, sizeof(json_path), out_dir, run, "json");
    snprintf(tmp_path, sizeof(tmp_path), "%s.tmp", csv_path);
    FILE *csv = fopen(tmp_path, "w");
    if (!csv) return pf_fail("cannot write %s: %s", tmp_path, strerror(errno));
    double lr = exp->lrs[lr_index];
    long plot_every = (long)robust_total_runs(exp) * exp->steps / ROBUST_CURVE_POINTS + 1;
    cJSON *curve = cJSON_CreateArray();
    AdamState adam;
    adam_create(&adam, model->num_parameters);
    AdamConfig adam_cfg = adam_config_default();
    float *labels = mallocCheck((size_t)exp->batch * sizeof(float));
    long recovered_at = -1;
    double loss = NAN, start = pf_now_seconds();
    for (long step = 0; step < exp->steps; step++) {
        bfs_make_batch(model, labels, retrain_seed(exp, s), (uint64_t)step, exp->batch);
        bfs_zero_grad(model);
        bfs_forward_backward(model, labels, exp->batch);
        loss = bfs_mse(model, labels, exp->batch);
        fprintf(csv, "%d,%s,%d,%d,%g,%ld,%.9g\n", run, BFS_KIND_NAMES[kind], index, s, lr, step, loss);
        if (step % plot_every == 0) {
            cJSON *point = cJSON_CreateArray();
            cJSON_AddItemToArray(point, cJSON_CreateNumber((double)step));
            cJSON_AddItemToArray(point, cJSON_CreateNumber(plot_floor(loss)));
            cJSON_AddItemToArray(curve, point);
        }
        if (recovered_at < 0 && loss < exp->threshold) recovered_at = step;
        adam_update(&adam, model->params_memory, model->grads_memory, (float)lr, &adam_cfg);
#pragma omp critical(bfs_robust_progress)
        progress_add(progress, 1);
    }
    double seconds = pf_now_seconds() - start;
    free(labels);
    adam_free(&adam);
    int ok = fflush(csv) == 0 && !ferror(csv) && fsync(fileno(csv)) == 0;
    ok = fclose(csv) == 0 && ok;
    if (!ok) {
        cJSON_Delete(curve);
        return pf_fail("cannot write %s: %s", tmp_path, strerror(errno));
    }
    if (pf_rename_durable(tmp_path, csv_path) != 0) {
        cJSON_Delete(curve);
        return -1;
    }
    bfs_evaluate(&after, model, exp->seed, exp->eval_count);

    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "run", run);
    cJSON_AddNumberToObject(o, "lr", lr);
    cJSON_AddStringToObject(o, "kind", BFS_KIND_NAMES[kind]);
    cJSON_AddStringToObject(o, "list", exp->kinds[list] >= 0 ? BFS_KIND_NAMES[kind] : "random");
    cJSON_AddNumberToObject(o, "matrix", index);
    cJSON_AddNumberToObject(o, "seed", s);
    cJSON_AddItemToObject(o, "eval_before", eval_json(&before));
    cJSON_AddItemToObject(o, "eval_after", eval_json(&after));
    cJSON_AddNumberToObject(o, "final_loss", loss);
    cJSON_AddBoolToObject(o, "recovered", recovered_at >= 0);
    if (recovered_at >= 0) cJSON_AddNumberToObject(o, "steps_to_recover", (double)recovered_at);
    else cJSON_AddNullToObject(o, "steps_to_recover");
    cJSON_AddNumberToObject(o, "seconds", seconds);
    cJSON_AddItemToObject(o, "curve", curve);
    int rc = pf_write_json_atomic(json_path, o, 0);
    char recovered_text[32] = "no";
    if (recovered_at >= 0) snprintf(recovered_text, sizeof(recovered_text), "step %ld", recovered_at);
#pragma omp critical(bfs_robust_print)
    {
        printf("%4d %-8s[%2d] %4d %8g %12.4g %12.4g %12.4g %10s  (%.1f s)\n", run, BFS_KIND_NAMES[kind], index, s, lr,
               bfs_eval_mse(&before), loss, bfs_eval_mse(&after), recovered_text, seconds);
        fflush(stdout);
    }
    cJSON_Delete(o);
    return rc;
}

// The finished run's results; NULL when the run has not finished (*bad = 0) or its file cannot be
// read (*bad = 1, the error set).
static cJSON *read_run(const char *out_dir, int run, int *bad) {
    char path[4096];
    run_path(path, sizeof(path), out_dir, run, "json");
    *bad = 0;
    if (!pf_file_exists(path)) return NULL;
    cJSON *o = pf_read_json(path);
    *bad = !o;
    return o;
}

// The summary row of the runs [first, first + exp->seeds) (one kind list entry at one rate); runs
// not finished (NULL) are left out, and "runs" counts the finished ones.
static cJSON *robust_row(cJSON *const *runs, int first, const BfsExperiment *exp) {
    int n = 0, recovered = 0, per_lr = robust_runs_per_lr(exp);
    int list = (first % per_lr) / exp->seeds, lr_index = first / per_lr;
    double *steps = mallocCheck((size_t)exp->seeds * sizeof(double));
    double *befores = mallocCheck((size_t)exp->seeds * sizeof(double));
    double *finals = mallocCheck((size_t)exp->seeds * sizeof(double));
    double *losses = mallocCheck((size_t)exp->seeds * sizeof(double));
    for (int s = 0; s < exp->seeds; s++) {
        const cJSON *r = runs[first + s];
        if (!r) continue;
        if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "recovered")))
            steps[recovered++] = report_json_number(r, "steps_to_recover");
        befores[n] = report_json_number(cJSON_GetObjectItemCaseSensitive(r, "eval_before"), "mse");
        finals[n] = report_json_number(cJSON_GetObjectItemCaseSensitive(r, "eval_after"), "mse");
        losses[n++] = report_json_number(r, "final_loss");
    }
    cJSON *row = cJSON_CreateObject();
    cJSON_AddStringToObject(row, "kind", exp->kinds[list] >= 0 ? BFS_KIND_NAMES[exp->kinds[list]] : "random");
    cJSON_AddNumberToObject(row, "lr", exp->lrs[lr_index]);
    cJSON_AddNumberToObject(row, "runs", n);
    cJSON_AddNumberToObject(row, "runs_planned", exp->seeds);
    cJSON_AddNumberToObject(row, "recovered", recovered);
    cJSON_AddNumberToObject(row, "recovered_fraction", n ? (double)recovered / n : NAN);
    cJSON_AddNumberToObject(row, "median_steps_to_recover", pf_median(steps, recovered));
    cJSON_AddNumberToObject(row, "median_eval_mse_before", pf_median(befores, n));
    cJSON_AddNumberToObject(row, "median_final_eval_mse", pf_median(finals, n));
    cJSON_AddNumberToObject(row, "median_final_loss", pf_median(losses, n));
    free(steps), free(befores), free(finals), free(losses);
    return row;
}

static void print_robust_table(const cJSON *table, const BfsExperiment *exp) {
    printf("\n%-10s %8s %6s %10s %14s %16s\n", "matrix", "lr", "runs", "recovered", "median steps", "median eval MSE");
    for (const cJSON *row = table->child; row; row = row->next) {
        char steps_text[32] = "-";  // no run recovered
        if (cJSON_GetObjectItem(row, "recovered")->valueint > 0)
            snprintf(steps_text, sizeof(steps_text), "%.0f", report_json_number(row, "median_steps_to_recover"));
        printf("%-10s %8g %6d %9.0f%% %14s %16.4g\n", cJSON_GetObjectItem(row, "kind")->valuestring,
               report_json_number(row, "lr"), cJSON_GetObjectItem(row, "runs")->valueint,
               100.0 * report_json_number(row, "recovered_fraction"), steps_text,
               report_json_number(row, "median_final_eval_mse"));
    }
    printf("(recovered: batch loss below %g within %ld steps; median steps over recovered runs)\n", exp->threshold,
           exp->steps);
}

// robust_loss.csv: every finished run's steps, in run order.
static int write_robust_csv(const char *out_dir, cJSON *const *runs, int total_runs) {
    FILE *csv = open_csv(out_dir, "robust_loss.csv", "run,kind,matrix,seed,lr,step,loss");
    if (!csv) return -1;
    char path[4096], buffer[1 << 16];
    for (int run = 0; run < total_runs; run++) {
        if (!runs[run]) continue;
        run_path(path, sizeof(path), out_dir, run, "csv");
        FILE *f = fopen(path, "r");
        if (!f) {
            fclose(csv);
            return pf_fail("cannot read %s: %s", path, strerror(errno));
        }
        size_t got;
        while ((got = fread(buffer, 1, sizeof(buffer), f)) > 0) fwrite(buffer, 1, got, csv);
        fclose(f);
    }
    return close_csv(csv, "robust_loss.csv");
}

// robust.json, robust_loss.vl.json (the loss curves), robust_recovered.vl.json (a bar per kind) and,
// with more than one rate, robust_lr.vl.json (recovered fraction and final MSE against the rate).
static int write_robust_files(const char *out_dir, const BfsConfig *cfg, const BfsExperiment *exp, cJSON *table,
                              cJSON *runs, double wall_seconds, int finished) {
    cJSON *curves = cJSON_CreateArray();
    for (cJSON *run = runs->child; run; run = run->next) {
        cJSON *curve = cJSON_DetachItemFromObjectCaseSensitive(run, "curve");
        char label[96];
        snprintf(label, sizeof(label), "%s[%d] seed %d lr %g", cJSON_GetObjectItem(run, "kind")->valuestring,
                 (int)report_json_number(run, "matrix"), (int)report_json_number(run, "seed"),
                 report_json_number(run, "lr"));
        for (const cJSON *point = curve ? curve->child : NULL; point; point = point->next) {
            cJSON *p = cJSON_CreateObject();
            cJSON_AddNumberToObject(p, "run", report_json_number(run, "run"));
            cJSON_AddStringToObject(p, "run_label", label);
            cJSON_AddStringToObject(p, "kind", cJSON_GetObjectItem(run, "kind")->valuestring);
            cJSON_AddNumberToObject(p, "lr", report_json_number(run, "lr"));
            cJSON_AddNumberToObject(p, "step", cJSON_GetArrayItem(point, 0)->valuedouble);
            cJSON_AddNumberToObject(p, "loss", cJSON_GetArrayItem(point, 1)->valuedouble);
            cJSON_AddItemToArray(curves, p);
        }
        cJSON_Delete(curve);
    }
    cJSON *bars = cJSON_Duplicate(table, 1);
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "experiment", "bfs robust");
    cJSON_AddItemToObject(root, "model", config_json(cfg));
    cJSON_AddNumberToObject(root, "seed", (double)exp->seed);
    cJSON_AddNumberToObject(root, "seeds", exp->seeds);
    cJSON_AddNumberToObject(root, "steps", (double)exp->steps);
    cJSON_AddNumberToObject(root, "lr", exp->lrs[0]);
    cJSON *lrs = cJSON_AddArrayToObject(root, "lrs");
    for (int i = 0; i < exp->num_lrs; i++) cJSON_AddItemToArray(lrs, cJSON_CreateNumber(exp->lrs[i]));
    cJSON_AddNumberToObject(root, "batch", exp->batch);
    cJSON_AddNumberToObject(root, "threshold", exp->threshold);
    cJSON_AddNumberToObject(root, "eval_count", (double)exp->eval_count);
    cJSON_AddNumberToObject(root, "runs_planned", robust_total_runs(exp));
    cJSON_AddNumberToObject(root, "runs_finished", finished);
    cJSON_AddNumberToObject(root, "wall_seconds_last_invocation", wall_seconds);
    cJSON_AddItemToObject(root, "table", table);
    cJSON_AddItemToObject(root, "runs", runs);
    int rc = write_summary(0, out_dir, "robust.json", root);
    char title[256];
    snprintf(title, sizeof(title),
             "{\"title\": \"Loss after randomizing one matrix (N = %d, Adam lr %s, batch %d)\","
             " \"width\": 500, \"height\": 300, \"mark\": {\"type\": \"line\", \"opacity\": 0.7},",
             cfg->n, exp->num_lrs > 1 ? "per run" : "", exp->batch);
    if (exp->num_lrs == 1)
        snprintf(title, sizeof(title),
                 "{\"title\": \"Loss after randomizing one matrix (N = %d, Adam lr %g, batch %d)\","
                 " \"width\": 500, \"height\": 300, \"mark\": {\"type\": \"line\", \"opacity\": 0.7},",
                 cfg->n, exp->lrs[0], exp->batch);
    char spec[4096];
    snprintf(spec, sizeof(spec),
             "%s \"encoding\": {"
             "  \"x\": {\"field\": \"step\", \"type\": \"quantitative\", \"axis\": {\"tickMinStep\": 1, \"format\": \"d\"}},"
             "  \"y\": {\"field\": \"loss\", \"type\": \"quantitative\", \"scale\": {\"type\": \"log\"},"
             "         \"title\": \"batch MSE\"},"
             "  \"color\": {\"field\": \"kind\", \"type\": \"nominal\", \"title\": \"damaged matrix\"},"
             "  \"detail\": {\"field\": \"run\", \"type\": \"nominal\"},"
             "  \"tooltip\": [{\"field\": \"run_label\"}, {\"field\": \"step\"}, {\"field\": \"loss\"}]}}",
             title);
    rc = write_figure(rc, out_dir, "robust_loss.vl.json", spec, curves);
    if (exp->num_lrs > 1) {
        cJSON *points = cJSON_Duplicate(bars, 1);
        snprintf(spec, sizeof(spec),
                 "{\"title\": \"Recovery against the learning rate (%d runs each, %ld steps)\","
                 " \"width\": 400, \"height\": 250,"
                 " \"encoding\": {"
                 "  \"x\": {\"field\": \"lr\", \"type\": \"quantitative\", \"scale\": {\"type\": \"log\"},"
                 "         \"title\": \"Adam learning rate\"},"
                 "  \"color\": {\"field\": \"kind\", \"type\": \"nominal\", \"title\": \"damaged matrix\"}},"
                 " \"layer\": ["
                 "  {\"mark\": {\"type\": \"line\", \"point\": true},"
                 "   \"encoding\": {\"y\": {\"field\": \"median_final_loss\", \"type\": \"quantitative\","
                 "                 \"scale\": {\"type\": \"log\"}, \"title\": \"median final batch MSE\"},"
                 "    \"tooltip\": [{\"field\": \"kind\"}, {\"field\": \"lr\"}, {\"field\": \"recovered\"},"
                 "                 {\"field\": \"runs\"}, {\"field\": \"median_final_loss\"},"
                 "                 {\"field\": \"median_final_eval_mse\"}, {\"field\": \"median_steps_to_recover\"}]}},"
                 "  {\"mark\": {\"type\": \"rule\", \"strokeDash\": [4, 4], \"color\": \"gray\"},"
                 "   \"encoding\": {\"y\": {\"datum\": %g}}}]}",
                 exp->seeds, exp->steps, exp->threshold);
        rc = write_figure(rc, out_dir, "robust_lr.vl.json", spec, points);
    }
    snprintf(spec, sizeof(spec),
             "{\"title\": \"Runs recovering below MSE %g within %ld steps\","
             " \"width\": 300, \"height\": 200, \"mark\": \"bar\","
             " \"encoding\": {"
             "  \"x\": {\"field\": \"kind\", \"type\": \"nominal\", \"title\": \"damaged matrix\", \"sort\": null},"
             "  %s"
             "  \"y\": {\"field\": \"recovered_fraction\", \"type\": \"quantitative\","
             "         \"scale\": {\"domain\": [0, 1]}, \"title\": \"recovered fraction\"},"
             "  \"tooltip\": [{\"field\": \"kind\"}, {\"field\": \"lr\"}, {\"field\": \"runs\"}, {\"field\": \"recovered\"},"
             "              {\"field\": \"median_steps_to_recover\"}, {\"field\": \"median_final_eval_mse\"}]}}",
             exp->threshold, exp->steps,
             exp->num_lrs > 1 ? "\"xOffset\": {\"field\": \"lr\", \"type\": \"nominal\"},"
                                " \"color\": {\"field\": \"lr\", \"type\": \"nominal\", \"title\": \"lr\"},"
                              : "");
    return write_figure(rc, out_dir, "robust_recovered.vl.json", spec, bars);
}

// The summary, the CSV of every step and the figures from the run files in run order (the finished
// ones: all of them after a whole protocol, those done so far with --summarize).
static int robust_summarize(const char *out_dir, const BfsConfig *cfg, const BfsExperiment *exp, double wall) {
    int total_runs = robust_total_runs(exp), finished = 0, rc = 0;
    cJSON **runs = mallocCheck((size_t)total_runs * sizeof(cJSON *));
    for (int run = 0; run < total_runs; run++) {
        int bad;
        runs[run] = read_run(out_dir, run, &bad);
        if (bad) rc = -1;
        finished += runs[run] != NULL;
    }
    if (rc == 0 && finished == 0) rc = pf_fail("bfs robust: no run of %s has finished yet", out_dir);
    cJSON *table = cJSON_CreateArray(), *run_list = cJSON_CreateArray();
    if (rc == 0) {
        for (int first = 0; first < total_runs; first += exp->seeds)
            cJSON_AddItemToArray(table, robust_row(runs, first, exp));
        if (finished < total_runs) printf("\n%d of %d runs finished\n", finished, total_runs);
        print_robust_table(table, exp);
        rc = write_robust_csv(out_dir, runs, total_runs);
    }
    for (int run = 0; run < total_runs; run++)
        if (runs[run]) cJSON_AddItemToArray(run_list, runs[run]);
    free(runs);
    if (rc == 0) return write_robust_files(out_dir, cfg, exp, table, run_list, wall, finished);
    cJSON_Delete(table);
    cJSON_Delete(run_list);
    return rc;
}

int bfs_run_robust(const BfsConfig *cfg, const BfsExperiment *exp, const char *out_dir) {
    if (bfs_config_validate(cfg) != 0) return -1;
    // Every kind has N matrices (N reach heads, L = N layers).
    if (exp->matrix_index >= cfg->n)
        return pf_fail("bfs: matrix index %d does not exist (each kind has %d matrices, 0..%d)", exp->matrix_index,
                       cfg->n, cfg->n - 1);
    int total_runs = robust_total_runs(exp);
    cJSON *settings = robust_settings_json(cfg, exp);
    if (exp->summarize) {  // a reader: no lock, so that it can look at a protocol while it runs
        int rc = robust_check_settings(out_dir, settings);
        cJSON_Delete(settings);
        return rc == 0 ? robust_summarize(out_dir, cfg, exp, 0.0) : -1;
    }
    int lock, rc = -1;
    if (pf_mkdir_p(out_dir) == 0 && pf_lock_folder(out_dir, &lock) == 0) {
        rc = robust_prepare(out_dir, settings, exp->resume, total_runs);
        if (rc != 0) pf_unlock_folder(lock);
    }
    cJSON_Delete(settings);
    if (rc != 0) return -1;
    // The runs still to do (a resume keeps those whose results are on disk), seed number by seed
    // number: all the kinds and rates of seed 0 first, so that a stop leaves every kind with runs.
    int *todo = mallocCheck((size_t)total_runs * sizeof(int)), num_todo = 0;
    for (int s = 0; s < exp->seeds; s++)
        for (int run = s; run < total_runs; run += exp->seeds) {
            char path[4096];
            run_path(path, sizeof(path), out_dir, run, "json");
            if (!pf_file_exists(path)) todo[num_todo++] = run;
        }
    if (num_todo < total_runs) printf("resuming: %d of %d runs done already\n", total_runs - num_todo, total_runs);
    double start = pf_now_seconds();
    Progress progress;
    progress_begin(&progress, "bfs robust", "steps", (long)num_todo * exp->steps);
    printf("%4s %-12s %4s %8s %12s %12s %12s %10s\n", "run", "matrix", "seed", "lr", "eval before", "final loss",
           "eval after", "recovered");
    int failed = 0, printed_size = 0;
    char first_error[512] = "";
#pragma omp parallel if (num_todo > 1)
    {
        BfsModel model;
        bfs_model_create(&model, cfg, exp->batch, BFS_TRAINING);
#pragma omp critical(bfs_robust_print)
        if (!printed_size) {
            print_model_size(&model);
            printed_size = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int i = 0; i < num_todo; i++) {
            int skip;
#pragma omp atomic read
            skip = failed;
            if (skip) continue;
            if (robust_one_run(&model, exp, out_dir, todo[i], &progress) != 0) {
#pragma omp critical(bfs_robust_print)
                if (!failed) {
                    failed = 1;
                    snprintf(first_error, sizeof(first_error), "%s", pf_last_error());
                }
            }
        }
        bfs_model_free(&model);
    }
    progress_end(&progress);
    free(todo);
    double wall = pf_now_seconds() - start;
    if (failed) {
        pf_unlock_folder(lock);
        return pf_fail("%s", first_error);
    }
    printf("%d runs in %.1f s\n", num_todo, wall);

    rc = robust_summarize(out_dir, cfg, exp, wall);
    pf_unlock_folder(lock);
    return rc;
}

// ---------------------------------------------------------------------------------------------
// noise

// The runs at perturbation scale exp->sigmas[i], one per seed: CSV rows, figure points (before and,
// with retraining, after), a printed line, and the returned summary row.
static cJSON *noise_sigma(BfsModel *model, const BfsExperiment *exp, int i, FILE *csv, cJSON *plot, Progress *progress) {
    double sigma = exp->sigmas[i];
    double *mse_before = mallocCheck((size_t)exp->seeds * sizeof(double));
    double *acc_before = mallocCheck((size_t)exp->seeds * sizeof(double));
    double *mse_after = mallocCheck((size_t)exp->seeds * sizeof(double));
    for (int s = 0; s < exp->seeds; s++) {
        Rng rng = rng_stream(exp->seed, 0x5161A0ULL + (uint64_t)i, (uint64_t)s);
        bfs_construct(model);
        fill_normal(model->params_memory, model->num_parameters, sigma, 0, &rng);
        BfsEval before, after = {0};
        bfs_evaluate(&before, model, exp->seed, exp->eval_count);
        if (exp->steps > 0) {
            train_adam(model, exp, retrain_seed(exp, s), progress);
            bfs_evaluate(&after, model, exp->seed, exp->eval_count);
        }
        if (exp->steps == 0) progress_add(progress, 1);
        mse_before[s] = bfs_eval_mse(&before);
        acc_before[s] = (double)before.correct / before.count;
        mse_after[s] = exp->steps > 0 ? bfs_eval_mse(&after) : NAN;
        double acc_after = exp->steps > 0 ? (double)after.correct / after.count : NAN;
        fprintf(csv, "%g,%d,%.9g,%.9g,%.9g,%.9g\n", sigma, s, mse_before[s], acc_before[s], mse_after[s], acc_after);
        cJSON *point = cJSON_CreateObject();
        cJSON_AddNumberToObject(point, "sigma", sigma);
        cJSON_AddNumberToObject(point, "seed", s);
        cJSON_AddStringToObject(point, "when", "perturbed");
        cJSON_AddNumberToObject(point, "mse", plot_floor(mse_before[s]));
        cJSON_AddItemToArray(plot, point);
        if (exp->steps > 0) {
            point = cJSON_Duplicate(point, 1);
            cJSON_ReplaceItemInObject(point, "when", cJSON_CreateString("retrained"));
            cJSON_ReplaceItemInObject(point, "mse", cJSON_CreateNumber(plot_floor(mse_after[s])));
            cJSON_AddItemToArray(plot, point);
        }
    }
    double lo = mse_before[0], hi = mse_before[0];
    for (int s = 1; s < exp->seeds; s++) {
        lo = fmin(lo, mse_before[s]);
        hi = fmax(hi, mse_before[s]);
    }
    double med = pf_median(mse_before, exp->seeds), med_acc = pf_median(acc_before, exp->seeds);
    double med_after = exp->steps > 0 ? pf_median(mse_after, exp->seeds) : NAN;
    char range[64];
    snprintf(range, sizeof(range), "%.2g..%.2g", lo, hi);
    printf("%10g %14.4g %14s %14.4f", sigma, med, range, med_acc);
    if (exp->steps > 0) printf(" %14.4g", med_after);
    printf("\n");
    fflush(stdout);
    cJSON *row = cJSON_CreateObject();
    cJSON_AddNumberToObject(row, "sigma", sigma);
    cJSON_AddNumberToObject(row, "runs", exp->seeds);
    cJSON_AddNumberToObject(row, "median_mse", med);
    cJSON_AddNumberToObject(row, "min_mse", lo);
    cJSON_AddNumberToObject(row, "max_mse", hi);
    cJSON_AddNumberToObject(row, "median_accuracy", med_acc);
    if (exp->steps > 0) cJSON_AddNumberToObject(row, "median_mse_after_retraining", med_after);
    free(mse_before);
    free(acc_before);
    free(mse_after);
    return row;
}

// noise.json and noise.vl.json (every run's MSE per sigma, the median as a line).
static int write_noise_files(int rc, const char *out_dir, const BfsConfig *cfg, const BfsExperiment *exp, cJSON *rows,
                             cJSON *plot) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "experiment", "bfs noise");
    cJSON_AddItemToObject(root, "model", config_json(cfg));
    cJSON_AddNumberToObject(root, "seed", (double)exp->seed);
    cJSON_AddNumberToObject(root, "seeds", exp->seeds);
    cJSON_AddNumberToObject(root, "eval_count", (double)exp->eval_count);
    cJSON_AddNumberToObject(root, "retrain_steps", (double)exp->steps);
    cJSON_AddNumberToObject(root, "lr", exp->lr);
    cJSON_AddNumberToObject(root, "batch", exp->batch);
    cJSON_AddItemToObject(root, "rows", rows);
    rc = write_summary(rc, out_dir, "noise.json", root);
    char spec[2048];
    snprintf(spec, sizeof(spec),
             "{\"title\": \"MSE after perturbing every weight by sigma N(0,1) (N = %d; floored at 1e-12)\","
             " \"width\": 400, \"height\": 250,"
             " \"encoding\": {"
             "  \"x\": {\"field\": \"sigma\", \"type\": \"quantitative\", \"scale\": {\"type\": \"log\"}},"
             "  \"color\": {\"field\": \"when\", \"type\": \"nominal\"}},"
             " \"layer\": ["
             "  {\"mark\": {\"type\": \"point\", \"opacity\": 0.5},"
             "   \"encoding\": {\"y\": {\"field\": \"mse\", \"type\": \"quantitative\", \"scale\": {\"type\": \"log\"},"
             "                 \"title\": \"MSE\"}, \"tooltip\": [{\"field\": \"sigma\"}, {\"field\": \"seed\"},"
             "                 {\"field\": \"mse\"}]}},"
             "  {\"mark\": \"line\","
             "   \"encoding\": {\"y\": {\"aggregate\": \"median\", \"field\": \"mse\", \"type\": \"quantitative\"}}}]}",
             cfg->n);
    return write_figure(rc, out_dir, "noise.vl.json", spec, plot);
}

int bfs_run_noise(const BfsConfig *cfg, const BfsExperiment *exp, const char *out_dir) {
    if (bfs_config_validate(cfg) != 0) return -1;
    FILE *csv = open_csv(out_dir, "noise.csv", "sigma,seed,mse_before,accuracy_before,mse_after,accuracy_after");
    if (!csv) return -1;
    cJSON *rows = cJSON_CreateArray(), *plot = cJSON_CreateArray();
    BfsModel model;
    bfs_model_create(&model, cfg, exp->batch, exp->steps > 0);
    print_model_size(&model);
    printf("%10s %14s %14s %14s %14s\n", "sigma", "median MSE", "min..max", "median acc.",
           exp->steps > 0 ? "median MSE after" : "");
    Progress progress;
    progress_begin(&progress, "bfs noise", exp->steps > 0 ? "steps" : "runs",
                   (long)exp->num_sigmas * exp->seeds * (exp->steps > 0 ? exp->steps : 1));
    for (int i = 0; i < exp->num_sigmas; i++)
        cJSON_AddItemToArray(rows, noise_sigma(&model, exp, i, csv, plot, &progress));
    progress_end(&progress);
    bfs_model_free(&model);
    int rc = close_csv(csv, "noise.csv");
    return write_noise_files(rc, out_dir, cfg, exp, rows, plot);
}
