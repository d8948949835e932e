#include "experiment/sweep.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "adam.h"
#include "common.h"
#include "progress.h"
#include "eval.h"
#include "experiment/losscurve.h"
#include "model.h"
#include "ops/ops.h"
#include "experiment/report.h"
#include "safetensors.h"
#include "train.h"
#include "experiment/vegalite.h"

// Curves in the report keep at most about this many points per run.
#define SWEEP_PLOT_POINTS 400

// ---------------------------------------------------------------------------------------------
// Building the runs

static int copy_setting(char *out, const char *text) {
    if (strlen(text) >= SWEEP_SETTING_MAX) return pf_fail("setting too long: %.60s...", text);
    if (!strchr(text, '=') || text[0] == '=') return pf_fail("bad setting '%s' (expected key=value)", text);
    snprintf(out, SWEEP_SETTING_MAX, "%s", text);
    return 0;
}

static size_t key_length(const char *setting) { return (size_t)(strchr(setting, '=') - setting); }

static int same_key(const char *a, const char *b) {
    size_t n = key_length(a);
    return n == key_length(b) && strncmp(a, b, n) == 0;
}

// Adds one run per seed with the given settings.
static int add_runs(SweepSpec *spec, int index, char settings[][SWEEP_SETTING_MAX], int num_settings,
                    const uint64_t *seeds, int num_seeds) {
    for (int s = 0; s < num_seeds; s++) {
        if (spec->num_runs == SWEEP_MAX_RUNS) return pf_fail("a sweep holds at most %d runs", SWEEP_MAX_RUNS);
        SweepRun *run = &spec->runs[spec->num_runs++];
        memset(run, 0, sizeof(*run));
        snprintf(run->name, sizeof(run->name), "r%02d-s%llu", index + 1, (unsigned long long)seeds[s]);
        run->num_settings = num_settings;
        for (int k = 0; k < num_settings; k++) snprintf(run->settings[k], SWEEP_SETTING_MAX, "%s", settings[k]);
        run->seed = seeds[s];
    }
    return 0;
}

static int build_from_list(SweepSpec *spec, const char *path, const uint64_t *seeds, int num_seeds) {
    size_t size;
    char *text = pf_read_input(path, &size);
    if (!text) return -1;
    int rc = 0, index = 0, line_number = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line && rc == 0; line = strtok_r(NULL, "\n", &save)) {
        line_number++;
        while (*line == ' ' || *line == '\t' || *line == '\r') line++;
        if (!*line) continue;
        cJSON *object = cJSON_Parse(line);
        if (!cJSON_IsObject(object)) {
            cJSON_Delete(object);
            rc = pf_fail("%s:%d: not a JSON object of settings", path, line_number);
            break;
        }
        char settings[SWEEP_MAX_SETTINGS][SWEEP_SETTING_MAX];
        int n = 0;
        for (cJSON *item = object->child; item && rc == 0; item = item->next) {
            if (n == SWEEP_MAX_SETTINGS) {
                rc = pf_fail("%s:%d: more than %d settings", path, line_number, SWEEP_MAX_SETTINGS);
            } else if (cJSON_IsString(item)) {
                snprintf(settings[n], SWEEP_SETTING_MAX, "%s=%s", item->string, item->valuestring);
                n++;
            } else if (cJSON_IsNumber(item)) {
                snprintf(settings[n], SWEEP_SETTING_MAX, "%s=%.15g", item->string, item->valuedouble);
                n++;
            } else {
                rc = pf_fail("%s:%d: setting %s must be a string or a number", path, line_number, item->string);
            }
        }
        cJSON_Delete(object);
        if (rc == 0) rc = add_runs(spec, index++, settings, n, seeds, num_seeds);
    }
    free(text);
    if (rc == 0 && spec->num_runs == 0) rc = pf_fail("%s lists no runs", path);
    return rc;
}

