#include "experiment/experiment_config.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "common.h"
#include "model.h"
#include "safetensors.h"

const char *const PHASE_NAMES[NUM_PHASES] = {"pretrain", "eval-pretrained", "tune", "eval-tuned", "report"};
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
static const char *const TUNE_KEYS[] = {"batch_size", "lr", "steps", "weight_decay", "beta1", "beta2", "eps", "clip_grad_norm",
                                        "checkpoint_every", NULL};

int experiment_preset(ExperimentConfig *cfg, const char *name) {
    memset(cfg, 0, sizeof(*cfg));
    const Preset *preset = preset_lookup(name);
    if (!preset) return -1;
    preset->pretrain(&cfg->pretrain);
    preset->tune(&cfg->tune);
    snprintf(cfg->tune_optimizer, sizeof(cfg->tune_optimizer), "%s", preset->tune_optimizer);
    cfg->eval_examples = cfg->pretrain.eval_examples;
    snprintf(cfg->preset, sizeof(cfg->preset), "%s", name);
    return 0;
}

const char *experiment_preset_summary(const char *name) {
    const Preset *preset = preset_lookup(name);
    return preset ? preset->summary : "";
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
            return pf_fail("unknown fine-tuning setting '%.*s' (tune.KEY takes batch_size, lr, steps, weight_decay, clip_grad_norm, beta1, "
                           "beta2, eps, checkpoint_every)",
                           (int)key_len, assignment);
        return config_set(&cfg->tune, assignment + 5);
    }
    char key[64];
    snprintf(key, sizeof(key), "%.*s", (int)(key_len < sizeof(key) ? key_len : sizeof(key) - 1), assignment);
    if (!config_has_key(key)) return pf_fail("unknown setting '%s' (see `pathformer keys run`)", key);
    if (strcmp(key, "set") == 0 || strcmp(key, "init_from") == 0 || strcmp(key, "init_optimizer") == 0)
        return pf_fail("run: setting '%s' is not used by run: each phase has its own data set and weights (--from "
                       "CHECKPOINT starts from given weights); it is a setting of train",
                       key);
    return config_set(&cfg->pretrain, assignment);
}

void experiment_print_keys(FILE *out, const ExperimentConfig *cfg, int with_pretrain) {
    if (with_pretrain) config_print_keys(out, &cfg->pretrain);
    config_print_named_keys(out, &cfg->tune, TUNE_KEYS, "tune.");
    fprintf(out, "  %-22s %-22s %s\n", "tune_optimizer", cfg->tune_optimizer,
            "continue (the pre-training Adam goes on), new, or auto (continue when there is a state)");
    fprintf(out, "  %-22s %-22ld %s\n", "eval_examples", cfg->eval_examples, "examples per evaluation set");
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
    } else if (!(evals->valuedouble >= 1 && evals->valuedouble <= (double)(1L << 30)) ||
               evals->valuedouble != floor(evals->valuedouble)) {
        rc = pf_fail("eval_examples: %g is not a count in 1..%ld", evals->valuedouble, 1L << 30);
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
