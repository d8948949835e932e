// The experiment's settings and its fixed parts: presets, `key=value` overrides, the phases, the
// evaluations and the test sets, and the experiment.json a run folder keeps. The runner
// (experiment.h) and the report (experiment_report.h) both read them.
#ifndef PATHFORMER_EXPERIMENT_CONFIG_H
#define PATHFORMER_EXPERIMENT_CONFIG_H

#include "config.h"

// How fine-tuning gets its optimizer. The blog's text describes a new Adam; the authors' notebook
// stepped the pre-training Adam on (SPEC §4), and that produced the published numbers.
#define TUNE_OPTIMIZER_CONTINUE "continue"  // the pre-training Adam's moments and update count go on
#define TUNE_OPTIMIZER_NEW "new"            // a fresh Adam
#define TUNE_OPTIMIZER_AUTO "auto"          // continue when the pre-trained checkpoint has its state, else new

typedef struct {
    char preset[32];
    RunConfig pretrain;    // pre-training (its data, model, seed, threads and micro_batch hold for all)
    RunConfig tune;        // fine-tuning; init_from (and init_optimizer) are set by the pipeline
    long eval_examples;    // fresh examples per evaluation set
    char tune_optimizer[16];    // continue, new or auto
    char from[PF_PATH_MAX];     // non-empty: the pre-trained weights come from this checkpoint, not training
} ExperimentConfig;

typedef enum {
    PHASE_PRETRAIN,         // trains, or imports the weights of cfg->from
    PHASE_EVAL_PRETRAINED,  // pre-trained model on pretrain and on tune (untuned baseline)
    PHASE_TUNE,
    PHASE_EVAL_TUNED,       // tuned model on tune, pretrain (forgetting) and the five test sets
    PHASE_REPORT,
    NUM_PHASES
} Phase;

extern const char *const PHASE_NAMES[NUM_PHASES];  // pretrain, eval-pretrained, tune, eval-tuned, report
// The five generalization tests of SPEC §2.
#define NUM_TEST_SETS 5
extern const char *const TEST_SETS[NUM_TEST_SETS];

// The evaluations, in report order: which model (after which phase) on which data set, and the
// blog's number for it (NAN where the blog has none). Results go to eval/NAME.json.
typedef struct {
    const char *name;
    const char *title;
    Phase phase;             // PHASE_EVAL_PRETRAINED or PHASE_EVAL_TUNED
    const char *set;
    double published_mse;
} EvalSpec;
#define NUM_EVALS 9
extern const EvalSpec EVALS[NUM_EVALS];

// The preset's pre-training and fine-tuning from the one table train and sweep share (PRESETS in
// config.h): quick, standard, blog, blog-as-written, tiny.
int experiment_preset(ExperimentConfig *cfg, const char *name);
// One line on what a preset is, for help texts.
const char *experiment_preset_summary(const char *name);
// Overrides: "key=value" sets a pre-training key (data, model, seed, threads and micro_batch hold
// for fine-tuning too), "tune.key=value" one of fine-tuning's own keys (batch_size, lr,
// weight_decay, beta1, beta2, eps, checkpoint_every), "tune_optimizer=continue|new|auto",
// "eval_examples=N" the evaluation size.
int experiment_set(ExperimentConfig *cfg, const char *assignment);
// Takes the pre-trained weights from a checkpoint (`run --from`): sets cfg->from and the model
// shape the file holds; an optimizer.safetensors beside it is the state tune_optimizer continues.
// Under a preset whose fine-tuning continues the optimizer, tune_optimizer becomes auto (the
// stand-in, a new Adam, when the file has no optimizer state). Call before key=value overrides.
int experiment_from_checkpoint(ExperimentConfig *cfg, const char *path);
// The optimizer state fine-tuning continues from run_dir, or "" for a new Adam: decided by
// tune_optimizer and whether run_dir/pretrain/optimizer.safetensors exists. -1 with the error set
// when continue is asked for and there is no state.
int experiment_tune_optimizer_path(const ExperimentConfig *cfg, const char *run_dir, char *path, size_t size);
// Prints run's settings with their values: pre-training's (with_pretrain), fine-tuning's tune.KEY,
// tune_optimizer and eval_examples.
void experiment_print_keys(FILE *out, const ExperimentConfig *cfg, int with_pretrain);
// Derives the fine-tuning config's shared fields and checks everything; 0 or -1 with the error set.
int experiment_finalize(ExperimentConfig *cfg);
char *experiment_to_json(const ExperimentConfig *cfg);
int experiment_from_json(ExperimentConfig *cfg, const char *text);
// Reads a run folder's experiment.json.
int experiment_load(ExperimentConfig *cfg, const char *run_dir);
// Looks a phase name up; -1 with the error set when unknown.
int phase_lookup(const char *name);

#endif
