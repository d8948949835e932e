#include "experiment.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "common.h"
#include "eval.h"
#include "adam.h"
#include "model.h"
#include "ops.h"
#include "safetensors.h"
#include "train.h"

const char *const PHASE_NAMES[NUM_PHASES] = {"pretrain", "eval-pretrained", "tune", "eval-tuned", "report"};
const char *const EXPERIMENT_PRESETS[] = {"quick", "blog", "blog-as-written", "tiny", NULL};
const char *const TEST_SETS[NUM_TEST_SETS] = {"onpath-small-target", "onpath-large-target", "any-small",
                                              "any-large-small-target", "any-large-large-target"};

const EvalSpec EVALS[NUM_EVALS] = {
    {"pretrained-pretrain", "pre-trained model on pretrain", PHASE_EVAL_PRETRAINED, "pretrain", 0.001623},
    {"pretrained-tune", "pre-trained model on tune (untuned baseline)", PHASE_EVAL_PRETRAINED, "tune", 0.5531},
    {"tuned-tune", "fine-tuned model on tune", PHASE_EVAL_TUNED, "tune", 0.01472},
    {"tuned-pretrain", "fine-tuned model on pretrain (forgetting)", PHASE_EVAL_TUNED, "pretrain", NAN},
    {"tuned-onpath-small-target", "test: onpath-small-target", PHASE_EVAL_TUNED, "onpath-small-target", 0.1020},
    {"tuned-onpath-large-target", "test: onpath-large-target", PHASE_EVAL_TUNED, "onpath-large-target", 0.1451},
    {"tuned-any-small", "test: any-small", PHASE_EVAL_TUNED, "any-small", 61.44},
    {"tuned-any-large-small-target", "test: any-large-small-target", PHASE_EVAL_TUNED, "any-large-small-target",
     47.06},
    {"tuned-any-large-large-target", "test: any-large-large-target", PHASE_EVAL_TUNED, "any-large-large-target",
     72.87},
};

// Fine-tuning's own keys under "tune."; everything else is shared with pre-training.
static const char *const TUNE_KEYS[] = {"batch_size", "lr", "weight_decay", "beta1", "beta2", "eps",
                                        "checkpoint_every", NULL};

int experiment_preset(ExperimentConfig *cfg, const char *name) {
    memset(cfg, 0, sizeof(*cfg));
    snprintf(cfg->tune_optimizer, sizeof(cfg->tune_optimizer), TUNE_OPTIMIZER_NEW);
    if (strcmp(name, "blog") == 0) {
        // As the authors' notebook ran it (SPEC §4): its fine-tuning loop stepped the pre-training
        // optimizer, so Adam went on with its moments and update count at the schedule's last rate,
        // without weight decay, for 50 steps. From their weights this lands on the published test
        // numbers; the protocol as written does not.
        config_preset(&cfg->pretrain, "blog-pretrain");
        config_preset(&cfg->tune, "blog-tune");
        snprintf(cfg->tune.lr_schedule, sizeof(cfg->tune.lr_schedule), "1e-4@50");
        cfg->tune.weight_decay = 0.0f;
        snprintf(cfg->tune_optimizer, sizeof(cfg->tune_optimizer), TUNE_OPTIMIZER_CONTINUE);
        cfg->eval_examples = 16384;
    } else if (strcmp(name, "blog-as-written") == 0) {
        config_preset(&cfg->pretrain, "blog-pretrain");
        config_preset(&cfg->tune, "blog-tune");
        cfg->eval_examples = 16384;
    } else if (strcmp(name, "quick") == 0) {
        // Found by experiment on the 2-core machine: 2,400 steps of 256 take the published model
        // through the phase changes of labels 1 and 2 (3 and up follow more slowly), from MSE 60 to
        // about 2; fine-tuning at 3e-4 (the blog's 1e-5 barely moves a model this young) takes the
        // untuned MSE on `tune` from about 2 to about 0.015 in 300 steps.
        config_preset(&cfg->pretrain, "quick");
        snprintf(cfg->pretrain.lr_schedule, sizeof(cfg->pretrain.lr_schedule), "3e-4@2000,1e-4@400");
        config_preset(&cfg->tune, "blog-tune");
        cfg->tune.batch_size = 256;
        snprintf(cfg->tune.lr_schedule, sizeof(cfg->tune.lr_schedule), "3e-4@300");
        cfg->tune.checkpoint_every = 100;
        cfg->eval_examples = 8192;
    } else if (strcmp(name, "tiny") == 0) {
        config_preset(&cfg->pretrain, "tiny");
        cfg->pretrain.threads = 1;  // a model this small only waits on a second thread
        config_preset(&cfg->tune, "blog-tune");
        cfg->tune.batch_size = 64;
        snprintf(cfg->tune.lr_schedule, sizeof(cfg->tune.lr_schedule), "1e-3@6");
        cfg->tune.checkpoint_every = 3;
        cfg->eval_examples = 256;
    } else {
        return pf_fail("unknown preset '%s' (known: quick, blog, blog-as-written, tiny)", name);
    }
    snprintf(cfg->preset, sizeof(cfg->preset), "%s", name);
    return 0;
}

