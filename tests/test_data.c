// Tests of graph sampling, BFS, the samplers and named data sets, token encoding and JSON Lines.
// Distances are checked against independent methods (Floyd–Warshall, a matrix BFS); acceptance
// rules are checked statistically against the exact rule applied to raw graph draws.
#include "testutil.h"

#include <math.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "batch.h"
#include "common.h"
#include "graph.h"

#define NV (PF_MAX_VERTICES + 1)
#define UNREACHABLE (-1)

// Scales a sample count down ~10x under the sanitizer build.
static long scaled(long count) { return test_under_sanitizer() ? count / 10 : count; }

// Adjacency matrix built from the edge list alone (not from the bitmasks under test).
static void matrix_from_edges(uint8_t adj[NV][NV], const Graph *g) {
    memset(adj, 0, sizeof(uint8_t) * NV * NV);
    for (int e = 0; e < g->num_edges; e++) {
        adj[g->edges[e][0]][g->edges[e][1]] = 1;
        adj[g->edges[e][1]][g->edges[e][0]] = 1;
    }
}

// Plain BFS over the matrix from `source`, scanning neighbours 1..num_ids in increasing order.
static void matrix_bfs(uint8_t adj[NV][NV], int num_ids, int source, int *dist, int *parent) {
    int queue[NV], head = 0, tail = 0;
    for (int v = 0; v < NV; v++) {
        dist[v] = UNREACHABLE;
        parent[v] = 0;
    }
    dist[source] = 0;
    queue[tail++] = source;
    while (head < tail) {
        int u = queue[head++];
        for (int v = 1; v <= num_ids; v++) {
            if (adj[u][v] && dist[v] == UNREACHABLE) {
                dist[v] = dist[u] + 1;
                parent[v] = u;
                queue[tail++] = v;
            }
        }
    }
}

// True distance from `source` to `t`, or max_v when unreachable.
static int true_distance(const Graph *g, int source, int t, const DataConfig *cfg) {
    uint8_t adj[NV][NV];
    int dist[NV], parent[NV];
    matrix_from_edges(adj, g);
    matrix_bfs(adj, cfg->max_v, source, dist, parent);
    return dist[t] == UNREACHABLE ? cfg->max_v : dist[t];
}

