// Run configuration: every setting of data, model, optimizer and loop in one struct, presets,
// `key=value` overrides, and JSON files (the resolved config a run folder keeps).
#ifndef PATHFORMER_CONFIG_H
#define PATHFORMER_CONFIG_H

#include <stdint.h>
#include <stdio.h>

#include "adam.h"
#include "common.h"
#include "graph.h"
#include "model.h"

typedef struct {
    DataConfig data;
    ModelConfig model;       // vocab and seq_len follow from data
    char set[64];            // training data set (pretrain, tune, ...)
    long batch_size;         // examples per optimizer step
    int micro_batch;         // examples per forward/backward pass (gradient accumulation)
    int dedupe;              // 1: each distinct example of a batch runs once, weighted by its copies
    char lr_schedule[256];   // rate@steps,...
    long steps;              // > 0: the run's length (the schedule cut there, or its last rate held); 0: the schedule's
    float beta1, beta2, eps, weight_decay;
    float clip_grad_norm;    // > 0: the gradient's global L2 norm is clipped to this (0 = off)
    uint64_t seed;           // data and initialization
    int identical_layers;    // PyTorch's deep copy: all layers start equal
    int threads;             // 0 = all cores
    long checkpoint_every;   // steps between checkpoints (0 = only at the end)
    char init_from[PF_PATH_MAX];  // start from these weights instead of a fresh init (fine-tuning)
    char init_optimizer[PF_PATH_MAX];  // with init_from: continue this Adam state (moments, update count)
    int eval_examples;       // examples per evaluation set at the end of a run (0 = none)
} RunConfig;

// The presets, one table for train, run and sweep: each names a pre-training (what `train` and
// `sweep` train, and `run`'s first phase) and a fine-tuning (`run`'s, or `train --phase tune`).
typedef struct {
    const char *name;
    const char *summary;         // one line for help texts
    void (*pretrain)(RunConfig *cfg);
    void (*tune)(RunConfig *cfg);
    const char *tune_optimizer;  // how run's fine-tuning gets its Adam: continue or new
} Preset;
extern const Preset PRESETS[];  // ends with a NULL name
#define DEFAULT_PRESET "quick"
// The preset's entry; NULL with the error set when unknown.
const Preset *preset_lookup(const char *name);
// The pre-training config of preset `name`; blog-pretrain is blog's and blog-tune is the fine-tuning
// of blog-as-written (their old names). 0, or -1 with the error set.
int config_preset(RunConfig *cfg, const char *name);
// The fine-tuning config of preset `name` (init_from left to the caller).
int config_preset_tune(RunConfig *cfg, const char *name);
// Prints the presets' table (name, what train trains, what run does after it).
void presets_print(FILE *out);
// Applies "key=value"; 0 or -1 with the error set (unknown key, bad value). lr=X with a plain rate
// is the constant rate X over the run's length (steps, else the schedule's it replaces).
int config_set(RunConfig *cfg, const char *assignment);

// What a setting is for; a command takes the kinds it uses and refuses the others.
enum {
    SETTING_SAMPLER = 1,   // how examples are drawn: gen, eval, train, run, sweep
    SETTING_SHAPE = 2,     // max_v, edges_per_vertex: the token layout (a checkpoint fixes them)
    SETTING_MODEL = 4,     // the model's shape and initialization (a checkpoint fixes them)
    SETTING_TRAINING = 8,  // optimizer, schedule, batch, seed, threads, checkpoints
    SETTING_ALL = 15
};
// config_set for `command`, which uses settings of the given kinds: any other is refused with one
// line naming the commands that use it.
int config_set_for(RunConfig *cfg, const char *assignment, int kinds, const char *command);
// The run's length in steps: steps when set, else the schedule's.
long config_total_steps(const RunConfig *cfg);
// Whether `name` is a setting config_set knows.
int config_has_key(const char *name);
// Derives dependent fields and checks every setting; 0 or -1 with the error set.
int config_finalize(RunConfig *cfg);
// JSON round trip (keys as config_set takes them).
char *config_to_json(const RunConfig *cfg);
int config_from_json(RunConfig *cfg, const char *text);
// Compares a run's saved config with the one it resumes with. Settings of the optimizer and the
// loop (lr, steps, clip_grad_norm, weight_decay, beta1, beta2, eps, checkpoint_every) may change on a
// resume (a diverged run continues from its last checkpoint at a lower rate): 0 when nothing
// differs, 1 when only those do (changes gets "key old -> new; ..."), -1 with the error naming the
// first other setting that differs.
int config_resume_changes(const RunConfig *saved, const RunConfig *now, char *changes, size_t size);
// The settings a run may be resumed with other values of, as none of its bits depends on them
// (test_determinism): the thread count. Copies them from now into saved, so that comparing the two
// compares the rest.
void config_take_free_settings(RunConfig *saved, const RunConfig *now);
// Prints every key with its value and meaning.
void config_print_keys(FILE *out, const RunConfig *cfg);
// Prints the keys of the given kinds (SETTING_*), each name after `prefix` (e.g. "tune.").
void config_print_keys_of(FILE *out, const RunConfig *cfg, int kinds, const char *prefix);
// Prints the keys named (a NULL-terminated list), in that order.
void config_print_named_keys(FILE *out, const RunConfig *cfg, const char *const *names, const char *prefix);

#endif
