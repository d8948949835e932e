// inspect.h: one example through the capture forward, and its figures.
#include "interp/inspect.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"
#include "common.h"
#include "experiment/vegalite.h"
#include "interp/capture.h"

cJSON *inspect_example(const Model *model, const Example *ex, const DataConfig *cfg) {
    const ModelConfig *mc = &model->config;
    int T = mc->seq_len, C = mc->d_model, L = mc->n_layers, NH = mc->n_heads;
    Batch batch;
    batch_alloc(&batch, 1, T);
    batch_encode(&batch, 0, ex, cfg);
    Capture cap;
    capture_create(&cap, mc, 1);
    capture_forward(&cap, model, batch.tokens, 1, NULL, 0, 0);
    // the real positions: the edges, then the target pair at T - 1
    int E = ex->graph.num_edges, n = E + 1, pos[PF_MAX_EDGES + 1];
    for (int i = 0; i < E; i++) pos[i] = i;
    pos[E] = T - 1;

    cJSON *root = cJSON_CreateObject();
    cJSON *edges = cJSON_AddArrayToObject(root, "edges");
    for (int i = 0; i < E; i++) {
        int pair[2] = {ex->graph.edges[i][0], ex->graph.edges[i][1]};
        cJSON_AddItemToArray(edges, cJSON_CreateIntArray(pair, 2));
    }
    cJSON_AddNumberToObject(root, "vertices", ex->graph.n);
    cJSON_AddNumberToObject(root, "target", ex->target);
    cJSON_AddNumberToObject(root, "label", ex->label);
    cJSON_AddNumberToObject(root, "prediction", cap.pred[0]);
    cJSON_AddNumberToObject(root, "layers", L);
    cJSON_AddNumberToObject(root, "heads", NH);
    cJSON *tokens = cJSON_AddArrayToObject(root, "tokens");
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(tokens, cJSON_CreateIntArray(batch.tokens + 2 * pos[i], 2));
    cJSON *attention = cJSON_AddArrayToObject(root, "attention");
    for (int l = 0; l < L; l++) {
        cJSON *layer = cJSON_CreateArray();
        for (int h = 0; h < NH; h++) {
            cJSON *head = cJSON_CreateArray();
            for (int q = 0; q < n; q++) {
                const float *row = capture_attention(&cap, l, h, 0, pos[q]);
                float keys[PF_MAX_EDGES + 1];
                for (int k = 0; k < n; k++) keys[k] = row[pos[k]];
                cJSON_AddItemToArray(head, cJSON_CreateFloatArray(keys, n));
            }
            cJSON_AddItemToArray(layer, head);
        }
        cJSON_AddItemToArray(attention, layer);
    }
    cJSON *norms = cJSON_AddArrayToObject(root, "residual_norms");
    for (int l = 0; l <= L; l++) {
        float values[PF_MAX_EDGES + 1];
        for (int i = 0; i < n; i++) {
            const float *x = capture_state(&cap, l, 0, pos[i]);
            double sum = 0.0;
            for (int c = 0; c < C; c++) sum += (double)x[c] * x[c];
            values[i] = (float)sqrt(sum);
        }
        cJSON_AddItemToArray(norms, cJSON_CreateFloatArray(values, n));
    }
    capture_free(&cap);
    batch_free(&batch);
    return root;
}

// ---------------------------------------------------------------------------------------------
// Figures

static int json_int(const cJSON *obj, const char *key) { return cJSON_GetObjectItem(obj, key)->valueint; }

// "(u,v)" for token i (the target pair reads "t=T").
static void token_label(char *out, size_t size, const cJSON *inspected, int i) {
    const cJSON *tokens = cJSON_GetObjectItem(inspected, "tokens");
    const cJSON *pair = cJSON_GetArrayItem(tokens, i);
    int a = cJSON_GetArrayItem(pair, 0)->valueint, b = cJSON_GetArrayItem(pair, 1)->valueint;
    if (i == cJSON_GetArraySize(tokens) - 1)
        snprintf(out, size, "%02d target %d", i, a);
    else
        snprintf(out, size, "%02d (%d,%d)", i, a, b);
}

static cJSON *range_param(const char *name, int lo, int hi, int value, const char *label) {
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "name", name);
    cJSON_AddNumberToObject(p, "value", value);
    cJSON *bind = cJSON_AddObjectToObject(p, "bind");
    cJSON_AddStringToObject(bind, "input", "range");
    cJSON_AddNumberToObject(bind, "min", lo);
    cJSON_AddNumberToObject(bind, "max", hi);
    cJSON_AddNumberToObject(bind, "step", 1);
    cJSON_AddStringToObject(bind, "name", label);
    return p;
}

