// inside.h: probes, ablations and example graphs of a run's two checkpoints, as figures and a manifest.
#include "interp/inside.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "common.h"
#include "interp/ablate.h"
#include "interp/capture.h"
#include "interp/inspect.h"
#include "interp/probe.h"

InsideOptions inside_options_default(void) {
    InsideOptions o = {4096, 1024, 3, 1, "pretrain", "pretrain", "onpath-large-target"};
    return o;
}

typedef struct {
    const char *dir;
    cJSON *figures;  // the manifest's list
} Manifest;

static int add_figure(Manifest *m, const char *name, const char *caption, cJSON *spec) {
    char file[96], path[PF_PATH_MAX];
    snprintf(file, sizeof(file), "%s.vl.json", name);
    int rc = pf_path_join(path, sizeof(path), m->dir, file);
    if (rc == 0) rc = pf_write_json_atomic(path, spec, 0);
    cJSON_Delete(spec);
    if (rc != 0) return -1;
    cJSON *f = cJSON_CreateObject();
    char report_name[96];
    snprintf(report_name, sizeof(report_name), "inside-%s", name);
    cJSON_AddStringToObject(f, "name", report_name);
    cJSON_AddStringToObject(f, "file", file);
    cJSON_AddStringToObject(f, "caption", caption);
    cJSON_AddItemToArray(m->figures, f);
    return 0;
}

// One model's probe table with its random-model control (same architecture, PyTorch's init).
static int probe_model(ProbeTable *t, Model *model, const DataConfig *dc, const InsideOptions *o) {
    ProbeData data, random_data;
    if (probe_collect_model(&data, model, o->probe_set, dc, o->seed, o->probe_count, 256) != 0) return -1;
    int rc = probe_run(t, &data, 1e-3, o->seed);
    probe_data_free(&data);
    if (rc != 0) return -1;
    Model random_model;
    model_create(&random_model, &model->config, 1, 0);
    model_init(&random_model, o->seed, 1);
    rc = probe_collect_model(&random_data, &random_model, o->probe_set, dc, o->seed, o->probe_count, 256);
    model_free(&random_model);
    if (rc != 0) return -1;
    ProbeTable random_table;
    rc = probe_run(&random_table, &random_data, 1e-3, o->seed);
    probe_data_free(&random_data);
    if (rc == 0) rc = probe_set_random_control(t, &random_table);
    if (rc == 0) probe_table_free(&random_table);
    return rc;
}

// The two probe heatmaps and their difference, side by side (no $schema inside a concatenation).
static cJSON *probe_comparison(const ProbeTable *pre, const ProbeTable *tuned) {
    cJSON *spec = cJSON_CreateObject();
    cJSON_AddStringToObject(spec, "$schema", "https://vega.github.io/schema/vega-lite/v6.json");
    cJSON *panels = cJSON_AddArrayToObject(spec, "hconcat");
    const ProbeTable *tables[2] = {pre, tuned};
    const char *titles[2] = {"pre-trained", "fine-tuned"};
    for (int i = 0; i < (tuned ? 2 : 1); i++) {
        cJSON *panel = probe_heatmap_spec(tables[i], titles[i]);
        cJSON_DeleteItemFromObject(panel, "$schema");
        cJSON_AddItemToArray(panels, panel);
    }
    if (tuned && tuned->layers == pre->layers && tuned->num_facts == pre->num_facts) {
        // fine-tuned minus pre-trained, in a diverging scale
        ProbeTable diff = *tuned;
        diff.cells = mallocCheck((size_t)tuned->layers * tuned->num_facts * sizeof(ProbeCell));
        for (size_t c = 0; c < (size_t)tuned->layers * tuned->num_facts; c++) {
            diff.cells[c] = tuned->cells[c];
            diff.cells[c].score = tuned->cells[c].score - pre->cells[c].score;
        }
        cJSON *panel = probe_heatmap_spec(&diff, "fine-tuned minus pre-trained");
        free(diff.cells);
        cJSON_DeleteItemFromObject(panel, "$schema");
        cJSON *rect = cJSON_GetArrayItem(cJSON_GetObjectItem(panel, "layer"), 0);
        cJSON *color = cJSON_GetObjectItem(cJSON_GetObjectItem(rect, "encoding"), "color");
        cJSON_ReplaceItemInObject(color, "title", cJSON_CreateString("change"));
        cJSON *scale = cJSON_CreateObject();
        double domain[2] = {-0.5, 0.5};
        cJSON_AddItemToObject(scale, "domain", cJSON_CreateDoubleArray(domain, 2));
        cJSON_AddStringToObject(scale, "scheme", "redblue");
        cJSON_AddTrueToObject(scale, "clamp");
        cJSON_ReplaceItemInObject(color, "scale", scale);
        cJSON *text = cJSON_GetArrayItem(cJSON_GetObjectItem(panel, "layer"), 1);
        cJSON *text_color = cJSON_GetObjectItem(cJSON_GetObjectItem(text, "encoding"), "color");
        cJSON_ReplaceItemInObject(text_color, "value", cJSON_CreateString("black"));
        cJSON_AddItemToArray(panels, panel);
    }
    cJSON *resolve = cJSON_AddObjectToObject(spec, "resolve");
    cJSON_AddStringToObject(cJSON_AddObjectToObject(resolve, "scale"), "color", "independent");
    return spec;
}

