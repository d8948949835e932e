// Probe data from the BFS transformer's states (probe_bfs.h).
#include "interp/probe_bfs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "rng.h"

int probe_collect_bfs(ProbeData *data, BfsModel *m, uint64_t seed, long count) {
    if (!m->training) return pf_fail("probe: the BFS model must keep every layer (a training model)");
    if (count < 5) return pf_fail("probe: at least 5 graphs are needed (got %ld)", count);
    int N = m->N, T = m->T, C = m->C, L = m->L;
    probe_data_init(data, L + 1, C);
    int gv = probe_add_group(data, "vertex tokens", count * N), ga = probe_add_group(data, "answer token", count);
    int f_du = probe_add_fact(data, "dist_u", gv, 0), f_within = data->num_facts;
    for (int k = 1; k <= N; k++) {
        char name[32];
        snprintf(name, sizeof(name), "within_%d", k);
        probe_add_fact(data, name, gv, 1);
    }
    int f_dt = probe_add_fact(data, "dist_t", ga, 0);
    ProbeGroup *V = &data->groups[gv], *A = &data->groups[ga];
    DataConfig cfg = data_config_default();
    cfg.max_v = N;
    cfg.max_tune_v = N;
    for (long first = 0; first < count; first += m->capacity) {
        int B = (int)(count - first < m->capacity ? count - first : m->capacity);
        for (int b = 0; b < B; b++) {
            Graph g;
            int target, label, dist[PF_MAX_VERTICES + 1], parent[PF_MAX_VERTICES + 1];
            bfs_sample(&g, &target, &label, m, seed, 0, (uint64_t)(first + b));
            bfs_encode(m->x + (size_t)b * T * C, m, &g, target);
            data->facts[f_dt].labels[first + b] = (float)label;
            graph_bfs(&g, &cfg, dist, parent);
            const int *d = dist;
            for (int u = 1; u <= N; u++) {
                long row = (first + b) * N + u - 1;
                V->example[row] = first + b;
                data->facts[f_du].labels[row] = (float)(d[u] >= N ? N + 1 : d[u]);
                for (int k = 1; k <= N; k++) data->facts[f_within + k - 1].labels[row] = d[u] < N && d[u] <= k;
            }
            A->example[first + b] = first + b;
        }
        bfs_forward(m, B);
        for (int l = 0; l <= L; l++) {
            const float *x = bfs_layer_state(m, l);
            for (int b = 0; b < B; b++) {
                const float *ex = x + (size_t)b * T * C;
                memcpy(A->states + ((size_t)l * A->n + first + b) * C, ex, C * sizeof(float));
                for (int u = 1; u <= N; u++)
                    memcpy(V->states + ((size_t)l * V->n + (first + b) * N + u - 1) * C, ex + (size_t)u * C,
                           C * sizeof(float));
            }
        }
    }
    return 0;
}

void probe_bfs_randomize(BfsModel *m, uint64_t seed) {
    Rng rng = rng_stream(seed, 0x72616e646f6dULL, 0);
    for (size_t i = 0; i < m->num_parameters; i++) m->params_memory[i] = (float)rng_normal(&rng);
}
