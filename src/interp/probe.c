// Ridge probes over token states (probe.h): one centred Gram matrix per group and layer, shared by
// every fact of the group and by its shuffled-label control; Cholesky solves in double.
#include "interp/probe.h"

#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"
#include "common.h"
#include "interp/capture.h"
#include "rng.h"

static int held_out(int64_t example) { return example % 5 == 4; }

void probe_data_init(ProbeData *data, int layers, int dim) {
    memset(data, 0, sizeof(*data));
    data->layers = layers;
    data->dim = dim;
}

int probe_add_group(ProbeData *data, const char *name, long n) {
    assert(data->num_groups < PROBE_MAX_GROUPS);
    ProbeGroup *g = &data->groups[data->num_groups];
    snprintf(g->name, sizeof(g->name), "%s", name);
    g->n = n;
    g->states = mallocCheck((size_t)data->layers * (size_t)n * data->dim * sizeof(float));
    g->example = mallocCheck((size_t)n * sizeof(int64_t));
    return data->num_groups++;
}

int probe_add_fact(ProbeData *data, const char *name, int group, int binary) {
    assert(data->num_facts < PROBE_MAX_FACTS);
    ProbeFact *f = &data->facts[data->num_facts];
    snprintf(f->name, sizeof(f->name), "%s", name);
    f->group = group;
    f->binary = binary;
    f->labels = mallocCheck((size_t)data->groups[group].n * sizeof(float));
    return data->num_facts++;
}

void probe_data_free(ProbeData *data) {
    for (int g = 0; g < data->num_groups; g++) {
        free(data->groups[g].states);
        free(data->groups[g].example);
    }
    for (int f = 0; f < data->num_facts; f++) free(data->facts[f].labels);
    memset(data, 0, sizeof(*data));
}

// ---------------------------------------------------------------------------------------------
// Ridge regression

// A (D, D) symmetric positive definite -> its Cholesky factor in the lower triangle.
static void cholesky(double *A, int D) {
    for (int j = 0; j < D; j++) {
        double d = A[(size_t)j * D + j];
        for (int k = 0; k < j; k++) d -= A[(size_t)j * D + k] * A[(size_t)j * D + k];
        d = sqrt(d > 1e-300 ? d : 1e-300);
        A[(size_t)j * D + j] = d;
        for (int i = j + 1; i < D; i++) {
            double s = A[(size_t)i * D + j];
            for (int k = 0; k < j; k++) s -= A[(size_t)i * D + k] * A[(size_t)j * D + k];
            A[(size_t)i * D + j] = s / d;
        }
    }
}

// x = (L L^T)^-1 b, in place.
static void cholesky_solve(const double *Lf, double *x, int D) {
    for (int i = 0; i < D; i++) {
        double s = x[i];
        for (int k = 0; k < i; k++) s -= Lf[(size_t)i * D + k] * x[k];
        x[i] = s / Lf[(size_t)i * D + i];
    }
    for (int i = D - 1; i >= 0; i--) {
        double s = x[i];
        for (int k = i + 1; k < D; k++) s -= Lf[(size_t)k * D + i] * x[k];
        x[i] = s / Lf[(size_t)i * D + i];
    }
}

// One group at one layer: the training rows' feature mean and the factor of their penalized,
// centred Gram matrix.
typedef struct {
    int D;
    double *mean;    // (D)
    double *factor;  // (D, D)
} RidgeBasis;