static void test_config_defaults_and_validation(void **state) {
    (void)state;
    DataConfig cfg = data_config_default();
    assert_int_equal(cfg.min_v, 3);
    assert_int_equal(cfg.max_v, 15);
    assert_int_equal(cfg.max_tune_v, 7);
    assert_int_equal(cfg.edges_per_vertex, 1);
    assert_int_equal(cfg.pretrain_long, 6);
    assert_int_equal(cfg.onpath_short, 4);
    assert_int_equal(data_config_seq_len(&cfg), 16);
    assert_int_equal(data_config_vocab(&cfg), 17);
    assert_int_equal(data_config_validate(&cfg), 0);

    struct {
        DataConfig cfg;
        const char *names;  // the setting the message must mention
    } bad[] = {
        {{1, 15, 7, 1, 6, 4}, "min_v"},
        {{8, 15, 7, 1, 6, 4}, "max_tune_v"},
        {{3, 6, 7, 1, 6, 4}, "max_v"},
        {{3, 64, 7, 1, 6, 4}, "max_v"},
        {{3, 15, 7, 0, 6, 4}, "edges_per_vertex"},
        {{3, 15, 7, 18, 6, 4}, "edges_per_vertex"},
        {{3, 15, 7, 1, 0, 4}, "pretrain_long"},
        {{3, 15, 7, 1, 16, 4}, "pretrain_long"},
        {{3, 15, 7, 1, 6, 0}, "onpath_short"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(data_config_validate(&bad[i].cfg), -1);
        const char *msg = pf_last_error();
        if (!strstr(msg, bad[i].names)) fail_msg("case %zu: message '%s' lacks '%s'", i, msg, bad[i].names);
        assert_null(strchr(msg, '\n'));
    }
    DataConfig big = {3, 63, 7, 4, 6, 4};  // 252 edges: the largest allowed shape
    assert_int_equal(data_config_validate(&big), 0);
    assert_int_equal(data_config_seq_len(&big), 253);
}

static void test_dataset_lookup(void **state) {
    (void)state;
    DataConfig cfg = data_config_default();
    DataSet set;
    int count = 0;
    for (int i = 0; DATASET_NAMES[i]; i++, count++) {
        assert_int_equal(dataset_lookup(&set, DATASET_NAMES[i], &cfg), 0);
        assert_string_equal(set.name, DATASET_NAMES[i]);
    }
    assert_int_equal(count, 7);

    assert_int_equal(dataset_lookup(&set, "tune", &cfg), 0);
    assert_int_equal(set.kind, SAMPLER_ONPATH);
    assert_int_equal(set.n_lo, 3);
    assert_int_equal(set.n_hi, 7);
    assert_int_equal(set.thin_short, 1);
    assert_int_equal(set.large_target, 0);
    assert_int_equal(dataset_lookup(&set, "any-large-small-target", &cfg), 0);
    assert_int_equal(set.kind, SAMPLER_ANY);
    assert_int_equal(set.n_hi, 15);
    assert_int_equal(set.t_lo, 2);
    assert_int_equal(set.t_hi, 7);

    assert_int_equal(dataset_lookup(&set, "pretrian", &cfg), -1);
    const char *msg = pf_last_error();
    assert_non_null(strstr(msg, "unknown data set 'pretrian'"));
    assert_non_null(strstr(msg, "pretrain, tune,"));
    assert_non_null(strstr(msg, "any-large-large-target"));
}

// graph_random follows SPEC §2 draw for draw: 2n ids from 1..n, paired in order, self-loops dropped.
static void test_graph_random_draw_order(void **state) {
    (void)state;
    DataConfig cfg = data_config_default();
    for (int k = 1; k <= 3; k++) {
        cfg.edges_per_vertex = k;
        for (int n = 2; n <= cfg.max_v; n++) {
            for (int trial = 0; trial < 200; trial++) {
                Rng rng = rng_stream(11, (uint64_t)n * 10 + (uint64_t)k, (uint64_t)trial);
                Rng replay = rng;
                Graph g;
                graph_random(&g, n, &cfg, &rng);
                assert_int_equal(g.n, n);
                int kept = 0;
                uint64_t adjacency[NV] = {0};
                for (int i = 0; i < n * k; i++) {
                    int u = rng_range(&replay, 1, n), v = rng_range(&replay, 1, n);
                    if (u == v) continue;
                    int a = u < v ? u : v, b = u < v ? v : u;
                    assert_true(kept < g.num_edges);
                    assert_int_equal(g.edges[kept][0], a);
                    assert_int_equal(g.edges[kept][1], b);
                    adjacency[a] |= 1ULL << b;
                    adjacency[b] |= 1ULL << a;
                    kept++;
                }
                assert_int_equal(g.num_edges, kept);
                for (int v = 0; v <= cfg.max_v; v++) assert_true(g.adjacency[v] == adjacency[v]);
                assert_true(rng.state == replay.state);  // no hidden extra draws
            }
        }
    }
}

// BFS distances against Floyd–Warshall, parents against a plain matrix BFS, on every size 3..15.
static void test_bfs_against_floyd_warshall(void **state) {
    (void)state;
    DataConfig cfg = data_config_default();
    long per_size = scaled(5000);
    long checked = 0;
    for (int n = cfg.min_v; n <= cfg.max_v; n++) {
        for (long trial = 0; trial < per_size; trial++) {
            Rng rng = rng_stream(3, (uint64_t)n, (uint64_t)trial);
            Graph g;
            graph_random(&g, n, &cfg, &rng);
            uint8_t adj[NV][NV];
            matrix_from_edges(adj, &g);

            int fw[NV][NV];
            const int inf = 1 << 20;
            for (int i = 1; i <= n; i++)
                for (int j = 1; j <= n; j++) fw[i][j] = i == j ? 0 : adj[i][j] ? 1 : inf;
            for (int m = 1; m <= n; m++)
                for (int i = 1; i <= n; i++)
                    for (int j = 1; j <= n; j++)
                        if (fw[i][m] + fw[m][j] < fw[i][j]) fw[i][j] = fw[i][m] + fw[m][j];

            int dist[NV], parent[NV], ref_dist[NV], ref_parent[NV];
            graph_bfs(&g, &cfg, dist, parent);
            matrix_bfs(adj, n, 1, ref_dist, ref_parent);
            assert_int_equal(dist[1], 0);
            assert_int_equal(parent[1], 0);
            for (int v = 1; v <= cfg.max_v; v++) {
                int expected = v <= n && fw[1][v] < inf ? fw[1][v] : cfg.max_v;
                if (dist[v] != expected)
                    fail_msg("n=%d trial=%ld: dist[%d] = %d, Floyd-Warshall says %d", n, trial, v,
                             dist[v], expected);
                if (v == 1) continue;
                if (expected == cfg.max_v) {
                    assert_int_equal(parent[v], 0);
                    continue;
                }
                // The parent is a neighbour one step closer, and the first discoverer.
                int p = parent[v];
                assert_true(p >= 1 && p <= n);
                assert_true(adj[p][v]);
                assert_int_equal(dist[p], dist[v] - 1);
                assert_int_equal(p, ref_parent[v]);
            }
            checked++;
        }
    }
    print_message("BFS checked on %ld graphs\n", checked);
}

// Counts from the sampler against expected probabilities: each bin with a usable expectation
// must lie within 5 standard deviations. rel_var[i] is the relative variance of expected[i]
// (it was estimated from raw draws); the sampling variance of the counts is added to it.
static void check_histogram(const char *what, const long *counts, const double *expected,
                            const double *rel_var, int bins, long total) {
    double worst = 0;
    for (int i = 0; i < bins; i++) {
        double mean = expected[i] * (double)total;
        if (mean < 30) continue;
        double var = mean * (1 - expected[i]) + mean * mean * rel_var[i];
        double z = ((double)counts[i] - mean) / sqrt(var);
        if (fabs(z) > fabs(worst)) worst = z;
        if (fabs(z) > 5)
            fail_msg("%s: bin %d has %ld, expected %.1f (z = %.2f)", what, i, counts[i], mean, z);
    }
    print_message("%s: largest deviation %.2f sigma\n", what, worst);
}

// pretrain at a fixed size: the label histogram must equal raw distance frequencies times the rule.
static void test_pretrain_acceptance(void **state) {
    (void)state;
    DataConfig cfg = data_config_default();
    const int sizes[] = {5, 9, 15};
    long raw_draws = scaled(1000000), samples = scaled(200000);
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        int n = sizes[s];
        long raw[NV] = {0};
        Rng rng = rng_stream(21, (uint64_t)n, 0);
        for (long i = 0; i < raw_draws; i++) {
            Graph g;
            graph_random(&g, n, &cfg, &rng);
            raw[true_distance(&g, 1, 2, &cfg)]++;
        }
        double expected[NV] = {0}, rel_var[NV] = {0}, norm = 0;
        for (int d = 1; d <= cfg.max_v; d++) {
            expected[d] = (double)raw[d] / (double)raw_draws * pretrain_accept_probability(d, &cfg);
            rel_var[d] = raw[d] ? 1.0 / (double)raw[d] : 0;
            norm += expected[d];
        }
        for (int d = 1; d <= cfg.max_v; d++) expected[d] /= norm;

        DataSet set = {"pretrain-fixed", SAMPLER_PRETRAIN, n, n, 0, 2, 2, 0};
        long counts[NV] = {0};
        for (long i = 0; i < samples; i++) {
            Example ex;
            dataset_sample_keyed(&ex, &set, &cfg, 5, (uint64_t)n, (uint64_t)i);
            assert_int_equal(ex.target, 2);
            assert_int_equal(ex.graph.n, n);
            counts[ex.label]++;
        }
        char what[64];
        snprintf(what, sizeof(what), "pretrain n=%d labels", n);
        check_histogram(what, counts, expected, rel_var, cfg.max_v + 1, samples);
    }
    assert_true(pretrain_accept_probability(1, &cfg) == 0.1);
    assert_true(pretrain_accept_probability(5, &cfg) == 0.5);
    assert_true(pretrain_accept_probability(6, &cfg) == 1.0);
    assert_true(pretrain_accept_probability(14, &cfg) == 1.0);
    assert_true(pretrain_accept_probability(15, &cfg) == 1.0 / 15);
}

