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
    int kind;     // SETTING_*: which commands use it
    const char *help;
} ConfigKey;

#define KEY(name, type, field, kind, help)                                                                            \
    {name, type, offsetof(RunConfig, field), sizeof(((RunConfig *)0)->field), kind, help}

static const ConfigKey KEYS[] = {
    KEY("min_v", KEY_INT, data.min_v, SETTING_SAMPLER, "smallest graph"),
    KEY("max_v", KEY_INT, data.max_v, SETTING_SHAPE, "largest graph; the label of unreachable vertices"),
    KEY("max_tune_v", KEY_INT, data.max_tune_v, SETTING_SAMPLER, "largest fine-tuning graph and small target"),
    KEY("edges_per_vertex", KEY_INT, data.edges_per_vertex, SETTING_SHAPE, "candidate edges drawn per vertex"),
    KEY("pretrain_long", KEY_INT, data.pretrain_long, SETTING_SAMPLER,
        "pretrain: distances from here on always accepted"),
    KEY("onpath_short", KEY_INT, data.onpath_short, SETTING_SAMPLER, "tune: distances below this are thinned"),
    KEY("d_model", KEY_INT, model.d_model, SETTING_MODEL, "model width"),
    KEY("n_layers", KEY_INT, model.n_layers, SETTING_MODEL, "encoder layers"),
    KEY("n_heads", KEY_INT, model.n_heads, SETTING_MODEL, "attention heads"),
    KEY("d_ff", KEY_INT, model.d_ff, SETTING_MODEL, "feed-forward width"),
    KEY("set", KEY_STRING, set, SETTING_TRAINING, "training data set"),
    KEY("batch_size", KEY_LONG, batch_size, SETTING_TRAINING, "examples per optimizer step"),
    KEY("micro_batch", KEY_INT, micro_batch, SETTING_TRAINING,
        "examples per forward/backward pass of one worker thread"),
    KEY("dedupe", KEY_INT, dedupe, SETTING_TRAINING,
        "1: repeats within a batch run once, weighted (same loss and gradient)"),
    KEY("lr", KEY_STRING, lr_schedule, SETTING_TRAINING,
        "learning rate: a constant X, or a schedule rate@steps, a..b@steps (linear), a..b@steps:cos, comma-separated"),
    KEY("steps", KEY_LONG, steps, SETTING_TRAINING,
        "the run's length in steps (0: the lr schedule's; longer holds its last rate, shorter cuts it)"),
    KEY("beta1", KEY_FLOAT, beta1, SETTING_TRAINING, "Adam beta1"),
    KEY("beta2", KEY_FLOAT, beta2, SETTING_TRAINING, "Adam beta2"),
    KEY("eps", KEY_FLOAT, eps, SETTING_TRAINING, "Adam epsilon"),
    KEY("weight_decay", KEY_FLOAT, weight_decay, SETTING_TRAINING, "L2 weight decay (PyTorch Adam)"),
    KEY("clip_grad_norm", KEY_FLOAT, clip_grad_norm, SETTING_TRAINING,
        "clip the gradient's global L2 norm to this (0 = off)"),
    KEY("seed", KEY_U64, seed, SETTING_TRAINING, "seed of data and initialization (also --seed S)"),
    KEY("identical_layers", KEY_INT, identical_layers, SETTING_MODEL,
        "1: all layers start equal (PyTorch), 0: independent"),
    KEY("threads", KEY_INT, threads, SETTING_TRAINING, "threads, 0 = all cores (also --threads T)"),
    KEY("checkpoint_every", KEY_LONG, checkpoint_every, SETTING_TRAINING, "steps between checkpoints (0 = at the end)"),
    KEY("init_from", KEY_STRING, init_from, SETTING_TRAINING, "start from these weights (fine-tuning)"),
    KEY("init_optimizer", KEY_STRING, init_optimizer, SETTING_TRAINING,
        "with init_from: continue this Adam state (optimizer.safetensors) instead of a new Adam"),
    KEY("eval_examples", KEY_INT, eval_examples, SETTING_TRAINING, "examples per evaluation set after training"),
};
#define NUM_KEYS ((int)(sizeof(KEYS) / sizeof(KEYS[0])))

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

static void set_schedule(RunConfig *cfg, const char *schedule) {
    snprintf(cfg->lr_schedule, sizeof(cfg->lr_schedule), "%s", schedule);
}