static void ridge_basis(RidgeBasis *rb, const float *X, const int64_t *example, long n, int D, double ridge) {
    rb->D = D;
    rb->mean = callocCheck((size_t)D, sizeof(double));
    rb->factor = callocCheck((size_t)D * D, sizeof(double));
    long count = 0;
    for (long r = 0; r < n; r++) {
        if (held_out(example[r])) continue;
        for (int i = 0; i < D; i++) rb->mean[i] += X[(size_t)r * D + i];
        count++;
    }
    for (int i = 0; i < D; i++) rb->mean[i] /= count;
    double *row = mallocCheck((size_t)D * sizeof(double));
    double *G = rb->factor;
    for (long r = 0; r < n; r++) {
        if (held_out(example[r])) continue;
        for (int i = 0; i < D; i++) row[i] = X[(size_t)r * D + i] - rb->mean[i];
        for (int i = 0; i < D; i++) {
            double xi = row[i];
            if (xi == 0.0) continue;
            for (int j = 0; j <= i; j++) G[(size_t)i * D + j] += xi * row[j];
        }
    }
    free(row);
    double trace = 0.0;
    for (int i = 0; i < D; i++) trace += G[(size_t)i * D + i];
    double lambda = trace > 0.0 ? ridge * trace / D : 1.0;
    for (int i = 0; i < D; i++) {
        G[(size_t)i * D + i] += lambda;
        for (int j = i + 1; j < D; j++) G[(size_t)i * D + j] = G[(size_t)j * D + i];
    }
    cholesky(G, D);
}

static void ridge_basis_free(RidgeBasis *rb) {
    free(rb->mean);
    free(rb->factor);
}

typedef struct {
    double value;
    int label;
} Scored;

static int compare_scored(const void *a, const void *b) {
    double x = ((const Scored *)a)->value, y = ((const Scored *)b)->value;
    return (x > y) - (x < y);
}

// The decision threshold of a binary probe: the cut between two training predictions that
// classifies the most training rows right (0.5 would assume the regression is calibrated; a fact the
// model stores as a graded magnitude, like the BFS model's reach after a hub, is linear but not so).
static double best_cut(const RidgeBasis *rb, const float *X, const int64_t *example, long n, const float *y,
                       const long *perm, const double *w, double ymean) {
    int D = rb->D;
    Scored *s = mallocCheck((size_t)n * sizeof(Scored));
    long m = 0, ones = 0;
    for (long r = 0; r < n; r++) {
        if (held_out(example[r])) continue;
        double p = ymean;
        for (int i = 0; i < D; i++) p += (X[(size_t)r * D + i] - rb->mean[i]) * w[i];
        s[m].value = p;
        s[m].label = y[perm ? perm[r] : r] > 0.5f;
        ones += s[m].label;
        m++;
    }
    qsort(s, (size_t)m, sizeof(Scored), compare_scored);
    // cut below row i: rows < i say 0, rows >= i say 1; right = zeros below + ones from i on
    long best_right = ones, zeros_below = 0, ones_below = 0;
    double cut = s[0].value - 1.0;
    for (long i = 1; i <= m; i++) {
        s[i - 1].label ? ones_below++ : zeros_below++;
        if (i < m && s[i].value == s[i - 1].value) continue;
        long right = zeros_below + (ones - ones_below);
        if (right > best_right) {
            best_right = right;
            cut = i < m ? 0.5 * (s[i - 1].value + s[i].value) : s[m - 1].value + 1.0;
        }
    }
    free(s);
    return cut;
}

// Fits labels y (indexed by row through `perm`, or directly when perm is NULL) on the training rows
// and scores the held-out rows against their true labels.
static double ridge_score(const RidgeBasis *rb, const float *X, const int64_t *example, long n, const float *y,
                          const long *perm, int binary) {
    int D = rb->D;
    double ymean = 0.0;
    long count = 0;
    for (long r = 0; r < n; r++) {
        if (held_out(example[r])) continue;
        ymean += y[perm ? perm[r] : r];
        count++;
    }
    ymean /= count;
    double *w = callocCheck((size_t)D, sizeof(double));
    for (long r = 0; r < n; r++) {
        if (held_out(example[r])) continue;
        double yr = y[perm ? perm[r] : r] - ymean;
        for (int i = 0; i < D; i++) w[i] += (X[(size_t)r * D + i] - rb->mean[i]) * yr;
    }
    cholesky_solve(rb->factor, w, D);
    double cut = binary ? best_cut(rb, X, example, n, y, perm, w, ymean) : 0.5;
    double correct = 0.0, sse = 0.0, tmean = 0.0, sst = 0.0;
    long tests = 0;
    for (long r = 0; r < n; r++) {
        if (!held_out(example[r])) continue;
        tmean += y[r];
        tests++;
    }
    tmean /= tests;
    for (long r = 0; r < n; r++) {
        if (!held_out(example[r])) continue;
        double p = ymean;
        for (int i = 0; i < D; i++) p += (X[(size_t)r * D + i] - rb->mean[i]) * w[i];
        correct += (p > cut) == (y[r] > 0.5f);
        sse += (p - y[r]) * (p - y[r]);
        sst += (y[r] - tmean) * (y[r] - tmean);
    }
    free(w);
    if (binary) return correct / tests;
    return sst > 0.0 ? 1.0 - sse / sst : 0.0;
}