// onpath with thinning at a fixed small size: the distance histogram follows raw frequencies of
// reachable distances times the thinning rule, and k given d is proportional to k.
static void test_onpath_thinning_and_k(void **state) {
    (void)state;
    DataConfig cfg = data_config_default();
    const int sizes[] = {4, 7};
    long raw_draws = scaled(1000000), samples = scaled(200000);
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        int n = sizes[s];
        DataSet set = {"tune-fixed", SAMPLER_ONPATH, n, n, 0, 0, 0, 1};
        long raw[NV] = {0};
        Rng rng = rng_stream(22, (uint64_t)n, 0);
        for (long i = 0; i < raw_draws; i++) {
            Graph g;
            graph_random(&g, n, &cfg, &rng);
            raw[true_distance(&g, 1, 2, &cfg)]++;
        }
        double expected[NV] = {0}, rel_var[NV] = {0}, norm = 0;
        for (int d = 1; d < cfg.max_v; d++) {
            expected[d] = (double)raw[d] / (double)raw_draws * onpath_keep_probability(d, &set, &cfg);
            rel_var[d] = raw[d] ? 1.0 / (double)raw[d] : 0;
            norm += expected[d];
        }
        for (int d = 1; d < cfg.max_v; d++) expected[d] /= norm;

        long counts[NV] = {0}, joint[NV][NV] = {{0}};
        for (long i = 0; i < samples; i++) {
            Example ex;
            dataset_sample_keyed(&ex, &set, &cfg, 6, (uint64_t)n, (uint64_t)i);
            int d = true_distance(&ex.graph, 1, 2, &cfg);
            assert_true(d < cfg.max_v);
            counts[d]++;
            joint[d][ex.label]++;
        }
        char what[64];
        snprintf(what, sizeof(what), "tune n=%d distances", n);
        check_histogram(what, counts, expected, rel_var, cfg.max_v, samples);

        for (int d = 1; d < n; d++) {
            double k_expected[NV] = {0}, zero[NV] = {0};
            for (int k = 1; k <= d; k++) k_expected[k] = 2.0 * k / (d * (d + 1.0));
            snprintf(what, sizeof(what), "tune n=%d k given d=%d", n, d);
            check_histogram(what, joint[d], k_expected, zero, d + 1, counts[d]);
        }
    }
    DataSet thin = {"t", SAMPLER_ONPATH, 3, 7, 0, 0, 0, 1}, plain = thin;
    plain.thin_short = 0;
    assert_true(onpath_keep_probability(1, &thin, &cfg) == 1.0 / 9);
    assert_true(onpath_keep_probability(2, &thin, &cfg) == 1.0 / 6);
    assert_true(onpath_keep_probability(3, &thin, &cfg) == 1.0 / 3);
    assert_true(onpath_keep_probability(4, &thin, &cfg) == 1.0);
    assert_true(onpath_keep_probability(1, &plain, &cfg) == 1.0);
}

