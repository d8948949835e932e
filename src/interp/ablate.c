// ablate.h: every component knocked out in turn over batches of the capture forward. Components run
// from the last layer down, so each partial forward starts from the intact states before its layer.
#include "interp/ablate.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"
#include "common.h"

static const char *MODE_NAMES[] = {"none", "zero", "mean"};

static void accumulate(AblationRow *row, const float *pred, const float *labels, int B) {
    for (int b = 0; b < B; b++) {
        double err = (double)pred[b] - labels[b];
        row->sse += err * err;
        row->label_sse[(int)labels[b]] += err * err;
    }
}

int ablate_run(AblationTable *t, const Model *model, const char *set_name, const DataConfig *cfg, uint64_t seed,
               long count, int modes, int batch) {
    memset(t, 0, sizeof(*t));
    DataSet set;
    if (dataset_lookup(&set, set_name, cfg) != 0) return -1;
    if (count < 1) return pf_fail("ablate: at least one example is needed");
    if (!(modes & (1 << ABLATE_ZERO | 1 << ABLATE_MEAN))) return pf_fail("ablate: no ablation mode chosen");
    if (cfg->max_v > ABLATE_MAX_LABEL) return pf_fail("ablate: labels above %d are not supported", ABLATE_MAX_LABEL);
    const ModelConfig *mc = &model->config;
    int L = mc->n_layers, NH = mc->n_heads;
    // rows: intact, then layer by layer (last first), heads then FFN, each chosen mode
    int per_layer = 0;
    for (int m = ABLATE_ZERO; m <= ABLATE_MEAN; m++) per_layer += (modes >> m & 1) * (NH + 1);
    t->num_rows = 1 + L * per_layer;
    t->rows = callocCheck((size_t)t->num_rows, sizeof(AblationRow));
    int r = 1;
    for (int l = L - 1; l >= 0; l--)
        for (int c = 0; c <= NH; c++)
            for (int m = ABLATE_ZERO; m <= ABLATE_MEAN; m++) {
                if (!(modes >> m & 1)) continue;
                t->rows[r].mode = (AblationMode)m;
                t->rows[r].layer = l;
                t->rows[r].head = c < NH ? c : -1;
                r++;
            }
    t->count = count;

    Capture cap;
    capture_create(&cap, mc, batch);
    Batch b;
    batch_alloc(&b, batch, mc->seq_len);
    // pass 1: the intact model, and the means of every component over the set's real positions
    capture_reset_means(&cap);
    for (long first = 0; first < count; first += batch) {
        int B = (int)(count - first < batch ? count - first : batch);
        b.B = B;
        batch_fill(&b, &set, cfg, seed, 0, (uint64_t)first);
        capture_forward(&cap, model, b.tokens, B, NULL, 0, 1);
        accumulate(&t->rows[0], cap.pred, b.labels, B);
        for (int i = 0; i < B; i++) t->label_count[(int)b.labels[i]]++;
    }
    if (capture_finish_means(&cap) != 0) return -1;
    // pass 2: each component knocked out, from its own layer on
    for (long first = 0; first < count; first += batch) {
        int B = (int)(count - first < batch ? count - first : batch);
        b.B = B;
        batch_fill(&b, &set, cfg, seed, 0, (uint64_t)first);
        capture_forward(&cap, model, b.tokens, B, NULL, 0, 0);
        for (r = 1; r < t->num_rows; r++) {
            AblationRow *row = &t->rows[r];
            Ablation a = {row->mode, row->layer, row->head};
            capture_forward(&cap, model, b.tokens, B, &a, row->layer, 0);
            accumulate(row, cap.pred, b.labels, B);
        }
    }
    batch_free(&b);
    capture_free(&cap);
    return 0;
}

void ablate_table_free(AblationTable *t) {
    free(t->rows);
    memset(t, 0, sizeof(*t));
}

double ablate_mse(const AblationTable *t, int row) { return t->rows[row].sse / t->count; }

double ablate_label_mse(const AblationTable *t, int row, int label) {
    return t->label_count[label] ? t->rows[row].label_sse[label] / t->label_count[label] : NAN;
}

void ablate_component_name(char *out, size_t size, const AblationRow *row) {
    if (row->mode == ABLATE_NONE)
        snprintf(out, size, "intact");
    else if (row->head < 0)
        snprintf(out, size, "L%d FFN", row->layer);
    else
        snprintf(out, size, "L%d head %d", row->layer, row->head);
}