int probe_run(ProbeTable *t, const ProbeData *data, double ridge, uint64_t seed) {
    memset(t, 0, sizeof(*t));
    for (int g = 0; g < data->num_groups; g++) {
        long train = 0, test = 0;
        for (long r = 0; r < data->groups[g].n; r++) held_out(data->groups[g].example[r]) ? test++ : train++;
        if (train < 2 || test < 1)
            return pf_fail("probe: group %s has %ld training and %ld held-out states; more examples needed",
                           data->groups[g].name, train, test);
    }
    int F = data->num_facts, LY = data->layers, D = data->dim;
    t->layers = LY;
    t->num_facts = F;
    t->names = callocCheck((size_t)F, sizeof(*t->names));
    t->binary = callocCheck((size_t)F, sizeof(int));
    t->train = callocCheck((size_t)F, sizeof(long));
    t->test = callocCheck((size_t)F, sizeof(long));
    t->cells = callocCheck((size_t)LY * F, sizeof(ProbeCell));
    // one shuffle per group (training rows only draw from training rows: the held-out part is untouched)
    long *perms[PROBE_MAX_GROUPS];
    for (int g = 0; g < data->num_groups; g++) {
        const ProbeGroup *grp = &data->groups[g];
        long *perm = mallocCheck((size_t)grp->n * sizeof(long)), *train_rows = mallocCheck((size_t)grp->n * sizeof(long));
        long m = 0;
        for (long r = 0; r < grp->n; r++) {
            perm[r] = r;
            if (!held_out(grp->example[r])) train_rows[m++] = r;
        }
        Rng rng = rng_stream(seed, 0x70726f6265ULL, (uint64_t)g);
        for (long i = m - 1; i > 0; i--) {
            long j = (long)(rng_uniform(&rng) * (double)(i + 1));
            long tmp = train_rows[i];
            train_rows[i] = train_rows[j];
            train_rows[j] = tmp;
        }
        m = 0;
        for (long r = 0; r < grp->n; r++)
            if (!held_out(grp->example[r])) perm[r] = train_rows[m++];
        free(train_rows);
        perms[g] = perm;
    }
    for (int f = 0; f < F; f++) {
        const ProbeFact *fact = &data->facts[f];
        const ProbeGroup *grp = &data->groups[fact->group];
        snprintf(t->names[f], sizeof(t->names[f]), "%s", fact->name);
        t->binary[f] = fact->binary;
        for (long r = 0; r < grp->n; r++) held_out(grp->example[r]) ? t->test[f]++ : t->train[f]++;
    }
#pragma omp parallel for collapse(2) schedule(dynamic)
    for (int g = 0; g < data->num_groups; g++) {
        for (int l = 0; l < LY; l++) {
            const ProbeGroup *grp = &data->groups[g];
            const float *X = grp->states + (size_t)l * grp->n * D;
            RidgeBasis rb;
            ridge_basis(&rb, X, grp->example, grp->n, D, ridge);
            for (int f = 0; f < F; f++) {
                const ProbeFact *fact = &data->facts[f];
                if (fact->group != g) continue;
                ProbeCell *c = &t->cells[(size_t)l * F + f];
                c->score = ridge_score(&rb, X, grp->example, grp->n, fact->labels, NULL, fact->binary);
                c->shuffled = ridge_score(&rb, X, grp->example, grp->n, fact->labels, perms[g], fact->binary);
                c->random = NAN;
                c->chance = 0.0;
                if (fact->binary) {
                    long ones = 0, zeros = 0, test_ones = 0;
                    for (long r = 0; r < grp->n; r++) {
                        int one = fact->labels[r] > 0.5f;
                        if (held_out(grp->example[r]))
                            test_ones += one;
                        else
                            one ? ones++ : zeros++;
                    }
                    double p = (double)test_ones / t->test[f];
                    c->chance = ones > zeros ? p : 1.0 - p;
                }
            }
            ridge_basis_free(&rb);
        }
    }
    for (int g = 0; g < data->num_groups; g++) free(perms[g]);
    return 0;
}

