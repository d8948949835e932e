#include "experiment/experiment.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "adam.h"
#include "common.h"
#include "eval.h"
#include "model.h"
#include "ops/ops.h"
#include "safetensors.h"
#include "train.h"
#include "experiment/experiment_report.h"

// ---------------------------------------------------------------------------------------------
// Phase state: which phases are finished, and the wall time spent in each (over all sessions).

typedef struct {
    int done[NUM_PHASES];
    double seconds[NUM_PHASES];
} PhaseState;

int experiment_parse_state(int done[NUM_PHASES], double seconds[NUM_PHASES], const char *text, const char *name) {
    cJSON *root = cJSON_Parse(text);
    cJSON *phases = cJSON_GetObjectItemCaseSensitive(root, "phases");
    if (!cJSON_IsObject(phases)) {
        cJSON_Delete(root);
        return pf_fail("%s: not a phase-state file", name);
    }
    int rc = 0;
    for (int i = 0; i < NUM_PHASES; i++) {
        cJSON *phase = cJSON_GetObjectItemCaseSensitive(phases, PHASE_NAMES[i]);
        cJSON *spent = cJSON_GetObjectItemCaseSensitive(phase, "seconds");
        done[i] = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(phase, "done"));
        seconds[i] = cJSON_IsNumber(spent) ? spent->valuedouble : 0.0;
        if (!(seconds[i] >= 0.0 && seconds[i] < 1e12)) rc = pf_fail("%s: bad seconds of phase %s", name, PHASE_NAMES[i]);
    }
    cJSON_Delete(root);
    return rc;
}

static int state_load(PhaseState *state, const char *run_dir) {
    memset(state, 0, sizeof(*state));
    char path[PF_PATH_MAX + 32];
    pf_path_join(path, sizeof(path), run_dir, "state.json");
    if (!pf_file_exists(path)) return 0;
    size_t size;
    char *text = pf_read_file(path, &size);
    if (!text) return -1;
    int rc = experiment_parse_state(state->done, state->seconds, text, path);
    free(text);
    return rc;
}

static int state_save(const PhaseState *state, const char *run_dir) {
    cJSON *root = cJSON_CreateObject();
    cJSON *phases = cJSON_AddObjectToObject(root, "phases");
    for (int i = 0; i < NUM_PHASES; i++) {
        cJSON *phase = cJSON_AddObjectToObject(phases, PHASE_NAMES[i]);
        cJSON_AddBoolToObject(phase, "done", state->done[i]);
        cJSON_AddNumberToObject(phase, "seconds", state->seconds[i]);
    }
    char path[PF_PATH_MAX + 32];
    pf_path_join(path, sizeof(path), run_dir, "state.json");
    int rc = pf_write_json_atomic(path, root, 1);
    cJSON_Delete(root);
    return rc;
}

// ---------------------------------------------------------------------------------------------
// Phases

// Trains into run_dir/sub, continuing a checkpoint left there. Sets *finished when the training
// ran to its last step (summary.json exists).
static int run_training(const RunConfig *cfg, const char *run_dir, const char *sub, long stop_after, int *finished) {
    char dir[PF_PATH_MAX + 32], path[PF_PATH_MAX + 64];
    pf_path_join(dir, sizeof(dir), run_dir, sub);
    // without a checkpoint, train_run begins again (a start that died before its first one included)
    int resume = pf_file_exists(dir) ? train_has_checkpoint(dir) : 0;
    if (resume < 0) return -1;
    int rc = train_run(cfg, dir, resume, stop_after);
    snprintf(path, sizeof(path), "%s/summary.json", dir);
    *finished = rc == 0 && pf_file_exists(path);
    return rc;
}

// Loads the checkpoint run_dir/sub/model.safetensors for inference.
static int load_model(Model *model, const RunConfig *cfg, const char *run_dir, const char *sub) {
    char path[PF_PATH_MAX + 64];
    snprintf(path, sizeof(path), "%s/%s/model.safetensors", run_dir, sub);
    StFile file;
    if (model_open_checkpoint(&file, path) != 0) return -1;
    ModelConfig saved = cfg->model;
    int rc = model_config_from_file(&saved, &file);
    if (rc == 0 && memcmp(&saved, &cfg->model, sizeof(saved)) != 0)
        rc = pf_fail("%s: the checkpoint's model shape differs from the run's config", path);
    if (rc == 0) {
        model_create(model, &cfg->model, cfg->micro_batch, 0);
        rc = model_load_params(model, &file);
        if (rc != 0) model_free(model);
    }
    st_free(&file);
    return rc;
}