// SPEC §4's pre-training: 9,600 steps of 2^15, 5e-4 then 1e-4.
static void pretrain_blog(RunConfig *cfg) { base_config(cfg); }

// Fine-tuning as the blog describes it: a new Adam at 1e-5, weight decay 1e-5, 100 steps of 2^15.
static void tune_blog_as_written(RunConfig *cfg) {
    base_config(cfg);
    snprintf(cfg->set, sizeof(cfg->set), "tune");
    set_schedule(cfg, "1e-5@100");
    cfg->weight_decay = 1e-5f;
    cfg->checkpoint_every = 10;
}

// As the authors' notebook ran it (SPEC §4): its fine-tuning loop stepped the pre-training
// optimizer, so Adam went on with its moments and update count at the schedule's last rate, without
// weight decay, for 50 steps. From their weights this lands on the published test numbers; the
// protocol as written does not.
static void tune_blog(RunConfig *cfg) {
    tune_blog_as_written(cfg);
    set_schedule(cfg, "1e-4@50");
    cfg->weight_decay = 0.0f;
}

// Found by experiment on the 2-core machine: 2,400 steps of 256 take the published model through
// the phase changes of labels 1 and 2 (3 and up follow more slowly), from MSE 60 to about 2.
static void pretrain_quick(RunConfig *cfg) {
    base_config(cfg);
    cfg->batch_size = 256;
    set_schedule(cfg, "3e-4@2000,1e-4@400");
    cfg->checkpoint_every = 250;
    cfg->eval_examples = 8192;
}

// Fine-tuning at 3e-4 (the blog's 1e-5 barely moves a model this young) takes the untuned MSE on
// `tune` from about 2 to about 0.015 in 300 steps.
static void tune_quick(RunConfig *cfg) {
    tune_blog_as_written(cfg);
    cfg->batch_size = 256;
    set_schedule(cfg, "3e-4@300");
    cfg->checkpoint_every = 100;
}

// Found by `pathformer sweep` and full-length runs at equal examples (README: The recipe search):
// batch 128, a warm-up to 3.5e-4 over 1,000 steps and half a cosine down to 1e-5, Adam's beta2 at
// 0.99, the gradient's norm clipped to 1; 10 M pre-training examples (the blog's: 314 M). Batch 256
// at 5e-4 (the first standard) left seed 3 at 0.047; on that seed's first 3.2 M examples batch 128
// at 3.5e-4 had median training MSE 0.044 at 2.8 M against 0.18 (and batch 256 at 3e-4: 0.31).
static void pretrain_standard(RunConfig *cfg) {
    pretrain_quick(cfg);
    cfg->batch_size = 128;
    set_schedule(cfg, "0..3.5e-4@1000,3.5e-4..1e-5@77000:cos");
    cfg->beta2 = 0.99f;
    cfg->clip_grad_norm = 1.0f;
    cfg->checkpoint_every = 4000;
    cfg->eval_examples = 16384;
}

// Fine-tuning goes on with the pre-training Adam, as the authors' code did, at 1e-4: 400 steps of
// 2,048 took `tune` to 0.0044 where 100 of 8,192 (the same examples) stopped at 0.13.
static void tune_standard(RunConfig *cfg) {
    tune_blog_as_written(cfg);
    cfg->batch_size = 2048;
    set_schedule(cfg, "1e-4@400");
    cfg->weight_decay = 0.0f;
    cfg->beta2 = 0.99f;
    cfg->clip_grad_norm = 1.0f;
    cfg->checkpoint_every = 100;
}

static void pretrain_tiny(RunConfig *cfg) {
    base_config(cfg);
    cfg->model.d_model = 16;
    cfg->model.n_layers = 2;
    cfg->model.d_ff = 32;
    cfg->batch_size = 64;
    cfg->micro_batch = 32;
    set_schedule(cfg, "1e-3@6,5e-4@4");
    cfg->threads = 1;  // a model this small only waits on a second thread
    cfg->checkpoint_every = 4;
    cfg->eval_examples = 256;
}

static void tune_tiny(RunConfig *cfg) {
    tune_blog_as_written(cfg);
    cfg->batch_size = 64;
    set_schedule(cfg, "1e-3@6");
    cfg->checkpoint_every = 3;
}

