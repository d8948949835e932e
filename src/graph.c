// Random graphs, BFS and the samplers of SPEC §2. Graphs are adjacency bitmasks (max_v <= 63), so
// BFS expands a whole frontier with a few ORs; the samplers draw graphs until their rule accepts.
#include "graph.h"

#include <stdio.h>
#include <string.h>

#include "common.h"

DataConfig data_config_default(void) {
    DataConfig cfg = {
        .min_v = 3,
        .max_v = 15,
        .max_tune_v = 7,
        .edges_per_vertex = 1,
        .pretrain_long = 6,
        .onpath_short = 4,
    };
    return cfg;
}

int data_config_validate(const DataConfig *cfg) {
    if (cfg->min_v < 2) return pf_fail("min_v must be at least 2 (got %d)", cfg->min_v);
    if (cfg->max_tune_v < cfg->min_v)
        return pf_fail("max_tune_v (%d) must be at least min_v (%d)", cfg->max_tune_v, cfg->min_v);
    if (cfg->max_v < cfg->max_tune_v)
        return pf_fail("max_v (%d) must be at least max_tune_v (%d)", cfg->max_v, cfg->max_tune_v);
    if (cfg->max_v > PF_MAX_VERTICES)
        return pf_fail("max_v must be at most %d (got %d)", PF_MAX_VERTICES, cfg->max_v);
    if (cfg->edges_per_vertex < 1)
        return pf_fail("edges_per_vertex must be at least 1 (got %d)", cfg->edges_per_vertex);
    if (cfg->edges_per_vertex > PF_MAX_EDGES / cfg->max_v)
        return pf_fail("max_v * edges_per_vertex must be at most %d (got %d * %d)", PF_MAX_EDGES,
                       cfg->max_v, cfg->edges_per_vertex);
    if (cfg->pretrain_long < 1 || cfg->pretrain_long > cfg->max_v)
        return pf_fail("pretrain_long must be in 1..max_v = 1..%d (got %d)", cfg->max_v,
                       cfg->pretrain_long);
    if (cfg->onpath_short < 1 || cfg->onpath_short > cfg->max_v)
        return pf_fail("onpath_short must be in 1..max_v = 1..%d (got %d)", cfg->max_v,
                       cfg->onpath_short);
    return 0;
}

int data_config_seq_len(const DataConfig *cfg) { return cfg->max_v * cfg->edges_per_vertex + 1; }

// Adjacency is cleared up to max_v (not just n) so that every id a caller may ask about is valid.
static void graph_clear(Graph *g, int n, const DataConfig *cfg) {
    g->n = n;
    g->num_edges = 0;
    memset(g->adjacency, 0, (size_t)(cfg->max_v + 1) * sizeof(g->adjacency[0]));
}

static inline void graph_add_edge(Graph *g, int u, int v) {
    if (u > v) {
        int tmp = u;
        u = v;
        v = tmp;
    }
    g->edges[g->num_edges][0] = (uint8_t)u;
    g->edges[g->num_edges][1] = (uint8_t)v;
    g->num_edges++;
    g->adjacency[u] |= 1ULL << v;
    g->adjacency[v] |= 1ULL << u;
}

void graph_random(Graph *g, int n, const DataConfig *cfg, Rng *rng) {
    graph_clear(g, n, cfg);
    int candidates = n * cfg->edges_per_vertex;
    for (int i = 0; i < candidates; i++) {
        int u = rng_range(rng, 1, n);
        int v = rng_range(rng, 1, n);
        if (u != v) graph_add_edge(g, u, v);
    }
}