const char *experiment_preset_summary(const char *name) {
    if (strcmp(name, "quick") == 0) return "the published model on a CPU budget of minutes (the default)";
    if (strcmp(name, "blog") == 0)
        return "SPEC 4 as the authors' code ran it: 9,600 steps of 2^15, then the pre-training Adam continued "
               "at 1e-4 for 50 fine-tuning steps";
    if (strcmp(name, "blog-as-written") == 0)
        return "SPEC 4 as the blog describes it: 9,600 steps of 2^15, then a new Adam at 1e-5, weight decay 1e-5, "
               "100 fine-tuning steps";
    if (strcmp(name, "tiny") == 0) return "a 2-layer width-16 model for a few steps (tests)";
    return "";
}

static int is_tune_key(const char *name, size_t len) {
    for (int i = 0; TUNE_KEYS[i]; i++)
        if (strlen(TUNE_KEYS[i]) == len && strncmp(TUNE_KEYS[i], name, len) == 0) return 1;
    return 0;
}

int experiment_set(ExperimentConfig *cfg, const char *assignment) {
    const char *eq = strchr(assignment, '=');
    if (!eq || eq == assignment) return pf_fail("bad setting '%s' (expected key=value)", assignment);
    size_t key_len = (size_t)(eq - assignment);
    if (key_len == 13 && strncmp(assignment, "eval_examples", 13) == 0) {
        char *end;
        errno = 0;
        long v = strtol(eq + 1, &end, 10);
        if (end == eq + 1 || *end != '\0' || errno || v < 1 || v > 1L << 30)
            return pf_fail("setting eval_examples: '%s' is not a count in 1..%ld", eq + 1, 1L << 30);
        cfg->eval_examples = v;
        return 0;
    }
    if (key_len == 14 && strncmp(assignment, "tune_optimizer", 14) == 0) {
        const char *v = eq + 1;
        if (strcmp(v, TUNE_OPTIMIZER_CONTINUE) != 0 && strcmp(v, TUNE_OPTIMIZER_NEW) != 0 &&
            strcmp(v, TUNE_OPTIMIZER_AUTO) != 0)
            return pf_fail("setting tune_optimizer: '%s' is not one of continue, new, auto", v);
        snprintf(cfg->tune_optimizer, sizeof(cfg->tune_optimizer), "%s", v);
        return 0;
    }
    if (key_len > 5 && strncmp(assignment, "tune.", 5) == 0) {
        if (!is_tune_key(assignment + 5, key_len - 5))
            return pf_fail("unknown fine-tuning setting '%.*s' (tune.KEY takes batch_size, lr, weight_decay, beta1, "
                           "beta2, eps, checkpoint_every)",
                           (int)key_len, assignment);
        return config_set(&cfg->tune, assignment + 5);
    }
    char key[64];
    snprintf(key, sizeof(key), "%.*s", (int)(key_len < sizeof(key) ? key_len : sizeof(key) - 1), assignment);
    if (!config_has_key(key) || strcmp(key, "set") == 0 || strcmp(key, "init_from") == 0)
        return pf_fail("unknown setting '%.*s' (see `pathformer run --help`)", (int)key_len, assignment);
    return config_set(&cfg->pretrain, assignment);
}