const Preset PRESETS[] = {
    {"quick", "the published model on a CPU budget of minutes (train's default; make run PRESET=quick)", pretrain_quick,
     tune_quick, "new"},
    {"standard", "the published model with the recipe sweeps found: 10 M examples at batch 128, warm-up to 3.5e-4, "
                 "cosine, beta2 0.99, clipping (make run; about 30 minutes on 2 cores)",
     pretrain_standard, tune_standard, "continue"},
    {"blog", "SPEC 4 as the authors' code ran it (fine-tuning continues the pre-training Adam)", pretrain_blog,
     tune_blog, "continue"},
    {"blog-as-written", "SPEC 4 as the blog describes it (fine-tuning with a new Adam at 1e-5, weight decay 1e-5)",
     pretrain_blog, tune_blog_as_written, "new"},
    {"tiny", "a 2-layer width-16 model for a few steps (tests)", pretrain_tiny, tune_tiny, "new"},
    {NULL, NULL, NULL, NULL, NULL},
};

const Preset *preset_lookup(const char *name) {
    for (int i = 0; PRESETS[i].name; i++)
        if (strcmp(PRESETS[i].name, name) == 0) return &PRESETS[i];
    pf_fail("unknown preset '%s' (known: quick, standard, blog, blog-as-written, tiny)", name);
    return NULL;
}

int config_preset(RunConfig *cfg, const char *name) {
    if (strcmp(name, "blog-pretrain") == 0) name = "blog";
    if (strcmp(name, "blog-tune") == 0) return config_preset_tune(cfg, "blog-as-written");
    const Preset *preset = preset_lookup(name);
    if (!preset) {
        base_config(cfg);
        return -1;
    }
    preset->pretrain(cfg);
    return 0;
}

int config_preset_tune(RunConfig *cfg, const char *name) {
    const Preset *preset = preset_lookup(name);
    if (!preset) {
        base_config(cfg);
        return -1;
    }
    preset->tune(cfg);
    return 0;
}

long config_total_steps(const RunConfig *cfg) {
    if (cfg->steps > 0) return cfg->steps;
    LrSchedule schedule;
    if (lr_schedule_parse(&schedule, cfg->lr_schedule) != 0) return 0;
    return lr_schedule_total_steps(&schedule);
}

// "2,400 steps of 256 at 3e-4@2000,1e-4@400"
static void describe_training(char *out, size_t size, const RunConfig *cfg) {
    snprintf(out, size, "%ld steps of %ld, lr %s%s%s", config_total_steps(cfg), cfg->batch_size, cfg->lr_schedule,
             cfg->weight_decay > 0 ? ", weight decay" : "", cfg->clip_grad_norm > 0 ? ", clipped" : "");
}