// A one-line reading of a probe table: each fact's best score and the layer where it is.
static void describe_probes(char *out, size_t size, const char *model_name, const ProbeTable *t) {
    size_t len = (size_t)snprintf(out, size, "%s: ", model_name);
    for (int f = 0; f < t->num_facts && len < size; f++) {
        double best = -INFINITY;
        int best_layer = 0;
        for (int l = 0; l < t->layers; l++) {
            double s = probe_cell(t, l, f)->score;
            if (s > best) {
                best = s;
                best_layer = l;
            }
        }
        len += (size_t)snprintf(out + len, size - len, "%s best %.2f at layer %d%s", t->names[f], best, best_layer,
                                f + 1 < t->num_facts ? "; " : ".");
    }
}

int inside_write(const char *run_dir, const InsideOptions *o) {
    char dir[PF_PATH_MAX], pre_path[PF_PATH_MAX], tuned_path[PF_PATH_MAX];
    if (pf_path_join(dir, sizeof(dir), run_dir, "inside") != 0) return -1;
    snprintf(pre_path, sizeof(pre_path), "%s/pretrain/model.safetensors", run_dir);
    snprintf(tuned_path, sizeof(tuned_path), "%s/tune/model.safetensors", run_dir);
    if (!pf_file_exists(pre_path)) return pf_fail("inside: %s has no pre-trained model (pretrain/model.safetensors)", run_dir);
    int have_tuned = pf_file_exists(tuned_path);
    if (pf_mkdir_p(dir) != 0) return -1;
    Manifest m = {dir, cJSON_CreateArray()};
    Model models[2];
    DataConfig dcs[2];
    ProbeTable tables[2];
    const char *paths[2] = {pre_path, tuned_path}, *names[2] = {"pre-trained", "fine-tuned"};
    int count = have_tuned ? 2 : 1, rc = 0, loaded = 0, probed = 0;
    for (int i = 0; i < count && rc == 0; i++) {
        rc = capture_load_model(&models[i], &dcs[i], paths[i], 1);
        if (rc == 0) loaded++;
        if (rc == 0) rc = probe_model(&tables[i], &models[i], &dcs[i], o);
        if (rc == 0) probed++;
    }
    char text[4096] = "";
    if (rc == 0) {
        size_t len = 0;
        for (int i = 0; i < count; i++) {
            char line[1536];
            describe_probes(line, sizeof(line), names[i], &tables[i]);
            len += (size_t)snprintf(text + len, sizeof(text) - len, "%s ", line);
        }
        char caption[512];
        snprintf(caption, sizeof(caption),
                 "Linear probes (ridge, held-out 1/5 of %ld %s examples) from each layer's token states: within_k = "
                 "[dist(1, u) <= k] for edge token (u, v) (accuracy), dist_u, dist_v, dist_t (R^2). Tooltips give "
                 "the controls (shuffled labels, a randomly initialized model, majority class).",
                 o->probe_count, o->probe_set);
        rc = add_figure(&m, "probes", caption, probe_comparison(&tables[0], have_tuned ? &tables[1] : NULL));
    }
    for (int i = 0; i < count && rc == 0; i++) {
        AblationTable t;
        rc = ablate_run(&t, &models[i], o->ablate_set, &dcs[i], o->seed, o->ablate_count,
                        1 << ABLATE_ZERO | 1 << ABLATE_MEAN, 256);
        if (rc != 0) break;
        char name[32], title[96], caption[256];
        snprintf(name, sizeof(name), "ablate-%s", i ? "tuned" : "pretrained");
        snprintf(title, sizeof(title), "%s: change in MSE with one component knocked out", names[i]);
        snprintf(caption, sizeof(caption),
                 "The %s model on %ld %s examples (intact MSE %.4g): each head's output and each feed-forward "
                 "zeroed or replaced by its mean, one at a time.",
                 names[i], o->ablate_count, o->ablate_set, ablate_mse(&t, 0));
        rc = add_figure(&m, name, caption, ablate_bar_spec(&t, title));
        ablate_table_free(&t);
    }
    // example graphs through the last model (the fine-tuned one when there is one)
    const Model *shown = &models[count - 1];
    DataSet set;
    if (rc == 0) rc = dataset_lookup(&set, o->graph_set, &dcs[count - 1]);
    for (int g = 0; g < o->graphs && rc == 0; g++) {
        Example ex;
        dataset_sample_keyed(&ex, &set, &dcs[count - 1], o->seed, 0, (uint64_t)g);
        cJSON *inspected = inspect_example(shown, &ex, &dcs[count - 1]);
        char name[32], caption[256];
        snprintf(name, sizeof(name), "graph-%d", g + 1);
        snprintf(caption, sizeof(caption),
                 "Example %d of %s through the %s model: the attention the query token (default: the target) pays "
                 "each edge, per layer and head.",
                 g + 1, o->graph_set, names[count - 1]);
        rc = add_figure(&m, name, caption, inspect_graph_spec(inspected));
        cJSON_Delete(inspected);
    }
    if (rc == 0) {
        cJSON *manifest = cJSON_CreateObject();
        cJSON_AddStringToObject(manifest, "title", "Inside the model");
        cJSON_AddStringToObject(manifest, "text", text);
        cJSON_AddItemToObject(manifest, "figures", m.figures);
        m.figures = NULL;
        char path[PF_PATH_MAX];
        rc = pf_path_join(path, sizeof(path), dir, "inside.json");
        if (rc == 0) rc = pf_write_json_atomic(path, manifest, 1);
        cJSON_Delete(manifest);
    }
    cJSON_Delete(m.figures);
    for (int i = 0; i < probed; i++) probe_table_free(&tables[i]);
    for (int i = 0; i < loaded; i++) model_free(&models[i]);
    return rc;
}