// For large_target sets nothing is rejected after k is picked, so k given d is exactly ∝ k.
static void test_onpath_large_target_k(void **state) {
    (void)state;
    DataConfig cfg = data_config_default();
    DataSet set;
    assert_int_equal(dataset_lookup(&set, "onpath-large-target", &cfg), 0);
    long samples = scaled(300000);
    long counts[NV] = {0}, joint[NV][NV] = {{0}};
    for (long i = 0; i < samples; i++) {
        Example ex;
        dataset_sample_keyed(&ex, &set, &cfg, 8, 0, (uint64_t)i);
        int d = true_distance(&ex.graph, 1, 2, &cfg);
        counts[d]++;
        joint[d][ex.label]++;
    }
    for (int d = 1; d < cfg.max_v; d++) {
        double k_expected[NV] = {0}, zero[NV] = {0};
        for (int k = 1; k <= d; k++) k_expected[k] = 2.0 * k / (d * (d + 1.0));
        char what[64];
        snprintf(what, sizeof(what), "onpath-large-target k given d=%d", d);
        check_histogram(what, joint[d], k_expected, zero, d + 1, counts[d]);
    }
}

// Every on-path target lies on a shortest 1→2 path, is p_k of the BFS-parent path, and has label k.
static void test_onpath_targets_on_shortest_path(void **state) {
    (void)state;
    DataConfig cfg = data_config_default();
    const char *names[] = {"tune", "onpath-small-target", "onpath-large-target"};
    long samples = scaled(30000);
    for (size_t s = 0; s < 3; s++) {
        DataSet set;
        assert_int_equal(dataset_lookup(&set, names[s], &cfg), 0);
        int max_target = 0;
        for (long i = 0; i < samples; i++) {
            Example ex;
            dataset_sample_keyed(&ex, &set, &cfg, 9, s, (uint64_t)i);
            int t = ex.target;
            assert_true(ex.graph.n >= set.n_lo && ex.graph.n <= set.n_hi);
            assert_true(t >= 1 && t <= ex.graph.n);
            int d12 = true_distance(&ex.graph, 1, 2, &cfg);
            int d1t = true_distance(&ex.graph, 1, t, &cfg);
            int dt2 = true_distance(&ex.graph, t, 2, &cfg);
            assert_true(d12 < cfg.max_v);
            if (d1t + dt2 != d12)
                fail_msg("%s #%ld: target %d is off the shortest path (%d + %d != %d)", names[s], i, t,
                         d1t, dt2, d12);
            assert_int_equal(ex.label, d1t);
            assert_true(ex.label >= 1);
            if (!set.large_target) assert_true(t <= cfg.max_tune_v);
            int dist[NV], parent[NV], v = 2;
            graph_bfs(&ex.graph, &cfg, dist, parent);
            for (int step = d12; step > ex.label; step--) v = parent[v];
            assert_int_equal(v, t);
            if (t > max_target) max_target = t;
        }
        if (set.large_target) assert_true(max_target > cfg.max_tune_v);
    }
}