static int run_evaluations(const ExperimentConfig *cfg, const char *run_dir, Phase phase) {
    const char *sub = phase == PHASE_EVAL_PRETRAINED ? "pretrain" : "tune";
    ops_set_threads(cfg->pretrain.threads);
    Model model;
    if (load_model(&model, &cfg->pretrain, run_dir, sub) != 0) return -1;
    char dir[PF_PATH_MAX + 32];
    pf_path_join(dir, sizeof(dir), run_dir, "eval");
    int rc = pf_mkdir_p(dir);
    EvalResult *result = mallocCheck(sizeof(EvalResult));
    for (int i = 0; i < NUM_EVALS && rc == 0; i++) {
        if (EVALS[i].phase != phase) continue;
        double start = pf_now_seconds();
        rc = eval_model(result, &model, EVALS[i].set, &cfg->pretrain.data, cfg->pretrain.seed, cfg->eval_examples);
        if (rc != 0) break;
        fprintf(stderr, "eval %-30s MSE %-10.5g accuracy %.4f (%ld examples, %.1f s)\n", EVALS[i].name,
                eval_mse(result), eval_accuracy(result), result->count, pf_now_seconds() - start);
        char *json = eval_to_json(result);
        char path[PF_PATH_MAX + 128];
        snprintf(path, sizeof(path), "%s/%s.json", dir, EVALS[i].name);
        rc = pf_write_file_atomic(path, json, strlen(json));
        free(json);
    }
    free(result);
    model_free(&model);
    return rc;
}

// The optimizer state that goes with the weights of --from: optimizer.safetensors in their folder.
static void from_optimizer_path(const ExperimentConfig *cfg, char *path, size_t size) {
    const char *slash = strrchr(cfg->from, '/');
    snprintf(path, size, "%.*soptimizer.safetensors", slash ? (int)(slash - cfg->from + 1) : 0, cfg->from);
}

// The pre-training phase of `run --from`: the given checkpoint's weights, and the optimizer state
// saved beside it when there is one, become run_dir/pretrain's checkpoint (re-written under the
// state_dict names, so the run folder holds everything it used).
static int import_pretrained(const ExperimentConfig *cfg, const char *run_dir) {
    char dir[PF_PATH_MAX + 32], path[PF_PATH_MAX + 64], source_opt[PF_PATH_MAX + 64];
    pf_path_join(dir, sizeof(dir), run_dir, "pretrain");
    if (pf_mkdir_p(dir) != 0) return -1;
    StFile file;
    if (model_open_checkpoint(&file, cfg->from) != 0) return -1;
    ModelConfig saved = cfg->pretrain.model;
    int rc = model_config_from_file(&saved, &file);
    if (rc == 0 && memcmp(&saved, &cfg->pretrain.model, sizeof(saved)) != 0)
        rc = pf_fail("%s: its model shape differs from the run's (d_model, n_layers, n_heads, d_ff come from the "
                     "checkpoint under --from)",
                     cfg->from);
    Model model;
    long from_step = -1;
    const char *step_text = rc == 0 ? st_metadata(&file, "step") : NULL;
    if (step_text) from_step = strtol(step_text, NULL, 10);
    if (rc == 0) {
        model_create(&model, &cfg->pretrain.model, 1, 0);
        rc = model_load_params(&model, &file);
        if (rc != 0) rc = pf_fail("%s: %s", cfg->from, pf_last_error());
        char step_value[32];
        snprintf(step_value, sizeof(step_value), "%ld", from_step < 0 ? 0 : from_step);
        const char *keys[] = {"step", "imported_from"}, *values[] = {step_value, cfg->from};
        pf_path_join(path, sizeof(path), dir, "model.safetensors");
        if (rc == 0) rc = model_save(&model, path, 2, keys, values);

        // the optimizer state of the same step, saved beside the weights (as pathformer's run folders hold it)
        from_optimizer_path(cfg, source_opt, sizeof(source_opt));
        if (rc == 0 && pf_file_exists(source_opt)) {
            AdamState adam;
            long opt_step;
            adam_create(&adam, model.num_parameters);
            rc = adam_load(&adam, source_opt, &opt_step);
            if (rc == 0 && from_step >= 0 && opt_step != from_step)
                rc = pf_fail("%s is at step %ld but %s at step %ld: not the optimizer of these weights", source_opt,
                             opt_step, cfg->from, from_step);
            pf_path_join(path, sizeof(path), dir, "optimizer.safetensors");
            const char *opt_keys[] = {"imported_from"}, *opt_values[] = {source_opt};
            if (rc == 0) rc = adam_save(&adam, path, opt_step, 1, opt_keys, opt_values);
            if (rc == 0)
                fprintf(stderr, "pre-trained weights from %s, with its optimizer state (%ld Adam updates)\n", cfg->from,
                        adam.step);
            adam_free(&adam);
        } else if (rc == 0) {
            fprintf(stderr, "pre-trained weights from %s (no optimizer state beside it)\n", cfg->from);
        }
        model_free(&model);
    }
    st_free(&file);
    return rc;
}