int experiment_finalize(ExperimentConfig *cfg) {
    RunConfig *pre = &cfg->pretrain, *tune = &cfg->tune;
    snprintf(pre->set, sizeof(pre->set), "pretrain");
    snprintf(tune->set, sizeof(tune->set), "tune");
    pre->eval_examples = 0;  // the pipeline evaluates, not train_run
    tune->eval_examples = 0;
    pre->init_from[0] = '\0';
    tune->data = pre->data;
    tune->model = pre->model;
    tune->seed = pre->seed;
    tune->identical_layers = pre->identical_layers;
    tune->threads = pre->threads;
    tune->micro_batch = pre->micro_batch;
    if (config_finalize(pre) != 0) return -1;
    if (config_finalize(tune) != 0) return pf_fail("fine-tuning: %s", pf_last_error());
    if (cfg->eval_examples < 1) return pf_fail("eval_examples must be positive");
    if (strcmp(cfg->tune_optimizer, TUNE_OPTIMIZER_NEW) != 0 &&
        (tune->beta1 != pre->beta1 || tune->beta2 != pre->beta2 || tune->eps != pre->eps))
        return pf_fail("tune_optimizer=%s goes on with the pre-training Adam: tune.beta1, tune.beta2 and tune.eps "
                       "must equal beta1, beta2 and eps (or set tune_optimizer=new)",
                       cfg->tune_optimizer);
    return 0;
}

int experiment_from_checkpoint(ExperimentConfig *cfg, const char *path) {
    if (strlen(path) >= sizeof(cfg->from)) return pf_fail("--from: path too long");
    StFile file;
    if (model_open_checkpoint(&file, path) != 0) return -1;
    int rc = model_config_from_file(&cfg->pretrain.model, &file);
    st_free(&file);
    if (rc != 0) return pf_fail("%s: %s", path, pf_last_error());
    // the data settings follow the vocabulary: its largest vertex is the label of the unreachable
    cfg->pretrain.data.max_v = cfg->pretrain.model.vocab - 2;
    if (cfg->pretrain.data.max_tune_v > cfg->pretrain.data.max_v)
        cfg->pretrain.data.max_tune_v = cfg->pretrain.data.max_v;
    snprintf(cfg->from, sizeof(cfg->from), "%s", path);
    if (strcmp(cfg->tune_optimizer, TUNE_OPTIMIZER_CONTINUE) == 0)
        snprintf(cfg->tune_optimizer, sizeof(cfg->tune_optimizer), TUNE_OPTIMIZER_AUTO);
    return 0;
}

int experiment_tune_optimizer_path(const ExperimentConfig *cfg, const char *run_dir, char *path, size_t size) {
    path[0] = '\0';
    if (strcmp(cfg->tune_optimizer, TUNE_OPTIMIZER_NEW) == 0) return 0;
    char state[PF_PATH_MAX + 64];
    snprintf(state, sizeof(state), "%s/pretrain/optimizer.safetensors", run_dir);
    if (!pf_file_exists(state)) {
        if (strcmp(cfg->tune_optimizer, TUNE_OPTIMIZER_AUTO) == 0) return 0;
        return pf_fail("tune_optimizer=continue: the pre-trained model has no optimizer state (%s is missing); "
                       "tune_optimizer=auto or new fine-tunes with a new Adam instead",
                       state);
    }
    if (strlen(state) >= size) return pf_fail("run folder name too long: %s", run_dir);
    snprintf(path, size, "%s", state);
    return 0;
}

static cJSON *run_config_json(const RunConfig *cfg) {
    char *text = config_to_json(cfg);
    cJSON *json = cJSON_Parse(text);
    free(text);
    return json;
}

char *experiment_to_json(const ExperimentConfig *cfg) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "preset", cfg->preset);
    cJSON_AddNumberToObject(root, "eval_examples", (double)cfg->eval_examples);
    cJSON_AddStringToObject(root, "tune_optimizer", cfg->tune_optimizer);
    cJSON_AddStringToObject(root, "from", cfg->from);
    RunConfig tune = cfg->tune;
    tune.init_from[0] = '\0';  // set by the pipeline to the run folder's own checkpoint
    tune.init_optimizer[0] = '\0';
    cJSON_AddItemToObject(root, "pretrain", run_config_json(&cfg->pretrain));
    cJSON_AddItemToObject(root, "tune", run_config_json(&tune));
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    return text;
}

