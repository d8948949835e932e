// Ablations: each attention head's output knocked out (zeroed, or replaced by its mean over the
// set), one at a time, and each layer's feed-forward output likewise; the change in MSE overall
// and per label on a named data set tells which components the answer needs.
#ifndef PATHFORMER_INTERP_ABLATE_H
#define PATHFORMER_INTERP_ABLATE_H

#include <stdint.h>

#include <cjson/cJSON.h>

#include "graph.h"
#include "interp/capture.h"
#include "model.h"

#define ABLATE_MAX_LABEL PF_MAX_VERTICES

typedef struct {
    AblationMode mode;  // ABLATE_NONE: the intact model (row 0)
    int layer, head;    // head -1: the layer's feed-forward
    double sse;
    double label_sse[ABLATE_MAX_LABEL + 1];
} AblationRow;

typedef struct {
    long count;
    long label_count[ABLATE_MAX_LABEL + 1];
    int num_rows;
    AblationRow *rows;  // the intact model, then for each layer, each head and the FFN, each mode
} AblationTable;

// `count` examples of a named set (seed); modes: bit ABLATE_ZERO and/or bit ABLATE_MEAN
// (1 << mode). Means for the mean ablation come from the same examples' real positions.
// 0 or -1 with the error set.
int ablate_run(AblationTable *table, const Model *model, const char *set_name, const DataConfig *cfg,
               uint64_t seed, long count, int modes, int batch);
void ablate_table_free(AblationTable *table);
double ablate_mse(const AblationTable *table, int row);
// MSE over the examples with this label (NaN when there are none).
double ablate_label_mse(const AblationTable *table, int row, int label);
// "L3 head 1", "L3 FFN", "intact"
void ablate_component_name(char *out, size_t size, const AblationRow *row);

// CSV (component, layer, head, mode, mse, delta_mse, then delta per label present), JSON, and
// the figures: the change in MSE per component (bars, one colour per mode) and per component and
// label (heatmap per mode).
int ablate_write_csv(const AblationTable *table, const char *path);
cJSON *ablate_to_json(const AblationTable *table);
cJSON *ablate_bar_spec(const AblationTable *table, const char *title);
cJSON *ablate_label_spec(const AblationTable *table, const char *title);

#endif