static void test_any_sets(void **state) {
    (void)state;
    DataConfig cfg = data_config_default();
    const char *names[] = {"any-small", "any-large-small-target", "any-large-large-target"};
    long samples = scaled(30000);
    for (size_t s = 0; s < 3; s++) {
        DataSet set;
        assert_int_equal(dataset_lookup(&set, names[s], &cfg), 0);
        long target_counts[NV] = {0};
        for (long i = 0; i < samples; i++) {
            Example ex;
            dataset_sample_keyed(&ex, &set, &cfg, 10, s, (uint64_t)i);
            assert_true(ex.graph.n >= set.n_lo && ex.graph.n <= set.n_hi);
            assert_true(ex.target >= set.t_lo && ex.target <= set.t_hi);
            assert_int_equal(ex.label, true_distance(&ex.graph, 1, ex.target, &cfg));
            if (ex.target > ex.graph.n) assert_int_equal(ex.label, cfg.max_v);
            target_counts[ex.target]++;
        }
        for (int t = set.t_lo; t <= set.t_hi; t++) assert_true(target_counts[t] > 0);
    }
}

static void print_histogram(const char *name, const long *counts, int bins, long total) {
    char line[512];
    int used = snprintf(line, sizeof(line), "%-24s", name);
    for (int i = 0; i < bins && used < (int)sizeof(line); i++)
        used += snprintf(line + used, sizeof(line) - (size_t)used, " %4.1f", 100.0 * counts[i] / total);
    print_message("%s\n", line);
}

// The label distributions of the named sets have the shape SPEC §2 describes.
static void test_named_label_distributions(void **state) {
    (void)state;
    DataConfig cfg = data_config_default();
    long samples = scaled(200000);
    print_message("label %%  (columns: label 0..15)\n");
    for (int s = 0; DATASET_NAMES[s]; s++) {
        DataSet set;
        assert_int_equal(dataset_lookup(&set, DATASET_NAMES[s], &cfg), 0);
        long counts[NV] = {0};
        for (long i = 0; i < samples; i++) {
            Example ex;
            dataset_sample_keyed(&ex, &set, &cfg, 12, (uint64_t)s, (uint64_t)i);
            assert_true(ex.label >= 0 && ex.label <= cfg.max_v);
            counts[ex.label]++;
        }
        print_histogram(set.name, counts, cfg.max_v + 1, samples);
        double frac[NV];
        for (int d = 0; d <= cfg.max_v; d++) frac[d] = (double)counts[d] / samples;
        if (set.kind == SAMPLER_PRETRAIN) {
            // Thinning spreads the labels: no length dominates, lengths up to 8 are represented,
            // and unreachable is common.
            for (int d = 1; d <= 8; d++) assert_true(frac[d] > 0.002);
            for (int d = 1; d <= cfg.max_v; d++) assert_true(frac[d] < 0.3);
            assert_true(frac[cfg.max_v] > 0.1);
        } else if (set.kind == SAMPLER_ONPATH) {
            assert_int_equal(counts[0], 0);
            assert_int_equal(counts[cfg.max_v], 0);
            int longest = set.n_hi - 1;
            for (int d = longest + 1; d < cfg.max_v; d++) assert_int_equal(counts[d], 0);
            for (int d = 1; d <= 4; d++) assert_true(frac[d] > 0.01);
        } else {
            // Targets are never vertex 1, and many are unreachable.
            assert_int_equal(counts[0], 0);
            assert_true(frac[1] > 0.05);
            assert_true(frac[cfg.max_v] > 0.2);
        }
    }
}