void presets_print(FILE *out) {
    fprintf(out, "presets (train and sweep train the pre-training; run pre-trains, fine-tunes and evaluates):\n");
    for (int i = 0; PRESETS[i].name; i++) {
        RunConfig pre, tune;
        PRESETS[i].pretrain(&pre);
        PRESETS[i].tune(&tune);
        char pre_text[320], tune_text[320];
        describe_training(pre_text, sizeof(pre_text), &pre);
        describe_training(tune_text, sizeof(tune_text), &tune);
        fprintf(out, "  %-16s %s\n", PRESETS[i].name, PRESETS[i].summary);
        fprintf(out, "  %-16s   model d%d L%d h%d; pre-training %s\n", "", pre.model.d_model, pre.model.n_layers,
                pre.model.n_heads, pre_text);
        fprintf(out, "  %-16s   fine-tuning %s, %s Adam; evaluations of %d examples\n", "", tune_text,
                strcmp(PRESETS[i].tune_optimizer, "continue") == 0 ? "the pre-training" : "a new", pre.eval_examples);
    }
    fprintf(out, "  (blog-pretrain and blog-tune, train's former names: blog, and blog-as-written --phase tune)\n");
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

// lr=X, a plain rate: the constant X over the run's length (steps, else the schedule it replaces).
static int set_constant_rate(RunConfig *cfg, const char *value) {
    long length = config_total_steps(cfg);
    if (length < 1) return pf_fail("setting lr: a constant rate needs steps=N (the run's length)");
    char schedule[128];
    snprintf(schedule, sizeof(schedule), "%s@%ld", value, length);
    LrSchedule parsed;
    if (strlen(value) > 64 || lr_schedule_parse(&parsed, schedule) != 0)
        return pf_fail("setting lr: '%s' is not a rate", value);
    snprintf(cfg->lr_schedule, sizeof(cfg->lr_schedule), "%s", schedule);
    return 0;
}

int config_set(RunConfig *cfg, const char *assignment) {
    const char *eq = strchr(assignment, '=');
    if (!eq || eq == assignment) return pf_fail("bad setting '%s' (expected key=value)", assignment);
    const ConfigKey *key = find_key(assignment, (size_t)(eq - assignment));
    if (!key)
        return pf_fail("unknown setting '%.*s' (see `pathformer keys`)", (int)(eq - assignment), assignment);
    if (strcmp(key->name, "lr") == 0 && eq[1] && !strpbrk(eq + 1, "@,")) return set_constant_rate(cfg, eq + 1);
    return set_value(cfg, key, eq + 1);
}

static const char *commands_of_kind(int kind) {
    switch (kind) {
    case SETTING_SAMPLER: return "gen, eval, train, run and sweep";
    case SETTING_SHAPE: return "gen, train, run and sweep";
    default: return "train, run and sweep";
    }
}

int config_set_for(RunConfig *cfg, const char *assignment, int kinds, const char *command) {
    const char *eq = strchr(assignment, '=');
    const ConfigKey *key = eq ? find_key(assignment, (size_t)(eq - assignment)) : NULL;
    if (!key && eq && (strncmp(assignment, "tune.", 5) == 0 || strncmp(assignment, "tune_optimizer=", 15) == 0))
        return pf_fail("%s: setting '%.*s' is not used by %s (it is a setting of run's fine-tuning)", command,
                       (int)(eq - assignment), assignment, command);
    if (!key || (key->kind & kinds)) {
        if (config_set(cfg, assignment) == 0) return 0;
        return pf_fail("%s: %s", command, pf_last_error());
    }
    const char *why = "";
    if (key->kind & (SETTING_SHAPE | SETTING_MODEL) && !(kinds & SETTING_SHAPE))
        why = ": the checkpoint fixes it";
    else if (strcmp(key->name, "seed") == 0)
        why = "; give --seed S";
    else if (strcmp(key->name, "threads") == 0)
        why = "; give --threads T";
    return pf_fail("%s: setting '%s' is not used by %s%s (it is a setting of %s)", command, key->name, command, why,
                   commands_of_kind(key->kind));
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
    if (cfg->steps < 0) return pf_fail("steps must be non-negative (0 = the lr schedule's length; got %ld)", cfg->steps);
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
            // the shortest text that reads back to the same float (1e-05, not 9.99999975e-06)
            for (int digits = 6; digits <= 9; digits++) {
                snprintf(buf, sizeof(buf), "%.*g", digits, (double)*(const float *)field);
                if (strtof(buf, NULL) == *(const float *)field) break;
            }
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

void config_print_keys(FILE *out, const RunConfig *cfg) { config_print_keys_of(out, cfg, SETTING_ALL, ""); }

// One key's line: name (after prefix), value as config.json holds it, meaning.
static void print_key(FILE *out, const cJSON *root, const ConfigKey *key, const char *prefix) {
    char *value = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(root, key->name));
    char name[64];
    snprintf(name, sizeof(name), "%s%s", prefix, key->name);
    fprintf(out, "  %-22s %-22s %s\n", name, value, key->help);
    free(value);
}

void config_print_keys_of(FILE *out, const RunConfig *cfg, int kinds, const char *prefix) {
    char *json = config_to_json(cfg);
    cJSON *root = cJSON_Parse(json);
    for (int i = 0; i < NUM_KEYS; i++)
        if (KEYS[i].kind & kinds) print_key(out, root, &KEYS[i], prefix);
    cJSON_Delete(root);
    free(json);
}

void config_print_named_keys(FILE *out, const RunConfig *cfg, const char *const *names, const char *prefix) {
    char *json = config_to_json(cfg);
    cJSON *root = cJSON_Parse(json);
    for (int k = 0; names[k]; k++) {
        const ConfigKey *key = find_key(names[k], strlen(names[k]));
        if (key) print_key(out, root, key, prefix);
    }
    cJSON_Delete(root);
    free(json);
}

void config_take_free_settings(RunConfig *saved, const RunConfig *now) { saved->threads = now->threads; }

int config_resume_changes(const RunConfig *saved, const RunConfig *now, char *changes, size_t size) {
    static const char *const RESUMABLE[] = {"lr", "steps", "clip_grad_norm", "weight_decay", "beta1", "beta2", "eps",
                                            "checkpoint_every", NULL};
    RunConfig old = *saved;
    config_take_free_settings(&old, now);
    char *a_text = config_to_json(&old), *b_text = config_to_json(now);
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
