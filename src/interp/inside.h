// "Inside the model" for an experiment's run folder: the probes of the pre-trained and the
// fine-tuned model side by side (and what fine-tuning changed), each model's ablations, and the
// attention of three example graphs. Written to RUN/inside/ as Vega-Lite specs with a manifest,
// inside.json, that the experiment's report reads (experiment_report.c: any folder's manifest of
// {"title", "text", "figures": [{"name", "file", "caption"}]} becomes a section).
#ifndef PATHFORMER_INTERP_INSIDE_H
#define PATHFORMER_INTERP_INSIDE_H

#include <stdint.h>

typedef struct {
    long probe_count;    // examples for the probes (each model)
    long ablate_count;   // examples for the ablations (each model)
    int graphs;          // example graphs drawn with their attention
    uint64_t seed;
    const char *probe_set, *ablate_set, *graph_set;
} InsideOptions;

InsideOptions inside_options_default(void);  // 4096 / 1024 / 3, seed 1; pretrain, pretrain, onpath-large-target
// Reads RUN/pretrain/model.safetensors and RUN/tune/model.safetensors (the second may be missing:
// then the pre-trained model alone), writes RUN/inside/. 0 or -1 with the error set.
int inside_write(const char *run_dir, const InsideOptions *options);

#endif