static void fill_batch(Batch *batch, const DataSet *set, const DataConfig *cfg, int threads,
                       uint64_t seed) {
#ifdef _OPENMP
    omp_set_num_threads(threads);
#else
    (void)threads;
#endif
    batch_fill(batch, set, cfg, seed, 4, 1000);
}

static int batches_equal(const Batch *a, const Batch *b) {
    size_t rows = (size_t)a->B;
    return memcmp(a->tokens, b->tokens, rows * a->T * 2 * sizeof(int32_t)) == 0 &&
           memcmp(a->labels, b->labels, rows * sizeof(float)) == 0 &&
           memcmp(a->targets, b->targets, rows * sizeof(int32_t)) == 0;
}

// The same (seed, step, index) gives the same example whatever the thread count.
static void test_batch_fill_deterministic(void **state) {
    (void)state;
    DataConfig cfg = data_config_default();
    int B = (int)scaled(3001), T = data_config_seq_len(&cfg);
#ifdef _OPENMP
    int saved_threads = omp_get_max_threads();
#endif
    for (int s = 0; DATASET_NAMES[s]; s++) {
        DataSet set;
        assert_int_equal(dataset_lookup(&set, DATASET_NAMES[s], &cfg), 0);
        Batch one, two, three, other;
        batch_alloc(&one, B, T);
        batch_alloc(&two, B, T);
        batch_alloc(&three, B, T);
        batch_alloc(&other, B, T);
        fill_batch(&one, &set, &cfg, 1, 77);
        fill_batch(&two, &set, &cfg, 2, 77);
        fill_batch(&three, &set, &cfg, 3, 77);
        fill_batch(&other, &set, &cfg, 2, 78);
        assert_true(batches_equal(&one, &two));
        assert_true(batches_equal(&one, &three));
        assert_false(batches_equal(&one, &other));

        // Row b is example first + b of the keyed stream.
        Batch single;
        batch_alloc(&single, 1, T);
        for (int b = 0; b < B; b += 97) {
            Example ex;
            dataset_sample_keyed(&ex, &set, &cfg, 77, 4, 1000 + (uint64_t)b);
            batch_encode(&single, 0, &ex, &cfg);
            assert_memory_equal(single.tokens, one.tokens + (size_t)b * T * 2, (size_t)T * 2 * sizeof(int32_t));
            assert_true(single.labels[0] == one.labels[b]);
            assert_int_equal(single.targets[0], one.targets[b]);
        }
        batch_free(&single);
        batch_free(&one);
        batch_free(&two);
        batch_free(&three);
        batch_free(&other);
    }
#ifdef _OPENMP
    omp_set_num_threads(saved_threads);
#endif
}