int ablate_write_csv(const AblationTable *t, const char *path) {
    size_t cap = 512 + (size_t)t->num_rows * (128 + 16 * (ABLATE_MAX_LABEL + 1)), len = 0;
    char *text = mallocCheck(cap);
    len += (size_t)snprintf(text + len, cap - len, "component,layer,head,mode,mse,delta_mse");
    for (int label = 0; label <= ABLATE_MAX_LABEL; label++)
        if (t->label_count[label]) len += (size_t)snprintf(text + len, cap - len, ",delta_label_%d", label);
    len += (size_t)snprintf(text + len, cap - len, "\n");
    for (int r = 0; r < t->num_rows; r++) {
        const AblationRow *row = &t->rows[r];
        char name[32];
        ablate_component_name(name, sizeof(name), row);
        len += (size_t)snprintf(text + len, cap - len, "%s,%d,%d,%s,%.6g,%.6g", name, row->mode ? row->layer : -1,
                                row->mode ? row->head : -1, MODE_NAMES[row->mode], ablate_mse(t, r),
                                ablate_mse(t, r) - ablate_mse(t, 0));
        for (int label = 0; label <= ABLATE_MAX_LABEL; label++)
            if (t->label_count[label])
                len += (size_t)snprintf(text + len, cap - len, ",%.6g",
                                        ablate_label_mse(t, r, label) - ablate_label_mse(t, 0, label));
        len += (size_t)snprintf(text + len, cap - len, "\n");
    }
    int rc = pf_write_file_atomic(path, text, len);
    free(text);
    return rc;
}

cJSON *ablate_to_json(const AblationTable *t) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddNumberToObject(root, "examples", (double)t->count);
    cJSON *counts = cJSON_AddObjectToObject(root, "label_counts");
    for (int label = 0; label <= ABLATE_MAX_LABEL; label++)
        if (t->label_count[label]) {
            char key[16];
            snprintf(key, sizeof(key), "%d", label);
            cJSON_AddNumberToObject(counts, key, (double)t->label_count[label]);
        }
    cJSON *rows = cJSON_AddArrayToObject(root, "rows");
    for (int r = 0; r < t->num_rows; r++) {
        const AblationRow *row = &t->rows[r];
        cJSON *o = cJSON_CreateObject();
        char name[32];
        ablate_component_name(name, sizeof(name), row);
        cJSON_AddStringToObject(o, "component", name);
        cJSON_AddStringToObject(o, "mode", MODE_NAMES[row->mode]);
        if (row->mode) {
            cJSON_AddNumberToObject(o, "layer", row->layer);
            cJSON_AddNumberToObject(o, "head", row->head);
        }
        cJSON_AddNumberToObject(o, "mse", ablate_mse(t, r));
        cJSON_AddNumberToObject(o, "delta_mse", ablate_mse(t, r) - ablate_mse(t, 0));
        cJSON *by_label = cJSON_AddObjectToObject(o, "mse_by_label");
        for (int label = 0; label <= ABLATE_MAX_LABEL; label++)
            if (t->label_count[label]) {
                char key[16];
                snprintf(key, sizeof(key), "%d", label);
                cJSON_AddNumberToObject(by_label, key, ablate_label_mse(t, r, label));
            }
        cJSON_AddItemToArray(rows, o);
    }
    return root;
}

// Components in reading order (layer 0 first, heads before the FFN), for the figures' axes.
static cJSON *component_order(const AblationTable *t) {
    int layers = 0, heads = 0;
    for (int r = 1; r < t->num_rows; r++) {
        if (t->rows[r].layer + 1 > layers) layers = t->rows[r].layer + 1;
        if (t->rows[r].head + 1 > heads) heads = t->rows[r].head + 1;
    }
    cJSON *order = cJSON_CreateArray();
    for (int l = 0; l < layers; l++)
        for (int h = 0; h <= heads; h++) {
            AblationRow row = {ABLATE_ZERO, l, h < heads ? h : -1, 0.0, {0}};
            char name[32];
            ablate_component_name(name, sizeof(name), &row);
            cJSON_AddItemToArray(order, cJSON_CreateString(name));
        }
    return order;
}

static cJSON *channel(const char *field, const char *type, const char *title) {
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "field", field);
    cJSON_AddStringToObject(c, "type", type);
    if (title) cJSON_AddStringToObject(c, "title", title);
    return c;
}

static cJSON *spec_base(const char *title) {
    cJSON *spec = cJSON_CreateObject();
    cJSON_AddStringToObject(spec, "$schema", "https://vega.github.io/schema/vega-lite/v6.json");
    if (title) cJSON_AddStringToObject(spec, "title", title);
    return spec;
}