int probe_set_random_control(ProbeTable *t, const ProbeTable *other) {
    if (other->layers != t->layers || other->num_facts != t->num_facts)
        return pf_fail("probe: the random model's table has another shape");
    for (size_t i = 0; i < (size_t)t->layers * t->num_facts; i++) t->cells[i].random = other->cells[i].score;
    return 0;
}

void probe_table_free(ProbeTable *t) {
    free(t->names);
    free(t->binary);
    free(t->train);
    free(t->test);
    free(t->cells);
    memset(t, 0, sizeof(*t));
}

ProbeCell *probe_cell(const ProbeTable *t, int layer, int fact) { return &t->cells[(size_t)layer * t->num_facts + fact]; }

int probe_fact_index(const ProbeTable *t, const char *name) {
    for (int f = 0; f < t->num_facts; f++)
        if (strcmp(t->names[f], name) == 0) return f;
    return -1;
}

// ---------------------------------------------------------------------------------------------
// Facts of the model of SPEC §3

int probe_collect_model(ProbeData *data, const Model *model, const char *set_name, const DataConfig *cfg,
                        uint64_t seed, long count, int batch) {
    DataSet set;
    if (dataset_lookup(&set, set_name, cfg) != 0) return -1;
    if (count < 5) return pf_fail("probe: at least 5 examples are needed (got %ld)", count);
    const ModelConfig *mc = &model->config;
    int T = mc->seq_len, C = mc->d_model, L = mc->n_layers;
    Example *examples = mallocCheck((size_t)count * sizeof(Example));
#pragma omp parallel for schedule(static)
    for (long i = 0; i < count; i++) dataset_sample_keyed(&examples[i], &set, cfg, seed, 0, (uint64_t)i);
    long edges = 0;
    for (long i = 0; i < count; i++) edges += examples[i].graph.num_edges;

    probe_data_init(data, L + 1, C);
    int ge = probe_add_group(data, "edge tokens", edges), gt = probe_add_group(data, "target token", count);
    int f_du = probe_add_fact(data, "dist_u", ge, 0), f_dv = probe_add_fact(data, "dist_v", ge, 0);
    int f_within = data->num_facts;
    for (int k = 1; k <= L && data->num_facts < PROBE_MAX_FACTS - 1; k++) {
        char name[32];
        snprintf(name, sizeof(name), "within_%d", k);
        probe_add_fact(data, name, ge, 1);
    }
    int num_within = data->num_facts - f_within;
    int f_dt = probe_add_fact(data, "dist_t", gt, 0);

    Capture cap;
    capture_create(&cap, mc, batch);
    Batch b;
    batch_alloc(&b, batch, T);
    long edge_row = 0;
    ProbeGroup *E = &data->groups[ge], *G = &data->groups[gt];
    for (long first = 0; first < count; first += batch) {
        int B = (int)(count - first < batch ? count - first : batch);
        for (int i = 0; i < B; i++) batch_encode(&b, i, &examples[first + i], cfg);
        capture_forward(&cap, model, b.tokens, B, NULL, 0, 0);
        for (int i = 0; i < B; i++) {
            const Example *ex = &examples[first + i];
            int dist[PF_MAX_VERTICES + 1], parent[PF_MAX_VERTICES + 1];
            graph_bfs(&ex->graph, cfg, dist, parent);
            long row = first + i;
            G->example[row] = row;
            data->facts[f_dt].labels[row] = (float)ex->label;
            for (int l = 0; l <= L; l++)
                memcpy(G->states + ((size_t)l * G->n + row) * C, capture_state(&cap, l, i, T - 1), C * sizeof(float));
            for (int e = 0; e < ex->graph.num_edges; e++, edge_row++) {
                int u = ex->graph.edges[e][0], v = ex->graph.edges[e][1];
                E->example[edge_row] = row;
                data->facts[f_du].labels[edge_row] = (float)dist[u];
                data->facts[f_dv].labels[edge_row] = (float)dist[v];
                for (int k = 1; k <= num_within; k++) data->facts[f_within + k - 1].labels[edge_row] = dist[u] <= k;
                for (int l = 0; l <= L; l++)
                    memcpy(E->states + ((size_t)l * E->n + edge_row) * C, capture_state(&cap, l, i, e),
                           C * sizeof(float));
            }
        }
    }
    batch_free(&b);
    capture_free(&cap);
    free(examples);
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Output

int probe_write_csv(const ProbeTable *t, const char *path) {
    size_t cap = 256 + (size_t)t->layers * t->num_facts * 160, len = 0;
    char *text = mallocCheck(cap);
    len += (size_t)snprintf(text + len, cap - len, "layer,fact,kind,n_train,n_test,score,shuffled,random,chance\n");
    for (int l = 0; l < t->layers; l++)
        for (int f = 0; f < t->num_facts; f++) {
            const ProbeCell *c = probe_cell(t, l, f);
            len += (size_t)snprintf(text + len, cap - len, "%d,%s,%s,%ld,%ld,%.6f,%.6f,%.6f,%.6f\n", l, t->names[f],
                                    t->binary[f] ? "accuracy" : "r2", t->train[f], t->test[f], c->score, c->shuffled,
                                    c->random, c->chance);
        }
    int rc = pf_write_file_atomic(path, text, len);
    free(text);
    return rc;
}

static void add_number(cJSON *obj, const char *key, double value) {
    if (isnan(value))
        cJSON_AddNullToObject(obj, key);
    else
        cJSON_AddNumberToObject(obj, key, value);
}

cJSON *probe_to_json(const ProbeTable *t) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddNumberToObject(root, "layers", t->layers);
    cJSON *facts = cJSON_AddArrayToObject(root, "facts");
    for (int f = 0; f < t->num_facts; f++) {
        cJSON *fact = cJSON_CreateObject();
        cJSON_AddStringToObject(fact, "name", t->names[f]);
        cJSON_AddStringToObject(fact, "kind", t->binary[f] ? "accuracy" : "r2");
        cJSON_AddNumberToObject(fact, "n_train", (double)t->train[f]);
        cJSON_AddNumberToObject(fact, "n_test", (double)t->test[f]);
        cJSON *cells = cJSON_AddArrayToObject(fact, "by_layer");
        for (int l = 0; l < t->layers; l++) {
            const ProbeCell *c = probe_cell(t, l, f);
            cJSON *cell = cJSON_CreateObject();
            cJSON_AddNumberToObject(cell, "layer", l);
            add_number(cell, "score", c->score);
            add_number(cell, "shuffled", c->shuffled);
            add_number(cell, "random", c->random);
            add_number(cell, "chance", c->chance);
            cJSON_AddItemToArray(cells, cell);
        }
        cJSON_AddItemToArray(facts, fact);
    }
    return root;
}