int sweep_build(SweepSpec *spec, const char *preset, int num_settings, const char *const *settings,
                const char *list_path, const uint64_t *seeds, int num_seeds) {
    if (strlen(preset) >= sizeof(spec->preset)) return pf_fail("preset name too long");
    snprintf(spec->preset, sizeof(spec->preset), "%s", preset);
    spec->num_base = 0;
    spec->num_runs = 0;
    if (num_seeds < 1) return pf_fail("a sweep needs at least one seed");
    // keys given once are the base; keys given more than once are the grid's axes
    const char *axes[SWEEP_MAX_SETTINGS][SWEEP_MAX_SETTINGS];
    int axis_size[SWEEP_MAX_SETTINGS] = {0}, num_axes = 0;
    for (int i = 0; i < num_settings; i++) {
        char check[SWEEP_SETTING_MAX];
        if (copy_setting(check, settings[i]) != 0) return -1;
        int count = 0, first = -1;
        for (int j = 0; j < num_settings; j++)
            if (same_key(settings[i], settings[j])) {
                count++;
                if (first < 0) first = j;
            }
        if (count == 1) {
            if (spec->num_base == SWEEP_MAX_SETTINGS) return pf_fail("more than %d settings", SWEEP_MAX_SETTINGS);
            copy_setting(spec->base[spec->num_base++], settings[i]);
            continue;
        }
        if (first != i) continue;  // the axis was made at its first value
        if (num_axes == SWEEP_MAX_SETTINGS || count > SWEEP_MAX_SETTINGS)
            return pf_fail("at most %d axes of %d values each", SWEEP_MAX_SETTINGS, SWEEP_MAX_SETTINGS);
        for (int j = 0; j < num_settings; j++)
            if (same_key(settings[i], settings[j])) axes[num_axes][axis_size[num_axes]++] = settings[j];
        num_axes++;
    }
    if (list_path) {
        if (num_axes > 0) return pf_fail("a sweep takes a grid (a key given several times) or a --list, not both");
        return build_from_list(spec, list_path, seeds, num_seeds);
    }
    // the grid, first axis slowest
    long total = 1;
    for (int a = 0; a < num_axes; a++) total *= axis_size[a];
    if (total * num_seeds > SWEEP_MAX_RUNS) return pf_fail("a sweep holds at most %d runs", SWEEP_MAX_RUNS);
    for (long index = 0; index < total; index++) {
        char chosen[SWEEP_MAX_SETTINGS][SWEEP_SETTING_MAX];
        long rest = index;
        for (int a = num_axes - 1; a >= 0; a--) {
            snprintf(chosen[a], SWEEP_SETTING_MAX, "%s", axes[a][rest % axis_size[a]]);
            rest /= axis_size[a];
        }
        if (add_runs(spec, (int)index, chosen, num_axes, seeds, num_seeds) != 0) return -1;
    }
    return 0;
}

// ---------------------------------------------------------------------------------------------
// sweep.json: the spec (and, once written, the results)

static cJSON *settings_json(char settings[][SWEEP_SETTING_MAX], int n) {
    cJSON *list = cJSON_CreateArray();
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(list, cJSON_CreateString(settings[i]));
    return list;
}

static cJSON *spec_to_json(const SweepSpec *spec) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "version", PF_VERSION);
    cJSON_AddStringToObject(root, "preset", spec->preset);
    cJSON_AddItemToObject(root, "settings", settings_json((char(*)[SWEEP_SETTING_MAX])spec->base, spec->num_base));
    cJSON_AddNumberToObject(root, "budget_examples", (double)spec->budget_examples);
    cJSON_AddNumberToObject(root, "budget_seconds", spec->budget_seconds);
    cJSON_AddNumberToObject(root, "eval_examples", (double)spec->eval_examples);
    cJSON *runs = cJSON_AddArrayToObject(root, "runs");
    for (int i = 0; i < spec->num_runs; i++) {
        const SweepRun *run = &spec->runs[i];
        cJSON *item = cJSON_CreateObject();
        cJSON_AddStringToObject(item, "name", run->name);
        char seed[32];
        snprintf(seed, sizeof(seed), "%llu", (unsigned long long)run->seed);
        cJSON_AddStringToObject(item, "seed", seed);
        cJSON_AddItemToObject(item, "settings",
                              settings_json((char(*)[SWEEP_SETTING_MAX])run->settings, run->num_settings));
        cJSON_AddItemToArray(runs, item);
    }
    return root;
}