// Runs one phase; sets *finished when it completed (a training phase may stop early as asked).
static int run_phase(const ExperimentConfig *cfg, const char *run_dir, Phase phase, long stop_after, int *finished) {
    *finished = 1;
    switch (phase) {
    case PHASE_PRETRAIN:
        if (cfg->from[0]) return import_pretrained(cfg, run_dir);
        return run_training(&cfg->pretrain, run_dir, "pretrain", stop_after, finished);
    case PHASE_TUNE: {
        RunConfig tune = cfg->tune;
        int n = snprintf(tune.init_from, sizeof(tune.init_from), "%s/pretrain/model.safetensors", run_dir);
        if (n < 0 || (size_t)n >= sizeof(tune.init_from)) return pf_fail("run folder name too long: %s", run_dir);
        if (experiment_tune_optimizer_path(cfg, run_dir, tune.init_optimizer, sizeof(tune.init_optimizer)) != 0)
            return -1;
        if (!tune.init_optimizer[0] && strcmp(cfg->tune_optimizer, TUNE_OPTIMIZER_AUTO) == 0)
            fprintf(stderr, "fine-tuning with a new Adam: the pre-trained model has no optimizer state to continue "
                            "(the stand-in for tune_optimizer=continue)\n");
        return run_training(&tune, run_dir, "tune", stop_after, finished);
    }
    case PHASE_EVAL_PRETRAINED:
    case PHASE_EVAL_TUNED: return run_evaluations(cfg, run_dir, phase);
    case PHASE_REPORT: return experiment_write_report(cfg, run_dir);
    case NUM_PHASES: break;
    }
    return pf_fail("unknown phase %d", (int)phase);
}

// Creates or checks the run folder's experiment.json.
static int prepare_folder(const ExperimentConfig *cfg, const char *run_dir, const ExperimentOptions *options) {
    if (pf_mkdir_p(run_dir) != 0) return -1;
    char path[PF_PATH_MAX + 32];
    pf_path_join(path, sizeof(path), run_dir, "experiment.json");
    char *json = experiment_to_json(cfg);
    int rc = 0;
    if (pf_file_exists(path)) {
        ExperimentConfig saved;
        if (!options->resume && options->only_phase < 0) {
            rc = pf_fail("%s already holds a run; continue it with --resume or choose another --out", run_dir);
        } else if ((rc = experiment_load(&saved, run_dir)) == 0) {
            config_take_free_settings(&saved.pretrain, &cfg->pretrain);
            config_take_free_settings(&saved.tune, &cfg->tune);
            char *saved_json = experiment_to_json(&saved);
            if (strcmp(saved_json, json) != 0)
                rc = pf_fail("%s holds a run with a different config; resume it without overrides", run_dir);
            free(saved_json);
        }
    } else if (options->resume) {
        rc = pf_fail("%s holds no run to resume (no experiment.json)", run_dir);
    } else {
        rc = pf_write_file_atomic(path, json, strlen(json));
    }
    free(json);
    return rc;
}

static long schedule_examples(const RunConfig *cfg) {
    return config_total_steps(cfg) * cfg->batch_size;
}

static void format_minutes(char *out, size_t size, double seconds) {
    if (seconds >= 3600)
        snprintf(out, size, "%.1f h", seconds / 3600);
    else if (seconds >= 120)
        snprintf(out, size, "%.0f min", seconds / 60);
    else
        snprintf(out, size, "%.0f s", seconds);
}

