#include "config.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "common.h"

typedef enum { KEY_INT, KEY_LONG, KEY_FLOAT, KEY_U64, KEY_STRING } KeyType;

typedef struct {
    const char *name;
    KeyType type;
    size_t offset;
    size_t size;  // capacity for strings
    const char *help;
} ConfigKey;

#define KEY(name, type, field, help) {name, type, offsetof(RunConfig, field), sizeof(((RunConfig *)0)->field), help}

static const ConfigKey KEYS[] = {
    KEY("min_v", KEY_INT, data.min_v, "smallest graph"),
    KEY("max_v", KEY_INT, data.max_v, "largest graph; the label of unreachable vertices"),
    KEY("max_tune_v", KEY_INT, data.max_tune_v, "largest fine-tuning graph and small target"),
    KEY("edges_per_vertex", KEY_INT, data.edges_per_vertex, "candidate edges drawn per vertex"),
    KEY("pretrain_long", KEY_INT, data.pretrain_long, "pretrain: distances from here on always accepted"),
    KEY("onpath_short", KEY_INT, data.onpath_short, "tune: distances below this are thinned"),
    KEY("d_model", KEY_INT, model.d_model, "model width"),
    KEY("n_layers", KEY_INT, model.n_layers, "encoder layers"),
    KEY("n_heads", KEY_INT, model.n_heads, "attention heads"),
    KEY("d_ff", KEY_INT, model.d_ff, "feed-forward width"),
    KEY("set", KEY_STRING, set, "training data set"),
    KEY("batch_size", KEY_LONG, batch_size, "examples per optimizer step"),
    KEY("micro_batch", KEY_INT, micro_batch, "examples per forward/backward pass of one worker thread"),
    KEY("dedupe", KEY_INT, dedupe, "1: repeats within a batch run once, weighted (same loss and gradient)"),
    KEY("lr", KEY_STRING, lr_schedule,
        "learning-rate schedule, sets the run's length: rate@steps, a..b@steps (linear), a..b@steps:cos"),
    KEY("beta1", KEY_FLOAT, beta1, "Adam beta1"),
    KEY("beta2", KEY_FLOAT, beta2, "Adam beta2"),
    KEY("eps", KEY_FLOAT, eps, "Adam epsilon"),
    KEY("weight_decay", KEY_FLOAT, weight_decay, "L2 weight decay (PyTorch Adam)"),
    KEY("clip_grad_norm", KEY_FLOAT, clip_grad_norm, "clip the gradient's global L2 norm to this (0 = off)"),
    KEY("seed", KEY_U64, seed, "seed of data and initialization"),
    KEY("identical_layers", KEY_INT, identical_layers, "1: all layers start equal (PyTorch), 0: independent"),
    KEY("threads", KEY_INT, threads, "threads (0 = all cores)"),
    KEY("checkpoint_every", KEY_LONG, checkpoint_every, "steps between checkpoints (0 = at the end)"),
    KEY("init_from", KEY_STRING, init_from, "start from these weights (fine-tuning)"),
    KEY("init_optimizer", KEY_STRING, init_optimizer,
        "with init_from: continue this Adam state (optimizer.safetensors) instead of a new Adam"),
    KEY("eval_examples", KEY_INT, eval_examples, "examples per evaluation set after training"),
};
#define NUM_KEYS ((int)(sizeof(KEYS) / sizeof(KEYS[0])))

const char *const PRESET_NAMES[] = {"quick", "blog-pretrain", "blog-tune", "tiny", NULL};

static void base_config(RunConfig *cfg) {
    memset(cfg, 0, sizeof(*cfg));
    cfg->data = data_config_default();
    cfg->model = model_config_default();
    snprintf(cfg->set, sizeof(cfg->set), "pretrain");
    cfg->batch_size = 32768;
    cfg->micro_batch = 64;  // per worker thread: small enough to stay in cache (fastest measured)
    snprintf(cfg->lr_schedule, sizeof(cfg->lr_schedule), "5e-4@6400,1e-4@3200");
    AdamConfig adam = adam_config_default();
    cfg->beta1 = adam.beta1;
    cfg->beta2 = adam.beta2;
    cfg->eps = adam.eps;
    cfg->seed = 1;
    cfg->identical_layers = 1;
    cfg->dedupe = 1;
    cfg->checkpoint_every = 100;
    cfg->eval_examples = 16384;
}

