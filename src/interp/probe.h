// Linear probes: ridge regression in closed form from a layer's token states to a fact about the
// graph, fitted on one part of the examples and scored on the rest (held out by example, so no
// graph is in both parts). A binary fact is scored by accuracy (prediction > 0.5), a number by R^2.
// Two controls per cell: the same probe fitted on shuffled labels (what the probe alone can fit),
// and, filled in by the caller, the same probe on a randomly initialized model's states.
//
// The data are model-agnostic: groups of token states (the edge tokens, the target token; or the
// BFS model's vertex tokens and answer token) over layers 0..L, each with its facts' labels.
#ifndef PATHFORMER_INTERP_PROBE_H
#define PATHFORMER_INTERP_PROBE_H

#include <stdint.h>

#include <cjson/cJSON.h>

#include "graph.h"
#include "model.h"

#define PROBE_MAX_GROUPS 2
#define PROBE_MAX_FACTS 72

typedef struct {
    char name[32];
    long n;            // token states in the group
    float *states;     // (layers, n, dim)
    int64_t *example;  // (n) the example each state belongs to (decides the split)
} ProbeGroup;

typedef struct {
    char name[32];     // e.g. dist_u, within_3, dist_t
    int group;
    int binary;        // 0/1 labels scored by accuracy; else a number scored by R^2
    float *labels;     // (group's n)
} ProbeFact;

typedef struct {
    int layers, dim;   // layers: states per token (L + 1: the input, then each layer's output)
    int num_groups, num_facts;
    ProbeGroup groups[PROBE_MAX_GROUPS];
    ProbeFact facts[PROBE_MAX_FACTS];
} ProbeData;

// Sets the sizes; groups and facts are added with probe_add_group / probe_add_fact.
void probe_data_init(ProbeData *data, int layers, int dim);
// A group of n states (allocated, to be filled); returns its index.
int probe_add_group(ProbeData *data, const char *name, long n);
// A fact of a group (labels allocated, to be filled); returns its index.
int probe_add_fact(ProbeData *data, const char *name, int group, int binary);
void probe_data_free(ProbeData *data);

typedef struct {
    double score;      // held-out accuracy (binary) or R^2
    double shuffled;   // the same probe fitted on shuffled training labels
    double random;     // the same probe on a random model's states (NaN until set)
    double chance;     // binary: accuracy of always answering the training majority; numbers: 0
} ProbeCell;

typedef struct {
    int layers, num_facts;
    char (*names)[32];  // (num_facts)
    int *binary;        // (num_facts)
    long *train, *test; // (num_facts) sizes of the two parts
    ProbeCell *cells;   // (layers, num_facts)
} ProbeTable;

// Fits and scores every layer x fact. `ridge` is relative: the penalty is ridge times the mean
// diagonal of the (centred) Gram matrix. Examples whose index is 4 mod 5 are held out. `seed`
// drives the shuffle. 0 or -1 with the error set (a group too small to split).
int probe_run(ProbeTable *table, const ProbeData *data, double ridge, uint64_t seed);
// Copies another table's scores (same facts and layers) into this one's random-model control.
int probe_set_random_control(ProbeTable *table, const ProbeTable *random_model);
void probe_table_free(ProbeTable *table);
ProbeCell *probe_cell(const ProbeTable *table, int layer, int fact);
int probe_fact_index(const ProbeTable *table, const char *name);

// The graph facts of the model of SPEC §3 on a named data set: for each edge token (u, v) (u < v),
// dist_u and dist_v (dist(1, .), the unreachable label max_v) and within_k = [dist(1, u) <= k] for
// k = 1..L; for the target token, dist_t. Token states from capture.h's forward over `count`
// examples (seed, in batches of `batch`). 0 or -1 with the error set.
int probe_collect_model(ProbeData *data, const Model *model, const char *set_name, const DataConfig *data_cfg,
                        uint64_t seed, long count, int batch);

// The table as CSV (layer, fact, kind, n_train, n_test, score, shuffled, random, chance), JSON,
// and a Vega-Lite heatmap (layer x fact, colour = score) with the controls in its tooltip.
int probe_write_csv(const ProbeTable *table, const char *path);
cJSON *probe_to_json(const ProbeTable *table);
cJSON *probe_heatmap_spec(const ProbeTable *table, const char *title);

#endif