// The layer and head sliders (and, for the graph, the query token), shared by the figures.
static void add_pickers(cJSON *spec, const cJSON *inspected, int with_query) {
    cJSON *params = cJSON_AddArrayToObject(spec, "params");
    cJSON_AddItemToArray(params, range_param("layer", 0, json_int(inspected, "layers") - 1, 0, "layer "));
    cJSON_AddItemToArray(params, range_param("head", 0, json_int(inspected, "heads") - 1, 0, "head "));
    if (with_query) {
        int n = cJSON_GetArraySize(cJSON_GetObjectItem(inspected, "tokens"));
        cJSON_AddItemToArray(params, range_param("query", 0, n - 1, n - 1, "query token (last: the target) "));
    }
}

static cJSON *filter(const char *expr) {
    cJSON *f = cJSON_CreateObject();
    cJSON_AddStringToObject(f, "filter", expr);
    return f;
}

static cJSON *xy_channel(const char *field) {
    cJSON *c = vl_channel(field, "quantitative", NULL);
    cJSON_AddNullToObject(c, "axis");
    cJSON *scale = cJSON_AddObjectToObject(c, "scale");
    double d[2] = {-1.25, 1.25};
    cJSON_AddItemToObject(scale, "domain", cJSON_CreateDoubleArray(d, 2));
    return c;
}