static int read_settings(cJSON *list, char out[][SWEEP_SETTING_MAX], int *n) {
    *n = 0;
    cJSON *item;
    cJSON_ArrayForEach(item, list) {
        if (!cJSON_IsString(item) || *n == SWEEP_MAX_SETTINGS || copy_setting(out[*n], item->valuestring) != 0)
            return pf_fail("sweep.json: bad settings list");
        (*n)++;
    }
    return 0;
}

static int spec_from_json(SweepSpec *spec, const cJSON *root) {
    memset(spec, 0, sizeof(*spec));
    cJSON *preset = cJSON_GetObjectItemCaseSensitive(root, "preset");
    cJSON *runs = cJSON_GetObjectItemCaseSensitive(root, "runs");
    if (!cJSON_IsString(preset) || !cJSON_IsArray(runs) || strlen(preset->valuestring) >= sizeof(spec->preset))
        return pf_fail("sweep.json: not a sweep (preset and runs expected)");
    snprintf(spec->preset, sizeof(spec->preset), "%s", preset->valuestring);
    if (read_settings(cJSON_GetObjectItemCaseSensitive(root, "settings"), spec->base, &spec->num_base) != 0) return -1;
    double examples = report_json_number(root, "budget_examples"), seconds = report_json_number(root, "budget_seconds");
    double evals = report_json_number(root, "eval_examples");
    if (!(examples >= 0 && examples <= 1e15) || !(seconds >= 0 && seconds <= 1e12) || !(evals >= 1 && evals <= 1e9))
        return pf_fail("sweep.json: bad budget or eval_examples");
    spec->budget_examples = (long)examples;
    spec->budget_seconds = seconds;
    spec->eval_examples = (long)evals;
    cJSON *item;
    cJSON_ArrayForEach(item, runs) {
        if (spec->num_runs == SWEEP_MAX_RUNS) return pf_fail("sweep.json: more than %d runs", SWEEP_MAX_RUNS);
        SweepRun *run = &spec->runs[spec->num_runs++];
        cJSON *name = cJSON_GetObjectItemCaseSensitive(item, "name");
        cJSON *seed = cJSON_GetObjectItemCaseSensitive(item, "seed");
        if (!cJSON_IsString(name) || strlen(name->valuestring) >= sizeof(run->name) || !cJSON_IsString(seed) ||
            strchr(name->valuestring, '/'))
            return pf_fail("sweep.json: run %d lacks a name or seed", spec->num_runs);
        for (int j = 0; j < spec->num_runs - 1; j++)
            if (strcmp(spec->runs[j].name, name->valuestring) == 0)
                return pf_fail("sweep.json: two runs named %s", name->valuestring);
        snprintf(run->name, sizeof(run->name), "%s", name->valuestring);
        char *end;
        errno = 0;
        run->seed = strtoull(seed->valuestring, &end, 10);
        if (*end || errno || seed->valuestring[0] == '-') return pf_fail("sweep.json: bad seed of %s", run->name);
        if (read_settings(cJSON_GetObjectItemCaseSensitive(item, "settings"), run->settings, &run->num_settings) != 0)
            return -1;
    }
    return 0;
}

int sweep_parse_spec(SweepSpec *spec, const char *text) {
    cJSON *root = cJSON_Parse(text);
    int rc = root ? spec_from_json(spec, root) : pf_fail("sweep.json: not JSON");
    cJSON_Delete(root);
    return rc;
}

// ---------------------------------------------------------------------------------------------
// One run

// The run's training config: the preset, the sweep's settings, the run's own, its seed.
static int run_config(RunConfig *cfg, const SweepSpec *spec, const SweepRun *run) {
    if (config_preset(cfg, spec->preset) != 0) return -1;
    for (int i = 0; i < spec->num_base; i++)
        if (config_set(cfg, spec->base[i]) != 0) return -1;
    for (int i = 0; i < run->num_settings; i++)
        if (config_set(cfg, run->settings[i]) != 0) return pf_fail("run %s: %s", run->name, pf_last_error());
    cfg->seed = run->seed;
    cfg->eval_examples = 0;  // the sweep evaluates each run at its budget
    if (config_finalize(cfg) != 0) return pf_fail("run %s: %s", run->name, pf_last_error());
    return 0;
}