cJSON *probe_heatmap_spec(const ProbeTable *t, const char *title) {
    cJSON *spec = cJSON_CreateObject();
    cJSON_AddStringToObject(spec, "$schema", "https://vega.github.io/schema/vega-lite/v6.json");
    if (title) cJSON_AddStringToObject(spec, "title", title);
    cJSON *values = cJSON_CreateArray(), *order = cJSON_CreateArray();
    for (int f = 0; f < t->num_facts; f++) cJSON_AddItemToArray(order, cJSON_CreateString(t->names[f]));
    for (int l = 0; l < t->layers; l++)
        for (int f = 0; f < t->num_facts; f++) {
            const ProbeCell *c = probe_cell(t, l, f);
            cJSON *v = cJSON_CreateObject();
            cJSON_AddNumberToObject(v, "layer", l);
            cJSON_AddStringToObject(v, "fact", t->names[f]);
            cJSON_AddStringToObject(v, "kind", t->binary[f] ? "accuracy" : "R^2");
            add_number(v, "score", c->score);
            add_number(v, "shuffled", c->shuffled);
            add_number(v, "random", c->random);
            add_number(v, "chance", c->chance);
            cJSON_AddItemToArray(values, v);
        }
    cJSON_AddItemToObject(cJSON_AddObjectToObject(spec, "data"), "values", values);
    cJSON_AddNumberToObject(spec, "width", 28 * t->num_facts);
    cJSON_AddNumberToObject(spec, "height", 22 * t->layers);
    cJSON *enc = cJSON_AddObjectToObject(spec, "encoding");
    cJSON *x = cJSON_AddObjectToObject(enc, "x");
    cJSON_AddStringToObject(x, "field", "fact");
    cJSON_AddStringToObject(x, "type", "nominal");
    cJSON_AddItemToObject(x, "sort", order);
    cJSON_AddStringToObject(x, "title", "fact");
    cJSON *y = cJSON_AddObjectToObject(enc, "y");
    cJSON_AddStringToObject(y, "field", "layer");
    cJSON_AddStringToObject(y, "type", "ordinal");
    cJSON_AddStringToObject(y, "title", "layer (0: embedding)");
    cJSON *tooltip = cJSON_AddArrayToObject(enc, "tooltip");
    const char *fields[] = {"fact", "layer", "kind", "score", "shuffled", "random", "chance"};
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        cJSON *ch = cJSON_CreateObject();
        cJSON_AddStringToObject(ch, "field", fields[i]);
        cJSON_AddStringToObject(ch, "type", i < 3 && i != 1 ? "nominal" : "quantitative");
        if (i >= 3) cJSON_AddStringToObject(ch, "format", ".3f");
        cJSON_AddItemToArray(tooltip, ch);
    }
    cJSON *layers = cJSON_AddArrayToObject(spec, "layer");
    cJSON *rect = cJSON_CreateObject();
    cJSON_AddStringToObject(cJSON_AddObjectToObject(rect, "mark"), "type", "rect");
    cJSON *color = cJSON_AddObjectToObject(cJSON_AddObjectToObject(rect, "encoding"), "color");
    cJSON_AddStringToObject(color, "field", "score");
    cJSON_AddStringToObject(color, "type", "quantitative");
    cJSON_AddStringToObject(color, "title", "held-out accuracy / R^2");
    cJSON *scale = cJSON_AddObjectToObject(color, "scale");
    cJSON *domain = cJSON_AddArrayToObject(scale, "domain");
    cJSON_AddItemToArray(domain, cJSON_CreateNumber(0));
    cJSON_AddItemToArray(domain, cJSON_CreateNumber(1));
    cJSON_AddStringToObject(scale, "scheme", "viridis");
    cJSON_AddTrueToObject(scale, "clamp");
    cJSON_AddItemToArray(layers, rect);
    cJSON *text = cJSON_CreateObject();
    cJSON *tmark = cJSON_AddObjectToObject(text, "mark");
    cJSON_AddStringToObject(tmark, "type", "text");
    cJSON_AddNumberToObject(tmark, "fontSize", 8);
    cJSON *tenc = cJSON_AddObjectToObject(text, "encoding");
    cJSON *ttext = cJSON_AddObjectToObject(tenc, "text");
    cJSON_AddStringToObject(ttext, "field", "score");
    cJSON_AddStringToObject(ttext, "type", "quantitative");
    cJSON_AddStringToObject(ttext, "format", ".2f");
    cJSON *tcolor = cJSON_AddObjectToObject(tenc, "color");
    cJSON_AddStringToObject(tcolor, "value", "white");
    cJSON_AddItemToArray(layers, text);
    return spec;
}