// The blog's example: edges (1,3),(3,4),(2,4),(2,3), target 3, label 2.
static void test_token_encoding_blog_example(void **state) {
    (void)state;
    DataConfig cfg = data_config_default();
    int T = data_config_seq_len(&cfg);
    const int edges[][2] = {{1, 3}, {3, 4}, {2, 4}, {2, 3}};
    Example ex;
    assert_int_equal(graph_from_edges(&ex.graph, edges, 4, &cfg), 0);
    ex.target = 3;
    ex.label = 2;
    Batch batch;
    batch_alloc(&batch, 2, T);
    memset(batch.tokens, 0x7f, (size_t)2 * T * 2 * sizeof(int32_t));
    batch_encode(&batch, 1, &ex, &cfg);
    int32_t expected[32] = {1, 3, 3, 4, 2, 4, 2, 3};
    expected[30] = 3;
    expected[31] = 16;
    assert_memory_equal(batch.tokens + T * 2, expected, sizeof(expected));
    assert_true(batch.labels[1] == 2.0f);
    assert_int_equal(batch.targets[1], 3);
    batch_free(&batch);

    // Its true distances: 1 to the target 3 is one step; 1 to 2 (the blog's label) is two.
    int dist[NV], parent[NV];
    graph_bfs(&ex.graph, &cfg, dist, parent);
    assert_int_equal(dist[3], 1);
    assert_int_equal(dist[2], 2);
    assert_int_equal(parent[2], 3);
    assert_int_equal(dist[5], cfg.max_v);
}

static void test_jsonl_round_trip(void **state) {
    (void)state;
    DataConfig cfg = data_config_default();
    char *text = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&text, &size);
    assert_non_null(out);
    const int per_set = (int)scaled(2000);
    Example *originals = mallocCheck(7 * (size_t)per_set * sizeof(Example));
    int count = 0;
    for (int s = 0; DATASET_NAMES[s]; s++) {
        DataSet set;
        assert_int_equal(dataset_lookup(&set, DATASET_NAMES[s], &cfg), 0);
        for (int i = 0; i < per_set; i++) {
            dataset_sample_keyed(&originals[count], &set, &cfg, 13, (uint64_t)s, (uint64_t)i);
            example_write_jsonl(out, &originals[count]);
            count++;
        }
    }
    fclose(out);

    int parsed = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n"), parsed++) {
        assert_true(parsed < count);
        const Example *want = &originals[parsed];
        Example got;
        if (example_parse_jsonl(&got, line, &cfg) != 0) fail_msg("line %d: %s", parsed + 1, pf_last_error());
        assert_int_equal(got.graph.num_edges, want->graph.num_edges);
        assert_memory_equal(got.graph.edges, want->graph.edges, (size_t)want->graph.num_edges * 2);
        assert_int_equal(got.target, want->target);
        assert_int_equal(got.label, want->label);
    }
    assert_int_equal(parsed, count);
    free(text);
    free(originals);

    Example ex;
    const char *line = "{\"edges\": [[1,3],[3,4]], \"target\": 3, \"distance\": 2}";
    assert_int_equal(example_parse_jsonl(&ex, line, &cfg), 0);
    out = open_memstream(&text, &size);
    example_write_jsonl(out, &ex);
    fclose(out);
    assert_string_equal(text, "{\"edges\": [[1,3],[3,4]], \"target\": 3, \"distance\": 1}\n");
    free(text);

    // Edges are stored as (min, max); "distance" is ignored and recomputed; no edges is allowed.
    assert_int_equal(example_parse_jsonl(&ex, " {\"target\": 4, \"edges\": [[4,1]], \"distance\": 9}\n", &cfg), 0);
    assert_int_equal(ex.graph.edges[0][0], 1);
    assert_int_equal(ex.graph.edges[0][1], 4);
    assert_int_equal(ex.label, 1);
    assert_int_equal(example_parse_jsonl(&ex, "{\"edges\": [], \"target\": 2}", &cfg), 0);
    assert_int_equal(ex.label, cfg.max_v);
}