// The step the run's checkpoint is at (0 without one), and the training seconds its log holds.
static int run_progress(const char *run_dir, long batch_size, long *steps, double *seconds) {
    char path[PF_PATH_MAX + 160];
    *steps = 0;
    *seconds = 0.0;
    int has = pf_file_exists(run_dir) ? train_has_checkpoint(run_dir) : 0;
    if (has <= 0) return has;
    snprintf(path, sizeof(path), "%s/model.safetensors", run_dir);
    StFile file;
    if (st_load(&file, path) != 0) return -1;
    const char *text = st_metadata(&file, "step");
    *steps = text ? strtol(text, NULL, 10) : 0;
    st_free(&file);
    snprintf(path, sizeof(path), "%s/train.csv", run_dir);
    LossLog log;
    if (pf_file_exists(path) && losslog_read(&log, path) == 0) {
        for (long i = 0; i < log.n && log.step[i] < *steps; i++)
            if (log.examples_per_s[i] > 0) *seconds += batch_size / log.examples_per_s[i];
        losslog_free(&log);
    }
    return 0;
}

// Evaluates the run's checkpoint on fresh examples of its training set into run_dir/eval.json.
static int evaluate_run(const RunConfig *cfg, const char *run_dir, long eval_examples) {
    char path[PF_PATH_MAX + 160];
    snprintf(path, sizeof(path), "%s/model.safetensors", run_dir);
    StFile file;
    if (model_open_checkpoint(&file, path) != 0) return -1;
    Model model;
    model_create(&model, &cfg->model, cfg->micro_batch, 0);
    int rc = model_load_params(&model, &file);
    st_free(&file);
    EvalResult *result = mallocCheck(sizeof(EvalResult));
    if (rc == 0) rc = eval_model(result, &model, cfg->set, &cfg->data, cfg->seed, eval_examples);
    if (rc == 0) {
        char *json = eval_to_json(result);
        snprintf(path, sizeof(path), "%s/eval.json", run_dir);
        rc = pf_write_file_atomic(path, json, strlen(json));
        free(json);
        fprintf(stderr, "  eval on %ld '%s' examples: MSE %.5g, accuracy %.4f\n", result->count, cfg->set,
                eval_mse(result), eval_accuracy(result));
    }
    free(result);
    model_free(&model);
    return rc;
}