int graph_from_edges(Graph *g, const int (*edges)[2], int num_edges, const DataConfig *cfg) {
    int max_edges = cfg->max_v * cfg->edges_per_vertex;
    if (num_edges < 0) return pf_fail("negative edge count %d", num_edges);
    if (num_edges > max_edges)
        return pf_fail("too many edges: %d (at most %d)", num_edges, max_edges);
    for (int i = 0; i < num_edges; i++) {
        for (int j = 0; j < 2; j++) {
            if (edges[i][j] < 1 || edges[i][j] > cfg->max_v)
                return pf_fail("edge %d: vertex %d out of range 1..%d", i + 1, edges[i][j], cfg->max_v);
        }
        if (edges[i][0] == edges[i][1])
            return pf_fail("edge %d: self-loop (%d,%d)", i + 1, edges[i][0], edges[i][1]);
    }
    // The number of vertices is not known from an edge list; max_v lets BFS reach every id.
    graph_clear(g, cfg->max_v, cfg);
    for (int i = 0; i < num_edges; i++) graph_add_edge(g, edges[i][0], edges[i][1]);
    return 0;
}

void graph_bfs(const Graph *g, const DataConfig *cfg, int *dist, int *parent) {
    for (int v = 0; v <= cfg->max_v; v++) {
        dist[v] = cfg->max_v;
        parent[v] = 0;
    }
    int queue[PF_MAX_VERTICES + 1];
    int head = 0, tail = 0;
    uint64_t visited = 1ULL << 1;
    dist[1] = 0;
    queue[tail++] = 1;
    while (head < tail) {
        int u = queue[head++];
        // Lowest bit first: neighbours are discovered in increasing order.
        for (uint64_t fresh = g->adjacency[u] & ~visited; fresh; fresh &= fresh - 1) {
            int v = __builtin_ctzll(fresh);
            dist[v] = dist[u] + 1;
            parent[v] = u;
            queue[tail++] = v;
        }
        visited |= g->adjacency[u];
    }
}

// dist(1, t), or max_v when unreachable; expands whole BFS levels as bitmasks and stops at t.
static int graph_distance_from_1(const Graph *g, int t, const DataConfig *cfg) {
    if (t > g->n) return cfg->max_v;
    uint64_t goal = 1ULL << t;
    uint64_t visited = 1ULL << 1, frontier = 1ULL << 1;
    for (int d = 0; frontier; d++) {
        if (frontier & goal) return d;
        uint64_t next = 0;
        for (uint64_t f = frontier; f; f &= f - 1) next |= g->adjacency[__builtin_ctzll(f)];
        frontier = next & ~visited;
        visited |= frontier;
    }
    return cfg->max_v;
}

double pretrain_accept_probability(int d, const DataConfig *cfg) {
    if (d >= cfg->max_v) return 1.0 / cfg->max_v;
    if (d >= cfg->pretrain_long) return 1.0;
    return 1.0 / (2.0 * (cfg->pretrain_long - d));
}

double onpath_keep_probability(int d, const DataSet *set, const DataConfig *cfg) {
    if (!set->thin_short || d >= cfg->onpath_short) return 1.0;
    return 1.0 / (3.0 * (cfg->onpath_short - d));
}

// True with probability p; draws a number only when the outcome is in doubt.
static inline int rng_accept(Rng *rng, double p) { return p >= 1.0 || rng_uniform(rng) < p; }

static void sample_pretrain(Example *ex, const DataSet *set, const DataConfig *cfg, Rng *rng) {
    int n = rng_range(rng, set->n_lo, set->n_hi);
    int d;
    do {
        graph_random(&ex->graph, n, cfg, rng);
        d = graph_distance_from_1(&ex->graph, 2, cfg);
    } while (!rng_accept(rng, pretrain_accept_probability(d, cfg)));
    ex->target = 2;
    ex->label = d;
}

// k in 1..d with probability k / (d (d + 1) / 2).
static int pick_proportional(Rng *rng, int d) {
    int r = (int)rng_below(rng, (uint32_t)(d * (d + 1) / 2));
    int k = 1;
    while (r >= k) {
        r -= k;
        k++;
    }
    return k;
}