cJSON *inspect_graph_spec(const cJSON *inspected) {
    int V = json_int(inspected, "vertices"), target = json_int(inspected, "target");
    const cJSON *edges = cJSON_GetObjectItem(inspected, "edges"), *attention = cJSON_GetObjectItem(inspected, "attention");
    int E = cJSON_GetArraySize(edges), n = E + 1, L = json_int(inspected, "layers"), NH = json_int(inspected, "heads");
    char title[128];
    snprintf(title, sizeof(title), "dist(1, %d) = %d, predicted %.3f: attention of the query token to each edge",
             target, json_int(inspected, "label"), cJSON_GetObjectItem(inspected, "prediction")->valuedouble);
    cJSON *spec = vl_spec(title, 360, 360);
    add_pickers(spec, inspected, 1);
    cJSON *layers = cJSON_AddArrayToObject(spec, "layer");
    // vertices on a circle, vertex 1 at the top
    double vx[PF_MAX_VERTICES + 1], vy[PF_MAX_VERTICES + 1];
    for (int v = 1; v <= V; v++) {
        double a = 2.0 * M_PI * (v - 1) / V;
        vx[v] = sin(a);
        vy[v] = cos(a);
    }
    // edges: one row per layer, head, query and edge token
    cJSON *rows = cJSON_CreateArray();
    for (int l = 0; l < L; l++)
        for (int h = 0; h < NH; h++)
            for (int q = 0; q < n; q++) {
                const cJSON *row = cJSON_GetArrayItem(cJSON_GetArrayItem(cJSON_GetArrayItem(attention, l), h), q);
                for (int e = 0; e < E; e++) {
                    const cJSON *pair = cJSON_GetArrayItem(edges, e);
                    int u = cJSON_GetArrayItem(pair, 0)->valueint, v = cJSON_GetArrayItem(pair, 1)->valueint;
                    cJSON *r = cJSON_CreateObject();
                    cJSON_AddNumberToObject(r, "layer", l);
                    cJSON_AddNumberToObject(r, "head", h);
                    cJSON_AddNumberToObject(r, "query", q);
                    cJSON_AddNumberToObject(r, "x", vx[u]);
                    cJSON_AddNumberToObject(r, "y", vy[u]);
                    cJSON_AddNumberToObject(r, "x2", vx[v]);
                    cJSON_AddNumberToObject(r, "y2", vy[v]);
                    char name[32];
                    snprintf(name, sizeof(name), "(%d,%d)", u, v);
                    cJSON_AddStringToObject(r, "edge", name);
                    cJSON_AddNumberToObject(r, "weight", cJSON_GetArrayItem(row, e)->valuedouble);
                    cJSON_AddItemToArray(rows, r);
                }
            }
    cJSON *edge_layer = cJSON_CreateObject();
    cJSON_AddItemToObject(edge_layer, "data", vl_values(rows));
    cJSON *transform = cJSON_AddArrayToObject(edge_layer, "transform");
    cJSON_AddItemToArray(transform, filter("datum.layer == layer && datum.head == head && datum.query == query"));
    cJSON *mark = vl_mark("rule");
    cJSON_AddStringToObject(mark, "strokeCap", "round");
    cJSON_AddItemToObject(edge_layer, "mark", mark);
    cJSON *enc = cJSON_AddObjectToObject(edge_layer, "encoding");
    cJSON_AddItemToObject(enc, "x", xy_channel("x"));
    cJSON_AddItemToObject(enc, "y", xy_channel("y"));
    cJSON_AddItemToObject(enc, "x2", vl_channel("x2", "quantitative", NULL));
    cJSON_AddItemToObject(enc, "y2", vl_channel("y2", "quantitative", NULL));
    cJSON *color = vl_channel("weight", "quantitative", "attention");
    cJSON *cscale = cJSON_AddObjectToObject(color, "scale");
    cJSON_AddStringToObject(cscale, "scheme", "orangered");
    double dom[2] = {0, 1};
    cJSON_AddItemToObject(cscale, "domain", cJSON_CreateDoubleArray(dom, 2));
    cJSON_AddItemToObject(enc, "color", color);
    cJSON *width = vl_channel("weight", "quantitative", NULL);
    cJSON *wscale = cJSON_AddObjectToObject(width, "scale");
    double wr[2] = {1, 9};
    cJSON_AddItemToObject(wscale, "domain", cJSON_CreateDoubleArray(dom, 2));
    cJSON_AddItemToObject(wscale, "range", cJSON_CreateDoubleArray(wr, 2));
    cJSON_AddNullToObject(width, "legend");
    cJSON_AddItemToObject(enc, "strokeWidth", width);
    const char *tf[] = {"edge", "weight"}, *tt[] = {"nominal", "quantitative"};
    cJSON_AddItemToObject(enc, "tooltip", vl_tooltip(tf, tt, 2));
    cJSON_AddItemToArray(layers, edge_layer);
    // vertices: 1 and the target marked
    cJSON *verts = cJSON_CreateArray();
    for (int v = 1; v <= V; v++) {
        cJSON *r = cJSON_CreateObject();
        cJSON_AddNumberToObject(r, "x", vx[v]);
        cJSON_AddNumberToObject(r, "y", vy[v]);
        cJSON_AddNumberToObject(r, "vertex", v);
        cJSON_AddStringToObject(r, "role", v == 1 ? "source 1" : v == target ? "target" : "vertex");
        cJSON_AddItemToArray(verts, r);
    }
    for (int pass = 0; pass < 2; pass++) {
        cJSON *vl = cJSON_CreateObject();
        cJSON_AddItemToObject(vl, "data", vl_values(pass == 0 ? verts : cJSON_Duplicate(verts, 1)));
        cJSON *m = vl_mark(pass == 0 ? "circle" : "text");
        if (pass == 0) {
            cJSON_AddNumberToObject(m, "size", 500);
            cJSON_AddNumberToObject(m, "opacity", 1);
        } else {
            cJSON_AddNumberToObject(m, "fontSize", 13);
            cJSON_AddStringToObject(m, "fontWeight", "bold");
        }
        cJSON_AddItemToObject(vl, "mark", m);
        cJSON *ve = cJSON_AddObjectToObject(vl, "encoding");
        cJSON_AddItemToObject(ve, "x", xy_channel("x"));
        cJSON_AddItemToObject(ve, "y", xy_channel("y"));
        if (pass == 0) {
            cJSON *c = vl_channel("role", "nominal", "vertex");
            cJSON *s = cJSON_AddObjectToObject(c, "scale");
            const char *d[] = {"source 1", "target", "vertex"}, *r[] = {"#2a9d8f", "#e9c46a", "#d9d9d9"};
            cJSON_AddItemToObject(s, "domain", cJSON_CreateStringArray(d, 3));
            cJSON_AddItemToObject(s, "range", cJSON_CreateStringArray(r, 3));
            cJSON_AddItemToObject(ve, "color", c);
        } else {
            cJSON_AddItemToObject(ve, "text", vl_channel("vertex", "quantitative", NULL));
        }
        cJSON_AddItemToArray(layers, vl);
    }
    return spec;
}