// Trains one run up to the budget (continuing its checkpoint), then evaluates it. Sets *done.
static int sweep_one(const SweepSpec *spec, const SweepRun *run, const char *dir, int *done) {
    RunConfig cfg;
    if (run_config(&cfg, spec, run) != 0) return -1;
    char run_dir[PF_PATH_MAX + 64], path[PF_PATH_MAX + 128];
    snprintf(run_dir, sizeof(run_dir), "%s/runs/%s", dir, run->name);
    snprintf(path, sizeof(path), "%s/eval.json", run_dir);
    *done = pf_file_exists(path);
    if (*done) return 0;
    long total = config_total_steps(&cfg);
    long budget_steps = spec->budget_examples > 0 ? (spec->budget_examples + cfg.batch_size - 1) / cfg.batch_size : total;
    if (budget_steps > total) budget_steps = total;
    long steps;
    double seconds;
    if (run_progress(run_dir, cfg.batch_size, &steps, &seconds) != 0) return -1;
    int finished = steps >= budget_steps || (spec->budget_seconds > 0 && seconds >= spec->budget_seconds);
    if (!finished) {
        fprintf(stderr, "sweep run %s (seed %llu):", run->name, (unsigned long long)run->seed);
        for (int i = 0; i < run->num_settings; i++) fprintf(stderr, " %s", run->settings[i]);
        fprintf(stderr, "\n");
        train_set_time_limit(spec->budget_seconds > 0 ? spec->budget_seconds - seconds : 0);
        int rc = train_run(&cfg, run_dir, steps > 0, budget_steps - steps);
        train_set_time_limit(0);
        if (rc != 0) return rc;
        if (run_progress(run_dir, cfg.batch_size, &steps, &seconds) != 0) return -1;
        finished = steps >= budget_steps || (spec->budget_seconds > 0 && seconds >= spec->budget_seconds);
        if (!finished) return 0;  // stopped early (not by the budget): a resume continues
    }
    if (evaluate_run(&cfg, run_dir, spec->eval_examples) != 0) return -1;
    *done = 1;
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Results: the table and the report

typedef struct {
    const SweepRun *run;
    RunConfig cfg;
    LossLog log;
    double *seconds;     // (log.n) training time up to the end of each step
    cJSON *eval;
    double best_mse;     // the lowest mean training MSE over a window of steps
    long best_step;      // the window's last step
    double best_label[PF_MAX_VERTICES + 1];
    int window;
} RunResult;

// The mean of the window of `w` values ending at i (NAN values skipped; NAN when none).
static double window_mean(const double *values, long stride, long i, int w) {
    double sum = 0.0;
    int n = 0;
    for (long k = i - w + 1; k <= i; k++) {
        if (k < 0) continue;
        double v = values[k * stride];
        if (isnan(v)) continue;
        sum += v;
        n++;
    }
    return n ? sum / n : NAN;
}

static int load_result(RunResult *r, const SweepSpec *spec, const SweepRun *run, const char *dir) {
    memset(r, 0, sizeof(*r));
    r->run = run;
    if (run_config(&r->cfg, spec, run) != 0) return -1;
    char path[PF_PATH_MAX + 128];
    snprintf(path, sizeof(path), "%s/runs/%s/train.csv", dir, run->name);
    if (losslog_read(&r->log, path) != 0) return -1;
    snprintf(path, sizeof(path), "%s/runs/%s/eval.json", dir, run->name);
    if (!(r->eval = pf_read_json(path))) return -1;
    const LossLog *log = &r->log;
    r->seconds = mallocCheck(sizeof(double) * (size_t)(log->n + 1));
    double t = 0.0;
    for (long i = 0; i < log->n; i++) {
        if (log->examples_per_s[i] > 0) t += r->cfg.batch_size / log->examples_per_s[i];
        r->seconds[i] = t;
    }
    r->window = log->n / 50 > 5 ? (int)(log->n / 50) : 5;
    r->best_mse = INFINITY;
    r->best_step = -1;
    for (long i = r->window - 1; i < log->n; i++) {
        double m = window_mean(log->mse, 1, i, r->window);
        if (m < r->best_mse) {
            r->best_mse = m;
            r->best_step = log->step[i];
        }
    }
    for (int label = 1; label <= log->max_label; label++) {
        r->best_label[label] = NAN;
        for (long i = r->window - 1; i < log->n; i++) {
            double m = window_mean(log->label_mse + label, log->max_label + 1, i, r->window);
            if (!isnan(m) && !(m >= r->best_label[label])) r->best_label[label] = m;
        }
    }
    return 0;
}

static void free_result(RunResult *r) {
    losslog_free(&r->log);
    free(r->seconds);
    cJSON_Delete(r->eval);
}

static void join_settings(char *out, size_t size, const SweepRun *run) {
    size_t used = 0;
    out[0] = '\0';
    for (int i = 0; i < run->num_settings && used < size; i++)
        used += snprintf(out + used, size - used, "%s%s", i ? " " : "", run->settings[i]);
}

// The eval.json's MSE of a label (NAN without examples of it).
static double eval_label_mse(const cJSON *eval, int label) {
    const cJSON *item;
    cJSON_ArrayForEach(item, cJSON_GetObjectItemCaseSensitive(eval, "labels")) {
        if ((int)report_json_number(item, "label") == label) return report_json_number(item, "mse");
    }
    return NAN;
}

static int write_table(RunResult *results, int n, const char *dir, cJSON *root) {
    int max_label = results[0].log.max_label;
    size_t cap = 4096 + (size_t)n * (1024 + 64 * (size_t)max_label), used = 0;
    char *csv = mallocCheck(cap);
    used += snprintf(csv + used, cap - used, "run,seed,settings,steps,examples,train_seconds,eval_mse,eval_accuracy");
    for (int label = 1; label <= max_label; label++) used += snprintf(csv + used, cap - used, ",eval_mse_%d", label);
    used += snprintf(csv + used, cap - used, ",best_train_mse,best_step");
    for (int label = 1; label <= max_label; label++) used += snprintf(csv + used, cap - used, ",best_mse_%d", label);
    used += snprintf(csv + used, cap - used, "\n");
    cJSON *rows = cJSON_AddArrayToObject(root, "results");
    for (int i = 0; i < n; i++) {
        RunResult *r = &results[i];
        char settings[SWEEP_MAX_SETTINGS * SWEEP_SETTING_MAX];
        join_settings(settings, sizeof(settings), r->run);
        long steps = r->log.n;
        double examples = (double)steps * r->cfg.batch_size, seconds = steps ? r->seconds[steps - 1] : 0.0;
        double mse = report_json_number(r->eval, "mse"), accuracy = report_json_number(r->eval, "accuracy");
        used += snprintf(csv + used, cap - used, "%s,%llu,\"%s\",%ld,%.0f,%.1f,%.6g,%.6g", r->run->name,
                         (unsigned long long)r->run->seed, settings, steps, examples, seconds, mse, accuracy);
        cJSON *row = cJSON_CreateObject();
        cJSON_AddStringToObject(row, "run", r->run->name);
        char seed[32];
        snprintf(seed, sizeof(seed), "%llu", (unsigned long long)r->run->seed);
        cJSON_AddStringToObject(row, "seed", seed);
        cJSON_AddStringToObject(row, "settings", settings);
        cJSON_AddNumberToObject(row, "steps", (double)steps);
        cJSON_AddNumberToObject(row, "examples", examples);
        cJSON_AddNumberToObject(row, "train_seconds", seconds);
        cJSON_AddNumberToObject(row, "eval_mse", mse);
        cJSON_AddNumberToObject(row, "eval_accuracy", accuracy);
        cJSON *eval_labels = cJSON_AddObjectToObject(row, "eval_mse_per_label");
        cJSON *best_labels = cJSON_AddObjectToObject(row, "best_train_mse_per_label");
        for (int label = 1; label <= max_label; label++) {
            char key[8];
            snprintf(key, sizeof(key), "%d", label);
            double v = eval_label_mse(r->eval, label);
            used += isnan(v) ? snprintf(csv + used, cap - used, ",") : snprintf(csv + used, cap - used, ",%.6g", v);
            if (!isnan(v)) cJSON_AddNumberToObject(eval_labels, key, v);
            if (!isnan(r->best_label[label])) cJSON_AddNumberToObject(best_labels, key, r->best_label[label]);
        }
        used += snprintf(csv + used, cap - used, ",%.6g,%ld", r->best_mse, r->best_step);
        for (int label = 1; label <= max_label; label++)
            used += isnan(r->best_label[label]) ? snprintf(csv + used, cap - used, ",")
                                                : snprintf(csv + used, cap - used, ",%.6g", r->best_label[label]);
        used += snprintf(csv + used, cap - used, "\n");
        cJSON_AddNumberToObject(row, "best_train_mse", r->best_mse);
        cJSON_AddNumberToObject(row, "best_step", (double)r->best_step);
        cJSON_AddNumberToObject(row, "train_mse_window", r->window);
        cJSON_AddItemToArray(rows, row);
    }
    char path[PF_PATH_MAX + 32];
    pf_path_join(path, sizeof(path), dir, "sweep.csv");
    int rc = pf_write_file_atomic(path, csv, used);
    free(csv);
    return rc;
}

// Every run's training MSE (mean over its window) against examples seen or training seconds.
static cJSON *curves_figure(RunResult *results, int n, int by_time) {
    cJSON *spec = vl_spec(by_time ? "Training MSE against training time" : "Training MSE against examples seen", 760,
                          360);
    cJSON *values = cJSON_CreateArray();
    for (int i = 0; i < n; i++) {
        const RunResult *r = &results[i];
        long stride = r->log.n > SWEEP_PLOT_POINTS ? (r->log.n + SWEEP_PLOT_POINTS - 1) / SWEEP_PLOT_POINTS : 1;
        for (long k = r->window - 1; k < r->log.n; k++) {
            if ((k - r->window + 1) % stride != 0 && k != r->log.n - 1) continue;
            double m = window_mean(r->log.mse, 1, k, r->window);
            if (!(m > 0)) continue;
            cJSON *row = cJSON_CreateObject();
            cJSON_AddStringToObject(row, "run", r->run->name);
            cJSON_AddNumberToObject(row, "x", by_time ? r->seconds[k] : (double)(r->log.step[k] + 1) * r->cfg.batch_size);
            cJSON_AddNumberToObject(row, "mse", m);
            cJSON_AddItemToArray(values, row);
        }
    }
    cJSON_AddItemToObject(spec, "data", vl_values(values));
    cJSON_AddItemToObject(spec, "mark", vl_mark("line"));
    cJSON *enc = cJSON_AddObjectToObject(spec, "encoding");
    cJSON_AddItemToObject(enc, "x", vl_channel("x", "quantitative", by_time ? "training seconds" : "examples seen"));
    cJSON_AddItemToObject(enc, "y", vl_log_scale(vl_channel("mse", "quantitative", "training MSE (log, window mean)")));
    cJSON_AddItemToObject(enc, "color", vl_channel("run", "nominal", "run"));
    const char *fields[] = {"run", "x", "mse"}, *types[] = {"nominal", "quantitative", "quantitative"};
    cJSON_AddItemToObject(enc, "tooltip", vl_tooltip(fields, types, 3));
    vl_add_zoom(spec);
    return spec;
}

static int write_report(RunResult *results, int n, const SweepSpec *spec, const char *dir) {
    Report *report = report_create("pathformer sweep");
    char text[4096];
    size_t used = snprintf(text, sizeof(text), "%d runs from preset '%s'", n, spec->preset);
    for (int i = 0; i < spec->num_base; i++)
        used += snprintf(text + used, sizeof(text) - used, "%s%s", i ? " " : " with ", spec->base[i]);
    if (spec->budget_examples > 0)
        used += snprintf(text + used, sizeof(text) - used, "; budget %ld examples", spec->budget_examples);
    if (spec->budget_seconds > 0)
        used += snprintf(text + used, sizeof(text) - used, "; budget %.0f s of training", spec->budget_seconds);
    snprintf(text + used, sizeof(text) - used,
             "; each evaluated on %ld fresh examples of its training set. Best training MSE: the lowest mean over a "
             "window of 2%% of the run's steps.",
             spec->eval_examples);
    report_add_text(report, text);
    const char *header[] = {"run", "settings", "examples", "training time", "eval MSE", "eval accuracy",
                            "best training MSE"};
    const char **cells = mallocCheck(sizeof(char *) * 7 * (size_t)n);
    char(*numbers)[5][64] = mallocCheck(sizeof(*numbers) * (size_t)n);
    char(*settings)[SWEEP_MAX_SETTINGS * SWEEP_SETTING_MAX] = mallocCheck(sizeof(*settings) * (size_t)n);
    for (int i = 0; i < n; i++) {
        RunResult *r = &results[i];
        join_settings(settings[i], sizeof(settings[i]), r->run);
        snprintf(numbers[i][0], 64, "%.0f", (double)r->log.n * r->cfg.batch_size);
        snprintf(numbers[i][1], 64, "%.0f s", r->log.n ? r->seconds[r->log.n - 1] : 0.0);
        snprintf(numbers[i][2], 64, "%.4g", report_json_number(r->eval, "mse"));
        snprintf(numbers[i][3], 64, "%.2f%%", 100.0 * report_json_number(r->eval, "accuracy"));
        snprintf(numbers[i][4], 64, "%.4g", r->best_mse);
        const char *row[] = {r->run->name, settings[i], numbers[i][0], numbers[i][1], numbers[i][2], numbers[i][3],
                             numbers[i][4]};
        memcpy(&cells[7 * i], row, sizeof(row));
    }
    report_add_section(report, "Runs");
    report_add_table(report, 7, header, n, cells);
    report_add_section(report, "Curves");
    cJSON *by_examples = curves_figure(results, n, 0), *by_time = curves_figure(results, n, 1);
    int rc = report_add_vegalite(report, "sweep-mse-examples",
                                 "Each run's training MSE (mean over its window) against examples seen. Drag to pan, "
                                 "wheel to zoom; click nothing, hover for values.",
                                 by_examples);
    if (rc == 0)
        rc = report_add_vegalite(report, "sweep-mse-seconds",
                                 "The same against training time (the sum of the steps' times, without evaluation).",
                                 by_time);
    if (rc == 0) rc = report_write(report, dir);
    cJSON_Delete(by_examples);
    cJSON_Delete(by_time);
    report_free(report);
    free(cells);
    free(numbers);
    free(settings);
    return rc;
}

static int write_results(const SweepSpec *spec, const char *dir) {
    RunResult *results = callocCheck((size_t)spec->num_runs, sizeof(RunResult));
    int rc = 0, n = 0;
    for (; n < spec->num_runs && rc == 0; n++) rc = load_result(&results[n], spec, &spec->runs[n], dir);
    cJSON *root = spec_to_json(spec);
    if (rc == 0) rc = write_table(results, n, dir, root);
    if (rc == 0) {
        char path[PF_PATH_MAX + 32];
        pf_path_join(path, sizeof(path), dir, "sweep.json");
        rc = pf_write_json_atomic(path, root, 1);
    }
    cJSON_Delete(root);
    if (rc == 0) {
        if (write_report(results, n, spec, dir) != 0)
            fprintf(stderr, "sweep: report not written: %s\n", pf_last_error());
        else
            fprintf(stderr, "sweep: %s/sweep.csv, %s/report.html\n", dir, dir);
    }
    for (int i = 0; i < n; i++) free_result(&results[i]);
    free(results);
    return rc;
}

// ---------------------------------------------------------------------------------------------

int sweep_run(const SweepSpec *given, const char *dir, int resume) {
    if (strlen(dir) > PF_PATH_MAX - 128) return pf_fail("sweep folder name too long: %s", dir);
    char path[PF_PATH_MAX + 32];
    pf_path_join(path, sizeof(path), dir, "sweep.json");
    SweepSpec *spec = mallocCheck(sizeof(SweepSpec));
    int rc = 0;
    if (resume) {
        cJSON *root = pf_read_json(path);
        if (!root) rc = pf_fail("%s holds no sweep to resume (%s)", dir, pf_last_error());
        if (rc == 0 && spec_from_json(spec, root) != 0) rc = pf_fail("%s: %s", path, pf_last_error());
        cJSON_Delete(root);
    } else if (pf_file_exists(path)) {
        rc = pf_fail("%s already holds a sweep; continue it with --resume or choose another --out", dir);
    } else if (!given) {
        rc = pf_fail("no sweep to run in %s", dir);
    } else {
        *spec = *given;
        for (int i = 0; i < spec->num_runs && rc == 0; i++) {  // every run's settings checked before any work
            RunConfig cfg;
            rc = run_config(&cfg, spec, &spec->runs[i]);
        }
        if (rc == 0 && spec->eval_examples < 1) rc = pf_fail("eval_examples must be positive");
        if (rc == 0) rc = pf_mkdir_p(dir);
        if (rc == 0) {
            cJSON *root = spec_to_json(spec);
            rc = pf_write_json_atomic(path, root, 1);
            cJSON_Delete(root);
        }
    }
    int lock = -1;  // a second sweep on the folder stops at once, naming this one's pid
    if (rc == 0) rc = pf_lock_folder(dir, &lock);
    int all_done = 1;
    Progress progress;  // over the runs this session trains
    long left = 0;
    for (int i = 0; i < spec->num_runs; i++) {
        char path[PF_PATH_MAX + 128];
        snprintf(path, sizeof(path), "%s/runs/%s/eval.json", dir, spec->runs[i].name);
        left += !pf_file_exists(path);
    }
    progress_begin(&progress, "sweep", "runs", left);
    for (int i = 0; i < spec->num_runs && rc == 0; i++) {
        int done;
        char path[PF_PATH_MAX + 128];
        snprintf(path, sizeof(path), "%s/runs/%s/eval.json", dir, spec->runs[i].name);
        int trains = !pf_file_exists(path);
        rc = sweep_one(spec, &spec->runs[i], dir, &done);
        if (rc == 0 && !done) all_done = 0;
        if (rc == 0 && !done) break;  // stopped before its budget (a resume continues)
        if (rc == 0 && trains) progress_line(&progress, 1);
    }
    if (rc == 0 && all_done) rc = write_results(spec, dir);
    pf_unlock_folder(lock);
    free(spec);
    return rc;
}