static void sample_onpath(Example *ex, const DataSet *set, const DataConfig *cfg, Rng *rng) {
    int n = rng_range(rng, set->n_lo, set->n_hi);
    int dist[PF_MAX_VERTICES + 1], parent[PF_MAX_VERTICES + 1];
    for (;;) {
        graph_random(&ex->graph, n, cfg, rng);
        // The cheap level search rejects unreachable graphs before the full BFS.
        int d = graph_distance_from_1(&ex->graph, 2, cfg);
        if (d >= cfg->max_v) continue;
        if (!rng_accept(rng, onpath_keep_probability(d, set, cfg))) continue;
        int k = pick_proportional(rng, d);
        graph_bfs(&ex->graph, cfg, dist, parent);
        int target = 2;
        for (int i = d; i > k; i--) target = parent[target];
        if (!set->large_target && target > cfg->max_tune_v) continue;
        ex->target = target;
        ex->label = k;
        return;
    }
}

static void sample_any(Example *ex, const DataSet *set, const DataConfig *cfg, Rng *rng) {
    int n = rng_range(rng, set->n_lo, set->n_hi);
    int target = rng_range(rng, set->t_lo, set->t_hi);
    graph_random(&ex->graph, n, cfg, rng);
    ex->target = target;
    ex->label = graph_distance_from_1(&ex->graph, target, cfg);
}

void dataset_sample(Example *ex, const DataSet *set, const DataConfig *cfg, Rng *rng) {
    switch (set->kind) {
    case SAMPLER_PRETRAIN: sample_pretrain(ex, set, cfg, rng); break;
    case SAMPLER_ONPATH: sample_onpath(ex, set, cfg, rng); break;
    case SAMPLER_ANY: sample_any(ex, set, cfg, rng); break;
    }
}

void dataset_sample_keyed(Example *ex, const DataSet *set, const DataConfig *cfg, uint64_t seed,
                          uint64_t step, uint64_t index) {
    Rng rng = rng_stream(seed, step, index);
    dataset_sample(ex, set, cfg, &rng);
}

const char *const DATASET_NAMES[] = {
    "pretrain",
    "tune",
    "onpath-small-target",
    "onpath-large-target",
    "any-small",
    "any-large-small-target",
    "any-large-large-target",
    NULL,
};

int dataset_lookup(DataSet *out, const char *name, const DataConfig *cfg) {
    int lo = cfg->min_v, hi = cfg->max_v, tune = cfg->max_tune_v;
    // name, sampler, n range, large_target, t range, thin_short (SPEC §2's table).
    const DataSet sets[] = {
        {DATASET_NAMES[0], SAMPLER_PRETRAIN, lo, hi, 0, 2, 2, 0},
        {DATASET_NAMES[1], SAMPLER_ONPATH, lo, tune, 0, 0, 0, 1},
        {DATASET_NAMES[2], SAMPLER_ONPATH, lo, hi, 0, 0, 0, 0},
        {DATASET_NAMES[3], SAMPLER_ONPATH, lo, hi, 1, 0, 0, 0},
        {DATASET_NAMES[4], SAMPLER_ANY, lo, tune, 0, 2, tune, 0},
        {DATASET_NAMES[5], SAMPLER_ANY, lo, hi, 0, 2, tune, 0},
        {DATASET_NAMES[6], SAMPLER_ANY, lo, hi, 0, 2, hi, 0},
    };
    for (size_t i = 0; i < sizeof(sets) / sizeof(sets[0]); i++) {
        if (strcmp(name, sets[i].name) == 0) {
            *out = sets[i];
            return 0;
        }
    }
    char known[256];
    size_t used = 0;
    known[0] = '\0';
    for (int i = 0; DATASET_NAMES[i] && used < sizeof(known); i++)
        used += (size_t)snprintf(known + used, sizeof(known) - used, "%s%s", i ? ", " : "",
                                 DATASET_NAMES[i]);
    return pf_fail("unknown data set '%s' (known: %s)", name, known);
}