cJSON *inspect_attention_spec(const cJSON *inspected) {
    const cJSON *attention = cJSON_GetObjectItem(inspected, "attention");
    int n = cJSON_GetArraySize(cJSON_GetObjectItem(inspected, "tokens")), L = json_int(inspected, "layers"),
        NH = json_int(inspected, "heads");
    cJSON *spec = vl_spec("attention: query token (row) on key token (column)", 22 * n, 22 * n);
    add_pickers(spec, inspected, 0);
    cJSON *rows = cJSON_CreateArray(), *order = cJSON_CreateArray();
    char labels[PF_MAX_EDGES + 1][32];
    for (int i = 0; i < n; i++) {
        token_label(labels[i], sizeof(labels[i]), inspected, i);
        cJSON_AddItemToArray(order, cJSON_CreateString(labels[i]));
    }
    for (int l = 0; l < L; l++)
        for (int h = 0; h < NH; h++)
            for (int q = 0; q < n; q++) {
                const cJSON *row = cJSON_GetArrayItem(cJSON_GetArrayItem(cJSON_GetArrayItem(attention, l), h), q);
                for (int k = 0; k < n; k++) {
                    cJSON *r = cJSON_CreateObject();
                    cJSON_AddNumberToObject(r, "layer", l);
                    cJSON_AddNumberToObject(r, "head", h);
                    cJSON_AddStringToObject(r, "query", labels[q]);
                    cJSON_AddStringToObject(r, "key", labels[k]);
                    cJSON_AddNumberToObject(r, "weight", cJSON_GetArrayItem(row, k)->valuedouble);
                    cJSON_AddItemToArray(rows, r);
                }
            }
    cJSON_AddItemToObject(spec, "data", vl_values(rows));
    cJSON *transform = cJSON_AddArrayToObject(spec, "transform");
    cJSON_AddItemToArray(transform, filter("datum.layer == layer && datum.head == head"));
    cJSON_AddItemToObject(spec, "mark", vl_mark("rect"));
    cJSON *enc = cJSON_AddObjectToObject(spec, "encoding");
    cJSON *x = vl_channel("key", "ordinal", "key token");
    cJSON_AddItemToObject(x, "sort", order);
    cJSON *y = vl_channel("query", "ordinal", "query token");
    cJSON_AddItemToObject(y, "sort", cJSON_Duplicate(order, 1));
    cJSON_AddItemToObject(enc, "x", x);
    cJSON_AddItemToObject(enc, "y", y);
    cJSON *color = vl_channel("weight", "quantitative", "attention");
    cJSON *scale = cJSON_AddObjectToObject(color, "scale");
    double dom[2] = {0, 1};
    cJSON_AddItemToObject(scale, "domain", cJSON_CreateDoubleArray(dom, 2));
    cJSON_AddStringToObject(scale, "scheme", "blues");
    cJSON_AddItemToObject(enc, "color", color);
    const char *tf[] = {"query", "key", "weight"}, *tt[] = {"nominal", "nominal", "quantitative"};
    cJSON_AddItemToObject(enc, "tooltip", vl_tooltip(tf, tt, 3));
    return spec;
}

cJSON *inspect_norms_spec(const cJSON *inspected) {
    const cJSON *norms = cJSON_GetObjectItem(inspected, "residual_norms");
    int n = cJSON_GetArraySize(cJSON_GetObjectItem(inspected, "tokens")), states = cJSON_GetArraySize(norms);
    cJSON *spec = vl_spec("residual stream norm per token (state 0: the embedding)", 420, 260);
    cJSON *rows = cJSON_CreateArray();
    for (int l = 0; l < states; l++)
        for (int i = 0; i < n; i++) {
            char label[32];
            token_label(label, sizeof(label), inspected, i);
            cJSON *r = cJSON_CreateObject();
            cJSON_AddNumberToObject(r, "state", l);
            cJSON_AddStringToObject(r, "token", label);
            cJSON_AddNumberToObject(r, "norm", cJSON_GetArrayItem(cJSON_GetArrayItem(norms, l), i)->valuedouble);
            cJSON_AddItemToArray(rows, r);
        }
    cJSON_AddItemToObject(spec, "data", vl_values(rows));
    cJSON *mark = vl_mark("line");
    cJSON_AddTrueToObject(mark, "point");
    cJSON_AddItemToObject(spec, "mark", mark);
    cJSON *enc = cJSON_AddObjectToObject(spec, "encoding");
    cJSON_AddItemToObject(enc, "x", vl_channel("state", "ordinal", "state"));
    cJSON_AddItemToObject(enc, "y", vl_channel("norm", "quantitative", "L2 norm"));
    cJSON_AddItemToObject(enc, "color", vl_channel("token", "nominal", "token"));
    const char *tf[] = {"token", "state", "norm"}, *tt[] = {"nominal", "ordinal", "quantitative"};
    cJSON_AddItemToObject(enc, "tooltip", vl_tooltip(tf, tt, 3));
    return spec;
}
