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

// Names: blog-pretrain, blog-tune (SPEC §4 exactly), quick (CPU minutes), tiny (tests).
int config_preset(RunConfig *cfg, const char *name);
extern const char *const PRESET_NAMES[];
// Applies "key=value"; 0 or -1 with the error set (unknown key, bad value).
int config_set(RunConfig *cfg, const char *assignment);
// Whether `name` is a setting config_set knows.
int config_has_key(const char *name);
// Derives dependent fields and checks every setting; 0 or -1 with the error set.
int config_finalize(RunConfig *cfg);
// JSON round trip (keys as config_set takes them).
char *config_to_json(const RunConfig *cfg);
int config_from_json(RunConfig *cfg, const char *text);
// Compares a run's saved config with the one it resumes with. Settings of the optimizer and the
// loop (lr, clip_grad_norm, weight_decay, beta1, beta2, eps, checkpoint_every) may change on a
// resume (a diverged run continues from its last checkpoint at a lower rate): 0 when nothing
// differs, 1 when only those do (changes gets "key old -> new; ..."), -1 with the error naming the
// first other setting that differs.
int config_resume_changes(const RunConfig *saved, const RunConfig *now, char *changes, size_t size);
// Prints every key with its value and meaning.
void config_print_keys(FILE *out, const RunConfig *cfg);

#endif