static void test_jsonl_rejects_malformed(void **state) {
    (void)state;
    DataConfig cfg = data_config_default();
    char too_many[1024];
    int used = snprintf(too_many, sizeof(too_many), "{\"edges\": [");
    for (int e = 0; e < 16; e++)
        used += snprintf(too_many + used, sizeof(too_many) - (size_t)used, "%s[1,2]", e ? "," : "");
    snprintf(too_many + used, sizeof(too_many) - (size_t)used, "], \"target\": 2}");
    struct {
        const char *line;
        const char *message;  // a part the error must contain
    } cases[] = {
        {"", "empty line"},
        {"   \n", "empty line"},
        {"this is not json", "not valid JSON"},
        {"{\"edges\": [[1,2]], \"target\": 2", "not valid JSON"},
        {"{\"edges\": [[1,2]], \"target\": 2} trailing", "not valid JSON"},
        {"[[1,2]]", "expected a JSON object"},
        {"{\"target\": 2}", "missing \"edges\""},
        {"{\"edges\": 5, \"target\": 2}", "\"edges\" must be an array"},
        {"{\"edges\": [[1,2,3]], \"target\": 2}", "edge 1: expected a pair"},
        {"{\"edges\": [[1,2],[3]], \"target\": 2}", "edge 2: expected a pair"},
        {"{\"edges\": [[1,2],7], \"target\": 2}", "edge 2: expected a pair"},
        {"{\"edges\": [[0,2]], \"target\": 2}", "edge 1: vertex 0 out of range 1..15"},
        {"{\"edges\": [[1,2],[3,4],[16,4]], \"target\": 2}", "edge 3: vertex 16 out of range 1..15"},
        {"{\"edges\": [[1.5,2]], \"target\": 2}", "edge 1: vertex 1.5 is not an integer"},
        {"{\"edges\": [[\"1\",2]], \"target\": 2}", "edge 1: vertex is not a number"},
        {"{\"edges\": [[3,3]], \"target\": 2}", "edge 1: self-loop"},
        {"{\"edges\": [[1,2]]}", "missing \"target\""},
        {"{\"edges\": [[1,2]], \"target\": 99}", "target: vertex 99 out of range 1..15"},
        {"{\"edges\": [[1,2]], \"target\": 0}", "target: vertex 0 out of range"},
        {"{\"edges\": [[1,2]], \"target\": 2.5}", "target: vertex 2.5 is not an integer"},
        {"{\"edges\": [[1,2]], \"target\": null}", "target: vertex is not a number"},
        {"{\"edges\": [[1,2]], \"target\": 1e300}", "out of range"},
        {too_many, "too many edges: 16 (at most 15)"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        Example ex;
        if (example_parse_jsonl(&ex, cases[i].line, &cfg) != -1)
            fail_msg("case %zu was accepted: %s", i, cases[i].line);
        const char *msg = pf_last_error();
        if (!strstr(msg, cases[i].message)) fail_msg("case %zu: message '%s' lacks '%s'", i, msg, cases[i].message);
        assert_null(strchr(msg, '\n'));
    }
}

static void test_graph_from_edges_errors(void **state) {
    (void)state;
    DataConfig cfg = data_config_default();
    Graph g;
    const int bad_vertex[][2] = {{1, 2}, {2, 17}};
    assert_int_equal(graph_from_edges(&g, bad_vertex, 2, &cfg), -1);
    assert_non_null(strstr(pf_last_error(), "edge 2: vertex 17 out of range 1..15"));
    int many[16][2];
    for (int e = 0; e < 16; e++) many[e][0] = 1, many[e][1] = 2;
    assert_int_equal(graph_from_edges(&g, (const int (*)[2])many, 16, &cfg), -1);
    assert_non_null(strstr(pf_last_error(), "too many edges"));
    assert_int_equal(graph_from_edges(&g, (const int (*)[2])many, 15, &cfg), 0);
    assert_int_equal(g.n, cfg.max_v);
    assert_int_equal(g.num_edges, 15);  // duplicates stay in the list
    assert_true(g.adjacency[1] == 1ULL << 2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_defaults_and_validation),
        cmocka_unit_test(test_dataset_lookup),
        cmocka_unit_test(test_graph_random_draw_order),
        cmocka_unit_test(test_bfs_against_floyd_warshall),
        cmocka_unit_test(test_pretrain_acceptance),
        cmocka_unit_test(test_onpath_thinning_and_k),
        cmocka_unit_test(test_onpath_large_target_k),
        cmocka_unit_test(test_onpath_targets_on_shortest_path),
        cmocka_unit_test(test_any_sets),
        cmocka_unit_test(test_named_label_distributions),
        cmocka_unit_test(test_batch_fill_deterministic),
        cmocka_unit_test(test_token_encoding_blog_example),
        cmocka_unit_test(test_jsonl_round_trip),
        cmocka_unit_test(test_jsonl_rejects_malformed),
        cmocka_unit_test(test_graph_from_edges_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