cJSON *ablate_bar_spec(const AblationTable *t, const char *title) {
    cJSON *spec = spec_base(title);
    cJSON *values = cJSON_CreateArray();
    for (int r = 1; r < t->num_rows; r++) {
        cJSON *v = cJSON_CreateObject();
        char name[32];
        ablate_component_name(name, sizeof(name), &t->rows[r]);
        cJSON_AddStringToObject(v, "component", name);
        cJSON_AddStringToObject(v, "mode", MODE_NAMES[t->rows[r].mode]);
        cJSON_AddNumberToObject(v, "delta_mse", ablate_mse(t, r) - ablate_mse(t, 0));
        cJSON_AddNumberToObject(v, "mse", ablate_mse(t, r));
        cJSON_AddItemToArray(values, v);
    }
    cJSON_AddItemToObject(cJSON_AddObjectToObject(spec, "data"), "values", values);
    cJSON_AddNumberToObject(spec, "width", 520);
    cJSON_AddNumberToObject(cJSON_AddObjectToObject(spec, "height"), "step", 14);
    cJSON_AddStringToObject(cJSON_AddObjectToObject(spec, "mark"), "type", "bar");
    cJSON *enc = cJSON_AddObjectToObject(spec, "encoding");
    cJSON *y = channel("component", "nominal", "component knocked out");
    cJSON_AddItemToObject(y, "sort", component_order(t));
    cJSON_AddItemToObject(enc, "y", y);
    cJSON_AddItemToObject(enc, "yOffset", channel("mode", "nominal", NULL));
    char xtitle[96];
    snprintf(xtitle, sizeof(xtitle), "change in MSE (intact: %.4g)", ablate_mse(t, 0));
    cJSON *x = channel("delta_mse", "quantitative", xtitle);
    cJSON_AddStringToObject(cJSON_AddObjectToObject(x, "scale"), "type", "symlog");
    cJSON_AddItemToObject(enc, "x", x);
    cJSON_AddItemToObject(enc, "color", channel("mode", "nominal", "ablation"));
    cJSON *tooltip = cJSON_AddArrayToObject(enc, "tooltip");
    cJSON_AddItemToArray(tooltip, channel("component", "nominal", NULL));
    cJSON_AddItemToArray(tooltip, channel("mode", "nominal", NULL));
    cJSON_AddItemToArray(tooltip, channel("mse", "quantitative", NULL));
    cJSON_AddItemToArray(tooltip, channel("delta_mse", "quantitative", NULL));
    return spec;
}

cJSON *ablate_label_spec(const AblationTable *t, const char *title) {
    cJSON *spec = spec_base(title);
    cJSON *values = cJSON_CreateArray();
    for (int r = 1; r < t->num_rows; r++)
        for (int label = 0; label <= ABLATE_MAX_LABEL; label++) {
            if (!t->label_count[label]) continue;
            cJSON *v = cJSON_CreateObject();
            char name[32];
            ablate_component_name(name, sizeof(name), &t->rows[r]);
            cJSON_AddStringToObject(v, "component", name);
            cJSON_AddStringToObject(v, "mode", MODE_NAMES[t->rows[r].mode]);
            cJSON_AddNumberToObject(v, "label", label);
            cJSON_AddNumberToObject(v, "delta_mse", ablate_label_mse(t, r, label) - ablate_label_mse(t, 0, label));
            cJSON_AddItemToArray(values, v);
        }
    cJSON_AddItemToObject(cJSON_AddObjectToObject(spec, "data"), "values", values);
    cJSON *col = channel("mode", "nominal", "ablation");
    cJSON_AddItemToObject(cJSON_AddObjectToObject(spec, "facet"), "column", col);
    cJSON *inner = cJSON_AddObjectToObject(spec, "spec");
    cJSON_AddNumberToObject(inner, "width", 240);
    cJSON_AddNumberToObject(cJSON_AddObjectToObject(inner, "height"), "step", 10);
    cJSON_AddStringToObject(cJSON_AddObjectToObject(inner, "mark"), "type", "rect");
    cJSON *enc = cJSON_AddObjectToObject(inner, "encoding");
    cJSON_AddItemToObject(enc, "x", channel("label", "ordinal", "true distance (label)"));
    cJSON *y = channel("component", "nominal", "component knocked out");
    cJSON_AddItemToObject(y, "sort", component_order(t));
    cJSON_AddItemToObject(enc, "y", y);
    cJSON *color = channel("delta_mse", "quantitative", "change in MSE");
    cJSON *scale = cJSON_AddObjectToObject(color, "scale");
    cJSON_AddStringToObject(scale, "type", "symlog");
    cJSON_AddStringToObject(scale, "scheme", "redblue");
    cJSON_AddTrueToObject(scale, "reverse");
    cJSON_AddNumberToObject(scale, "domainMid", 0);
    cJSON_AddItemToObject(enc, "color", color);
    cJSON *tooltip = cJSON_AddArrayToObject(enc, "tooltip");
    cJSON_AddItemToArray(tooltip, channel("component", "nominal", NULL));
    cJSON_AddItemToArray(tooltip, channel("label", "ordinal", NULL));
    cJSON_AddItemToArray(tooltip, channel("delta_mse", "quantitative", NULL));
    return spec;
}
