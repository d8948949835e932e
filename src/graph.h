// Random graphs, BFS distances and shortest paths, the three samplers of SPEC §2 and the named
// data sets. Every constant of the published setup is a field of DataConfig.
#ifndef PATHFORMER_GRAPH_H
#define PATHFORMER_GRAPH_H

#include <stdint.h>

#include "rng.h"

#define PF_MAX_VERTICES 63   // hard bound on max_v (vertex ids and labels fit the token vocabulary)
#define PF_MAX_EDGES 256     // hard bound on edges per graph (max_v * edges_per_vertex)

typedef struct {
    int min_v;             // smallest graph (published 3)
    int max_v;             // largest graph; also the "unreachable" label (published 15)
    int max_tune_v;        // largest fine-tuning graph and largest "small" target (published 7)
    int edges_per_vertex;  // candidate edges drawn per vertex: 2n*k ids paired into n*k edges (published 1)
    int pretrain_long;     // pretrain: distances >= this are always accepted (published 6)
    int onpath_short;      // tune: distances < this are thinned (published 4)
} DataConfig;

// The published defaults.
DataConfig data_config_default(void);
// Checks the settings are consistent; 0 or -1 with the error set.
int data_config_validate(const DataConfig *cfg);
// Tokens per example: one per possible edge, plus the target pair.
int data_config_seq_len(const DataConfig *cfg);
// Token vocabulary: 0 = PAD, 1..max_v = vertices, max_v + 1 = TARGET.
static inline int data_config_vocab(const DataConfig *cfg) { return cfg->max_v + 2; }

typedef struct {
    int n;                             // vertices 1..n
    int num_edges;                     // edges kept (self-loops dropped, duplicates kept)
    uint8_t edges[PF_MAX_EDGES][2];    // (min, max) in draw order
    uint64_t adjacency[PF_MAX_VERTICES + 1];  // bit v of adjacency[u]: u and v are neighbours
} Graph;

typedef struct {
    Graph graph;
    int target;   // vertex t whose distance from 1 is asked
    int label;    // dist(1, t), or max_v when unreachable
} Example;



// Draws a graph on n vertices (SPEC §2: 2n*k ids paired in order, self-loops dropped).
void graph_random(Graph *g, int n, const DataConfig *cfg, Rng *rng);
// Builds a graph from an explicit edge list (used by predict); 0 or -1 with the error set
// (vertex ids out of 1..max_v, too many edges).
int graph_from_edges(Graph *g, const int (*edges)[2], int num_edges, const DataConfig *cfg);
// BFS from vertex 1: dist[v] for v in 1..max_v (max_v when unreachable or v > n),
// parent[v] the vertex that first discovered v (0 for vertex 1 and for unreachable ones).
// Neighbours are visited in increasing order.
void graph_bfs(const Graph *g, const DataConfig *cfg, int *dist, int *parent);

typedef enum {
    SAMPLER_PRETRAIN,
    SAMPLER_ONPATH,
    SAMPLER_ANY,
} SamplerKind;

typedef struct {
    const char *name;
    SamplerKind kind;
    int n_lo, n_hi;          // graph size range (inclusive)
    int large_target;        // onpath: allow on-path targets above max_tune_v
    int t_lo, t_hi;          // any: target range (inclusive)
    int thin_short;          // onpath: apply the short-distance thinning (small-graph range only)
} DataSet;

// The samplers' acceptance rules, exposed so the tests can check the output distributions.
// pretrain: probability that a graph with dist(1, 2) = d (max_v when unreachable) is kept.
double pretrain_accept_probability(int d, const DataConfig *cfg);
// onpath: probability that a graph with a reachable dist(1, 2) = d survives the short-path thinning.
double onpath_keep_probability(int d, const DataSet *set, const DataConfig *cfg);

// The named data sets of SPEC §2, resolved against cfg. Returns 0 or -1 with the error set
// (unknown name). Names: pretrain, tune, onpath-small-target, onpath-large-target, any-small,
// any-large-small-target, any-large-large-target.
int dataset_lookup(DataSet *out, const char *name, const DataConfig *cfg);
// The list of names, NULL-terminated.
extern const char *const DATASET_NAMES[];

// Draws one accepted example from the data set with the given stream.
void dataset_sample(Example *ex, const DataSet *set, const DataConfig *cfg, Rng *rng);
// Draws example `index` of step `step` for `seed`: the same triple gives the same example.
void dataset_sample_keyed(Example *ex, const DataSet *set, const DataConfig *cfg, uint64_t seed,
                          uint64_t step, uint64_t index);

#endif