int experiment_from_json(ExperimentConfig *cfg, const char *text) {
    cJSON *root = cJSON_Parse(text);
    cJSON *preset = cJSON_GetObjectItemCaseSensitive(root, "preset");
    cJSON *evals = cJSON_GetObjectItemCaseSensitive(root, "eval_examples");
    cJSON *pre = cJSON_GetObjectItemCaseSensitive(root, "pretrain");
    cJSON *tune = cJSON_GetObjectItemCaseSensitive(root, "tune");
    int rc = 0;
    if (!cJSON_IsString(preset) || !cJSON_IsNumber(evals) || !cJSON_IsObject(pre) || !cJSON_IsObject(tune)) {
        rc = pf_fail("not an experiment config (preset, eval_examples, pretrain, tune expected)");
    } else if (experiment_preset(cfg, preset->valuestring) == 0) {
        cfg->eval_examples = (long)evals->valuedouble;
        // absent in folders written before these settings, which fine-tuned with a new Adam from
        // weights they trained
        cJSON *optimizer = cJSON_GetObjectItemCaseSensitive(root, "tune_optimizer");
        cJSON *from = cJSON_GetObjectItemCaseSensitive(root, "from");
        char assignment[64];
        snprintf(assignment, sizeof(assignment), "tune_optimizer=%.40s",
                 cJSON_IsString(optimizer) ? optimizer->valuestring : TUNE_OPTIMIZER_NEW);
        rc = experiment_set(cfg, assignment);
        if (rc == 0 && cJSON_IsString(from)) {
            if (strlen(from->valuestring) >= sizeof(cfg->from))
                rc = pf_fail("from: path too long");
            else
                snprintf(cfg->from, sizeof(cfg->from), "%s", from->valuestring);
        }
        char *pre_text = cJSON_Print(pre), *tune_text = cJSON_Print(tune);
        if (rc == 0) rc = config_from_json(&cfg->pretrain, pre_text);
        if (rc == 0) rc = config_from_json(&cfg->tune, tune_text);
        free(pre_text);
        free(tune_text);
    } else {
        rc = -1;
    }
    cJSON_Delete(root);
    return rc;
}

int phase_lookup(const char *name) {
    for (int i = 0; i < NUM_PHASES; i++)
        if (strcmp(name, PHASE_NAMES[i]) == 0) return i;
    return pf_fail("unknown phase '%s' (known: pretrain, eval-pretrained, tune, eval-tuned, report)", name);
}

int experiment_load(ExperimentConfig *cfg, const char *run_dir) {
    char path[PF_PATH_MAX + 32];
    pf_path_join(path, sizeof(path), run_dir, "experiment.json");
    size_t size;
    char *text = pf_read_file(path, &size);
    if (!text) return -1;
    int rc = experiment_from_json(cfg, text);
    free(text);
    if (rc == 0) rc = experiment_finalize(cfg);
    if (rc != 0) return pf_fail("%s: %s", path, pf_last_error());
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Phase state: which phases are finished, and the wall time spent in each (over all sessions).

typedef struct {
    int done[NUM_PHASES];
    double seconds[NUM_PHASES];
} PhaseState;

static int state_load(PhaseState *state, const char *run_dir) {
    memset(state, 0, sizeof(*state));
    char path[PF_PATH_MAX + 32];
    pf_path_join(path, sizeof(path), run_dir, "state.json");
    if (!pf_file_exists(path)) return 0;
    size_t size;
    char *text = pf_read_file(path, &size);
    if (!text) return -1;
    cJSON *root = cJSON_Parse(text);
    free(text);
    cJSON *phases = cJSON_GetObjectItemCaseSensitive(root, "phases");
    if (!cJSON_IsObject(phases)) {
        cJSON_Delete(root);
        return pf_fail("%s: not a phase-state file", path);
    }
    for (int i = 0; i < NUM_PHASES; i++) {
        cJSON *phase = cJSON_GetObjectItemCaseSensitive(phases, PHASE_NAMES[i]);
        cJSON *seconds = cJSON_GetObjectItemCaseSensitive(phase, "seconds");
        state->done[i] = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(phase, "done"));
        state->seconds[i] = cJSON_IsNumber(seconds) ? seconds->valuedouble : 0.0;
    }
    cJSON_Delete(root);
    return 0;
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
    snprintf(path, sizeof(path), "%s/model.safetensors", dir);
    int resume = pf_file_exists(path);
    if (!resume) {
        // a start that died before its first checkpoint: begin again
        snprintf(path, sizeof(path), "%s/config.json", dir);
        if (pf_file_exists(path) && unlink(path) != 0) return pf_fail("cannot remove %s: %s", path, strerror(errno));
        snprintf(path, sizeof(path), "%s/train.csv", dir);
        if (pf_file_exists(path) && unlink(path) != 0) return pf_fail("cannot remove %s: %s", path, strerror(errno));
    }
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
    if (prepare_folder(cfg, run_dir, options) != 0) return -1;
    PhaseState state;
    if (state_load(&state, run_dir) != 0) return -1;
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