int config_preset(RunConfig *cfg, const char *name) {
    base_config(cfg);
    if (strcmp(name, "blog-pretrain") == 0) return 0;
    if (strcmp(name, "blog-tune") == 0) {
        snprintf(cfg->set, sizeof(cfg->set), "tune");
        snprintf(cfg->lr_schedule, sizeof(cfg->lr_schedule), "1e-5@100");
        cfg->weight_decay = 1e-5f;
        cfg->checkpoint_every = 10;
        return 0;
    }
    if (strcmp(name, "quick") == 0) {
        // The published model on a CPU budget of a few minutes: small batches and a rate at which
        // the per-label phase changes (label 1, then 2, then 3) show within 1,000 steps.
        cfg->batch_size = 256;
        snprintf(cfg->lr_schedule, sizeof(cfg->lr_schedule), "3e-4@800,1e-4@200");
        cfg->checkpoint_every = 250;
        cfg->eval_examples = 4096;
        return 0;
    }
    if (strcmp(name, "tiny") == 0) {
        cfg->model.d_model = 16;
        cfg->model.n_layers = 2;
        cfg->model.d_ff = 32;
        cfg->batch_size = 64;
        cfg->micro_batch = 32;
        snprintf(cfg->lr_schedule, sizeof(cfg->lr_schedule), "1e-3@6,5e-4@4");
        cfg->checkpoint_every = 4;
        cfg->eval_examples = 256;
        return 0;
    }
    return pf_fail("unknown preset '%s' (known: quick, blog-pretrain, blog-tune, tiny)", name);
}

static const ConfigKey *find_key(const char *name, size_t len) {
    for (int i = 0; i < NUM_KEYS; i++)
        if (strlen(KEYS[i].name) == len && strncmp(KEYS[i].name, name, len) == 0) return &KEYS[i];
    return NULL;
}

int config_has_key(const char *name) { return find_key(name, strlen(name)) != NULL; }

static int set_value(RunConfig *cfg, const ConfigKey *key, const char *value) {
    char *field = (char *)cfg + key->offset;
    char *end;
    errno = 0;
    switch (key->type) {
    case KEY_INT:
    case KEY_LONG: {
        long v = strtol(value, &end, 10);
        if (end == value || *end != '\0' || errno || (key->type == KEY_INT && (v < INT_MIN || v > INT_MAX)))
            return pf_fail("setting %s: '%s' is not an integer", key->name, value);
        if (key->type == KEY_INT)
            *(int *)field = (int)v;
        else
            *(long *)field = v;
        return 0;
    }
    case KEY_U64: {
        if (value[0] == '-') return pf_fail("setting %s: '%s' is not a non-negative integer", key->name, value);
        unsigned long long v = strtoull(value, &end, 10);
        if (end == value || *end != '\0' || errno)
            return pf_fail("setting %s: '%s' is not a non-negative integer", key->name, value);
        *(uint64_t *)field = v;
        return 0;
    }
    case KEY_FLOAT: {
        double v = strtod(value, &end);
        if (end == value || *end != '\0' || !isfinite(v))
            return pf_fail("setting %s: '%s' is not a number", key->name, value);
        *(float *)field = (float)v;
        return 0;
    }
    case KEY_STRING:
        if (strlen(value) >= key->size) return pf_fail("setting %s: value too long", key->name);
        snprintf(field, key->size, "%s", value);
        return 0;
    }
    return pf_fail("setting %s: unknown type", key->name);
}

int config_set(RunConfig *cfg, const char *assignment) {
    const char *eq = strchr(assignment, '=');
    if (!eq || eq == assignment) return pf_fail("bad setting '%s' (expected key=value)", assignment);
    const ConfigKey *key = find_key(assignment, (size_t)(eq - assignment));
    if (!key)
        return pf_fail("unknown setting '%.*s' (see `pathformer train --help`)", (int)(eq - assignment), assignment);
    return set_value(cfg, key, eq + 1);
}

int config_finalize(RunConfig *cfg) {
    if (data_config_validate(&cfg->data) != 0) return -1;
    cfg->model.vocab = data_config_vocab(&cfg->data);
    cfg->model.seq_len = data_config_seq_len(&cfg->data);
    if (model_config_validate(&cfg->model) != 0) return -1;
    DataSet set;
    if (dataset_lookup(&set, cfg->set, &cfg->data) != 0) return -1;
    if (cfg->batch_size < 1) return pf_fail("batch_size must be positive (got %ld)", cfg->batch_size);
    if (cfg->micro_batch < 1 || cfg->micro_batch > 1 << 20)
        return pf_fail("micro_batch must be in 1..1048576 (got %d)", cfg->micro_batch);
    if (cfg->micro_batch > cfg->batch_size) cfg->micro_batch = (int)cfg->batch_size;
    LrSchedule schedule;
    if (lr_schedule_parse(&schedule, cfg->lr_schedule) != 0) return -1;
    if (!(cfg->beta1 >= 0.0f && cfg->beta1 < 1.0f)) return pf_fail("beta1 must be in [0, 1)");
    if (!(cfg->beta2 >= 0.0f && cfg->beta2 < 1.0f)) return pf_fail("beta2 must be in [0, 1)");
    if (!(cfg->eps > 0.0f)) return pf_fail("eps must be positive");
    if (!(cfg->weight_decay >= 0.0f)) return pf_fail("weight_decay must be non-negative");
    if (!(cfg->clip_grad_norm >= 0.0f)) return pf_fail("clip_grad_norm must be non-negative (0 = off)");
    if (cfg->identical_layers != 0 && cfg->identical_layers != 1) return pf_fail("identical_layers must be 0 or 1");
    if (cfg->dedupe != 0 && cfg->dedupe != 1) return pf_fail("dedupe must be 0 or 1 (got %d)", cfg->dedupe);
    if (cfg->threads < 0 || cfg->threads > 1024) return pf_fail("threads must be in 0..1024");
    if (cfg->checkpoint_every < 0) return pf_fail("checkpoint_every must be non-negative");
    if (cfg->eval_examples < 0) return pf_fail("eval_examples must be non-negative");
    if (cfg->init_optimizer[0] && !cfg->init_from[0])
        return pf_fail("init_optimizer continues an optimizer from a checkpoint: it needs init_from too");
    return 0;
}