// Before a fresh run: what it will do and, from a few steps measured on this machine, how long.
static void print_estimate(const ExperimentConfig *cfg) {
    long pre = cfg->from[0] ? 0 : schedule_examples(&cfg->pretrain), tune = schedule_examples(&cfg->tune);
    double pre_rate = pre ? train_measure_rate(&cfg->pretrain) : 0.0, tune_rate = train_measure_rate(&cfg->tune);
    if ((pre && !(pre_rate > 0)) || !(tune_rate > 0)) return;
    // inference runs about 3.5x the training rate (README: Benchmarks)
    double pre_s = pre ? pre / pre_rate : 0.0, tune_s = tune / tune_rate, eval_s = NUM_EVALS * cfg->eval_examples / (3.5 * tune_rate);
    char a[32], b[32], c[32], total[32];
    format_minutes(a, sizeof(a), pre_s);
    format_minutes(b, sizeof(b), tune_s);
    format_minutes(c, sizeof(c), eval_s);
    format_minutes(total, sizeof(total), pre_s + tune_s + eval_s);
    fprintf(stderr, "estimate on this machine: pre-training %s (%ld examples at ~%.0f/s), fine-tuning %s (%ld at ~%.0f/s), "
            "evaluations %s; total about %s\n",
            pre ? a : "none", pre, pre_rate, b, tune, tune_rate, c, total);
}

static int run_phases(const ExperimentConfig *cfg, const char *run_dir, const ExperimentOptions *options);

int experiment_run(const ExperimentConfig *cfg, const char *run_dir, const ExperimentOptions *options) {
    if (strlen(run_dir) > PF_PATH_MAX - 64) return pf_fail("run folder name too long: %s", run_dir);
    if (cfg->from[0] && strcmp(cfg->tune_optimizer, TUNE_OPTIMIZER_CONTINUE) == 0) {
        char path[PF_PATH_MAX + 64];
        from_optimizer_path(cfg, path, sizeof(path));
        if (!pf_file_exists(path))
            return pf_fail("tune_optimizer=continue: %s has no optimizer state beside it (%s); tune_optimizer=auto or "
                           "new fine-tunes with a new Adam instead",
                           cfg->from, path);
    }
    // refused before anything is written: a resume or a later phase of a folder that holds no run
    char path[PF_PATH_MAX + 32];
    pf_path_join(path, sizeof(path), run_dir, "experiment.json");
    if (!pf_file_exists(path)) {
        if (options->resume) return pf_fail("%s holds no run to resume (no experiment.json)", run_dir);
        if (options->only_phase > PHASE_PRETRAIN)
            return pf_fail("%s holds no run: phase '%s' needs phase 'pretrain' finished first", run_dir,
                           PHASE_NAMES[options->only_phase]);
    }
    int lock = -1;
    if (pf_mkdir_p(run_dir) != 0 || pf_lock_folder(run_dir, &lock) != 0) return -1;
    int rc = run_phases(cfg, run_dir, options);
    pf_unlock_folder(lock);
    return rc;
}

// experiment_run's work, with the folder locked.
static int run_phases(const ExperimentConfig *cfg, const char *run_dir, const ExperimentOptions *options) {
    if (prepare_folder(cfg, run_dir, options) != 0) return -1;
    PhaseState state;
    if (state_load(&state, run_dir) != 0) return -1;
    int fresh = options->only_phase < 0;
    for (int phase = 0; phase < NUM_PHASES; phase++) fresh = fresh && !state.done[phase];
    if (fresh) print_estimate(cfg);
    for (int phase = 0; phase < NUM_PHASES; phase++) {
        if (options->only_phase >= 0 && phase != options->only_phase) {
            if (phase < options->only_phase && !state.done[phase])
                return pf_fail("phase '%s' needs phase '%s' finished first", PHASE_NAMES[options->only_phase],
                               PHASE_NAMES[phase]);
            continue;
        }
        if (state.done[phase] && options->only_phase < 0) {
            fprintf(stderr, "phase %s: finished before, skipped\n", PHASE_NAMES[phase]);
            continue;
        }
        if (state.done[phase] && (phase == PHASE_PRETRAIN || phase == PHASE_TUNE))
            return pf_fail("phase '%s' is finished in %s (its checkpoint stays as it is)", PHASE_NAMES[phase], run_dir);
        fprintf(stderr, "phase %s\n", PHASE_NAMES[phase]);
        double start = pf_now_seconds();
        int finished;
        int rc = run_phase(cfg, run_dir, (Phase)phase, options->stop_after, &finished);
        state.seconds[phase] += pf_now_seconds() - start;
        state.done[phase] = rc == 0 && finished;
        if (state_save(&state, run_dir) != 0) return -1;
        if (rc != 0) return rc;
        if (!finished) return 0;  // stopped as asked; --resume continues
    }
    if (options->only_phase < 0 || options->only_phase == PHASE_REPORT)
        fprintf(stderr, "report: %s/report.html\n", run_dir);
    return 0;
}