char *config_to_json(const RunConfig *cfg) {
    cJSON *root = cJSON_CreateObject();
    for (int i = 0; i < NUM_KEYS; i++) {
        const char *field = (const char *)cfg + KEYS[i].offset;
        char buf[64];
        switch (KEYS[i].type) {
        case KEY_INT: cJSON_AddNumberToObject(root, KEYS[i].name, *(const int *)field); break;
        case KEY_LONG: cJSON_AddNumberToObject(root, KEYS[i].name, (double)*(const long *)field); break;
        case KEY_FLOAT:
            // the shortest text that reads back to the same float
            snprintf(buf, sizeof(buf), "%.9g", (double)*(const float *)field);
            cJSON_AddItemToObject(root, KEYS[i].name, cJSON_CreateRaw(buf));
            break;
        case KEY_U64:
            // a string: doubles cannot hold every 64-bit seed
            snprintf(buf, sizeof(buf), "%llu", (unsigned long long)*(const uint64_t *)field);
            cJSON_AddStringToObject(root, KEYS[i].name, buf);
            break;
        case KEY_STRING: cJSON_AddStringToObject(root, KEYS[i].name, field); break;
        }
    }
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    return text;
}

int config_from_json(RunConfig *cfg, const char *text) {
    cJSON *root = cJSON_Parse(text);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return pf_fail("config is not a JSON object");
    }
    int rc = 0;
    for (cJSON *item = root->child; item && rc == 0; item = item->next) {
        const ConfigKey *key = find_key(item->string, strlen(item->string));
        if (!key) {
            rc = pf_fail("unknown setting '%s' in config", item->string);
            break;
        }
        char buf[PF_PATH_MAX];
        if (cJSON_IsString(item)) {
            snprintf(buf, sizeof(buf), "%s", item->valuestring);
        } else if (cJSON_IsNumber(item)) {
            if (key->type == KEY_INT || key->type == KEY_LONG || key->type == KEY_U64) {
                if (item->valuedouble != floor(item->valuedouble)) {
                    rc = pf_fail("setting %s: %g is not an integer", key->name, item->valuedouble);
                    break;
                }
                snprintf(buf, sizeof(buf), "%.0f", item->valuedouble);
            } else {
                snprintf(buf, sizeof(buf), "%.17g", item->valuedouble);
            }
        } else {
            rc = pf_fail("setting %s: value must be a number or a string", key->name);
            break;
        }
        rc = set_value(cfg, key, buf);
    }
    cJSON_Delete(root);
    return rc;
}

void config_print_keys(FILE *out, const RunConfig *cfg) {
    char *json = config_to_json(cfg);
    cJSON *root = cJSON_Parse(json);
    for (int i = 0; i < NUM_KEYS; i++) {
        cJSON *item = cJSON_GetObjectItemCaseSensitive(root, KEYS[i].name);
        char *value = cJSON_PrintUnformatted(item);
        fprintf(out, "  %-18s %-22s %s\n", KEYS[i].name, value, KEYS[i].help);
        free(value);
    }
    cJSON_Delete(root);
    free(json);
}

int config_resume_changes(const RunConfig *saved, const RunConfig *now, char *changes, size_t size) {
    static const char *const RESUMABLE[] = {"lr", "clip_grad_norm", "weight_decay", "beta1", "beta2", "eps",
                                            "checkpoint_every", NULL};
    char *a_text = config_to_json(saved), *b_text = config_to_json(now);
    cJSON *a = cJSON_Parse(a_text), *b = cJSON_Parse(b_text);
    free(a_text);
    free(b_text);
    int rc = 0;
    size_t used = 0;
    changes[0] = '\0';
    for (int i = 0; i < NUM_KEYS && rc >= 0; i++) {
        char *va = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(a, KEYS[i].name));
        char *vb = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(b, KEYS[i].name));
        if (va && vb && strcmp(va, vb) != 0) {
            int resumable = 0;
            for (int k = 0; RESUMABLE[k]; k++) resumable |= strcmp(RESUMABLE[k], KEYS[i].name) == 0;
            if (!resumable) {
                rc = pf_fail("setting %s differs from the run's (%s, not %s): it would change the data or the model",
                             KEYS[i].name, va, vb);
            } else {
                rc = 1;
                if (used < size)
                    used += snprintf(changes + used, size - used, "%s%s %s -> %s", used ? "; " : "", KEYS[i].name, va,
                                     vb);
            }
        }
        free(va);
        free(vb);
    }
    cJSON_Delete(a);
    cJSON_Delete(b);
    return rc;
}
