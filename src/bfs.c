// The hand-built BFS transformer (SPEC §5): construction, ops, forward/backward, evaluation, and the
// robustness experiments. The projections go through ops.c's matmul; the attention core, the squash
// and the readout are this model's own ops.
#include "bfs.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "adam.h"
#include "common.h"
#include "ops.h"
#include "rng.h"

// The construction's constants (the blog's BIG, SUPABIG, MED, CURSE).
static const float ANSWER_KEY = 12.0f;   // reach heads: score of the answer token (the "nothing" sink)
static const float REACH_QUERY = 30.0f;  // reach heads: score of a neighbour of j when reach[j] = 1
static const float RECORD_KEY = 42.0f;   // record head: score of vertex 1 when it reaches the target
static const float RECORD_SINK = 7.0f;   // record head: score of the answer token
static const float SQUASH_GAIN = 5.0f;

// Evaluation graphs come from this step of the seed's stream, far above any training step.
static const uint64_t EVAL_STEP = 1ULL << 40;

const char *const BFS_KIND_NAMES[BFS_NUM_KINDS] = {"reach_q", "reach_k", "reach_v", "record_q", "record_k", "record_v"};

int bfs_config_validate(const BfsConfig *cfg) {
    if (cfg->n < BFS_MIN_N || cfg->n > BFS_MAX_N)
        return pf_fail("bfs: N must be in %d..%d (got %d)", BFS_MIN_N, BFS_MAX_N, cfg->n);
    if (!(cfg->scale > 0.0f && cfg->scale <= 100.0f))
        return pf_fail("bfs: scale must be in (0, 100] (got %g)", (double)cfg->scale);
    return 0;
}

int bfs_kind_lookup(const char *name) {
    for (int k = 0; k < BFS_NUM_KINDS; k++)
        if (strcmp(name, BFS_KIND_NAMES[k]) == 0) return k;
    return pf_fail("bfs: unknown matrix '%s' (reach_q, reach_k, reach_v, record_q, record_k, record_v, random, all)",
                   name);
}

// ---------------------------------------------------------------------------------------------
// Layout

static float **param_slot(BfsParams *p, int kind) {
    float **slots[BFS_NUM_KINDS] = {&p->reach_q, &p->reach_k, &p->reach_v, &p->record_q, &p->record_k, &p->record_v};
    return slots[kind];
}

static void point_params(BfsParams *p, float *memory, const size_t *sizes) {
    for (int k = 0; k < BFS_NUM_KINDS; k++) {
        *param_slot(p, k) = memory;
        memory += sizes[k];
    }
}

int bfs_kind_count(const BfsModel *model, BfsKind kind) { return kind <= BFS_REACH_V ? model->N : model->L; }

float *bfs_matrix(const BfsModel *model, const BfsParams *block, BfsKind kind, int index, size_t *size) {
    size_t per = model->param_sizes[kind] / (size_t)bfs_kind_count(model, kind);
    *size = per;
    return *param_slot((BfsParams *)block, kind) + per * (size_t)index;
}

void bfs_model_create(BfsModel *model, const BfsConfig *cfg, int capacity, int training) {
    memset(model, 0, sizeof(*model));
    int N = cfg->n;
    model->config = *cfg;
    model->N = N;
    model->L = N;
    model->T = N + 1;
    model->C = (cfg->target_input ? 5 : 4) * N + 2;
    model->RQ = cfg->target_input ? 3 + N : 3;
    model->reach_off = N + 1;
    model->out_off = 2 * N + 1;
    model->self_off = 3 * N + 1;
    model->target_off = cfg->target_input ? 4 * N + 1 : -1;
    model->notans_off = model->C - 1;
    model->capacity = capacity;
    model->training = training;

    size_t C = (size_t)model->C, L = (size_t)model->L, RQ = (size_t)model->RQ, n = (size_t)N;
    size_t sizes[BFS_NUM_KINDS] = {n * 2 * C, n * 2 * C, n * n * C, L * RQ * C, L * RQ * C, L * n * C};
    model->num_parameters = 0;
    for (int k = 0; k < BFS_NUM_KINDS; k++) {
        model->param_sizes[k] = sizes[k];
        model->num_parameters += sizes[k];
    }
    model->params_memory = callocCheck(model->num_parameters, sizeof(float));
    point_params(&model->params, model->params_memory, model->param_sizes);
    if (training) {
        model->grads_memory = callocCheck(model->num_parameters, sizeof(float));
        point_params(&model->grads, model->grads_memory, model->param_sizes);
    }

    // Activations: every layer when training (the backward pass reads them), else one slot reused.
    size_t slots = training ? L : 1, x_slots = training ? L + 1 : 2;
    size_t BT = (size_t)capacity * (size_t)model->T, TT = (size_t)model->T * (size_t)model->T;
    size_t act_sizes[] = {
        x_slots * BT * C,                      // x
        slots * BT * C,                        // y
        slots * BT * 2 * n,                    // reach_q
        slots * BT * 2 * n,                    // reach_k
        slots * BT * n * n,                    // reach_v
        slots * (size_t)capacity * n * TT,     // reach_att
        slots * BT * RQ,                       // record_q
        slots * BT * RQ,                       // record_k
        slots * BT * n,                        // record_v
        slots * (size_t)capacity * TT,         // record_att
        (size_t)capacity,                      // pred
    };
    float **act_ptrs[] = {&model->x,        &model->y,        &model->reach_q,  &model->reach_k,
                          &model->reach_v,  &model->reach_att, &model->record_q, &model->record_k,
                          &model->record_v, &model->record_att, &model->pred};
    size_t num_acts = sizeof(act_sizes) / sizeof(act_sizes[0]), total = 0;
    for (size_t i = 0; i < num_acts; i++) total += act_sizes[i];
    model->acts_memory = callocCheck(total, sizeof(float));
    model->num_activations = total;
    float *p = model->acts_memory;
    for (size_t i = 0; i < num_acts; i++) {
        *act_ptrs[i] = p;
        p += act_sizes[i];
    }
    if (!training) return;
    size_t scratch_sizes[] = {BT * C, BT * C, BT * C, BT * 2 * n, BT * 2 * n, BT * n * n, BT * RQ, BT * RQ, BT * n,
                              (size_t)capacity};
    float **scratch_ptrs[] = {&model->dx,        &model->dx_next,   &model->dy,        &model->dreach_q,
                              &model->dreach_k,  &model->dreach_v,  &model->drecord_q, &model->drecord_k,
                              &model->drecord_v, &model->dpred};
    size_t num_scratch = sizeof(scratch_sizes) / sizeof(scratch_sizes[0]);
    total = 0;
    for (size_t i = 0; i < num_scratch; i++) total += scratch_sizes[i];
    model->scratch_memory = callocCheck(total, sizeof(float));
    model->num_activations += total;
    p = model->scratch_memory;
    for (size_t i = 0; i < num_scratch; i++) {
        *scratch_ptrs[i] = p;
        p += scratch_sizes[i];
    }
}

void bfs_model_free(BfsModel *model) {
    free(model->params_memory);
    free(model->grads_memory);
    free(model->acts_memory);
    free(model->scratch_memory);
    memset(model, 0, sizeof(*model));
}

// ---------------------------------------------------------------------------------------------
// Construction (SPEC §5). Vertex j (1-based) sits at column j of the neighbour section, at
// reach_off + j - 1 of the reach section, and so on.

void bfs_construct(BfsModel *m) {
    int N = m->N, C = m->C, RQ = m->RQ;
    float s = m->config.scale;
    memset(m->params_memory, 0, m->num_parameters * sizeof(float));
    BfsParams *p = &m->params;
    for (int j = 1; j <= N; j++) {
        float *q = p->reach_q + (size_t)(j - 1) * 2 * C, *k = p->reach_k + (size_t)(j - 1) * 2 * C;
        float *v = p->reach_v + (size_t)(j - 1) * N * C;
        q[m->reach_off + j - 1] = s * REACH_QUERY;  // a vertex that reaches j ...
        q[C + m->notans_off] = 1.0f;            // ... and any vertex token ...
        k[j] = 1.0f;                            // ... matches the neighbours of j ...
        k[C + 0] = s * ANSWER_KEY;                  // ... or else the answer token, whose value is zero
        for (int i = 0; i < N; i++) v[(size_t)i * C + m->self_off + i] = 1.0f;
    }
    for (int l = 0; l < m->L; l++) {
        float *q = p->record_q + (size_t)l * RQ * C, *k = p->record_k + (size_t)l * RQ * C;
        float *v = p->record_v + (size_t)l * N * C;
        for (int r = 0; r < 3; r++) q[(size_t)r * C + 0] = 1.0f;  // only the answer token asks
        // Score of vertex 1: 42 reach[t]; of other vertices: 42 reach[t] - 42; of the answer token: 7
        // (plus 42 (reach[t] - 1) ~ 0 from its own saturated reach).
        k[m->self_off] = s * RECORD_KEY;
        k[m->notans_off] = -s * ANSWER_KEY;
        k[C + m->notans_off] = -s * REACH_QUERY;
        k[C + 0] = -s * RECORD_KEY;
        k[2 * C + 0] = s * RECORD_SINK;
        if (m->config.target_input) {
            // reach[t] = sum_j target[j] reach[j]: one query row per target vertex
            for (int j = 0; j < N; j++) {
                q[(size_t)(3 + j) * C + m->target_off + j] = 1.0f;
                k[(size_t)(3 + j) * C + m->reach_off + j] = s * RECORD_KEY;
            }
        } else {
            k[C + m->reach_off + 1] = s * RECORD_KEY;  // reach[2]
        }
        v[(size_t)l * C + m->self_off] = 1.0f;  // self[1] into out slot l
    }
}

// ---------------------------------------------------------------------------------------------
// Data

void bfs_encode(float *x, const BfsModel *m, const Graph *g, int target) {
    int N = m->N, C = m->C;
    memset(x, 0, (size_t)m->T * C * sizeof(float));
    x[0] = 1.0f;
    for (int j = 0; j < N; j++) x[m->reach_off + j] = 1.0f;
    if (m->config.target_input) x[m->target_off + target - 1] = 1.0f;
    for (int v = 1; v <= N; v++) {
        float *row = x + (size_t)v * C;
        row[m->self_off + v - 1] = 1.0f;
        row[m->notans_off] = 1.0f;
        for (int u = 1; u <= N; u++) {
            if (!(g->adjacency[v] >> u & 1)) continue;
            row[u] = 1.0f;
            row[m->reach_off + u - 1] = 1.0f;
        }
    }
}

static DataConfig graph_settings(int N) {
    DataConfig cfg = data_config_default();
    cfg.max_v = N;
    cfg.max_tune_v = N;
    cfg.edges_per_vertex = 1;
    return cfg;
}

void bfs_sample(Graph *g, int *target, int *label, const BfsModel *m, uint64_t seed, uint64_t step, uint64_t index) {
    DataConfig cfg = graph_settings(m->N);
    Rng rng = rng_stream(seed, step, index);
    graph_random(g, m->N, &cfg, &rng);
    *target = m->config.target_input ? rng_range(&rng, 2, m->N) : 2;
    int dist[PF_MAX_VERTICES + 1], parent[PF_MAX_VERTICES + 1];
    graph_bfs(g, &cfg, dist, parent);
    *label = dist[*target] >= m->N ? m->N + 1 : dist[*target];  // graph_bfs says max_v = N when unreachable
}

void bfs_make_batch(BfsModel *m, float *labels, uint64_t seed, uint64_t step, int B) {
#pragma omp parallel for schedule(static)
    for (int b = 0; b < B; b++) {
        Graph g;
        int target, label;
        bfs_sample(&g, &target, &label, m, seed, step, (uint64_t)b);
        bfs_encode(m->x + (size_t)b * m->T * m->C, m, &g, target);
        labels[b] = (float)label;
    }
}

// ---------------------------------------------------------------------------------------------
// Ops

void bfs_attention_forward(float *out, float *att, const float *q, const float *k, const float *v, int B, int T,
                           int C, int offset, int H, int QK, int HV) {
    size_t QW = (size_t)H * QK, VW = (size_t)H * HV;
#pragma omp parallel for schedule(static)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++) {
            for (int t = 0; t < T; t++) {
                const float *qt = q + ((size_t)b * T + t) * QW + (size_t)h * QK;
                float *p = att + (((size_t)b * H + h) * T + t) * T;
                float max = -INFINITY;
                for (int s = 0; s < T; s++) {
                    const float *ks = k + ((size_t)b * T + s) * QW + (size_t)h * QK;
                    float score = 0.0f;
                    for (int i = 0; i < QK; i++) score += qt[i] * ks[i];
                    p[s] = score;
                    if (score > max) max = score;
                }
                float sum = 0.0f;
                for (int s = 0; s < T; s++) {
                    p[s] = expf(p[s] - max);
                    sum += p[s];
                }
                float inv = 1.0f / sum;
                float *o = out + ((size_t)b * T + t) * C + offset;
                for (int s = 0; s < T; s++) {
                    p[s] *= inv;
                    const float *vs = v + ((size_t)b * T + s) * VW + (size_t)h * HV;
                    for (int i = 0; i < HV; i++) o[i] += p[s] * vs[i];
                }
            }
        }
    }
}

void bfs_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k,
                            const float *v, const float *att, int B, int T, int C, int offset, int H, int QK,
                            int HV) {
    size_t QW = (size_t)H * QK, VW = (size_t)H * HV;
#pragma omp parallel for schedule(static)
    for (int b = 0; b < B; b++) {
        float dp[BFS_MAX_N + 1];
        for (int h = 0; h < H; h++) {
            for (int t = 0; t < T; t++) {
                const float *p = att + (((size_t)b * H + h) * T + t) * T;
                const float *dot = dout + ((size_t)b * T + t) * C + offset;
                // through the weighted sum: dv_s += p_s dout_t, dp_s = dout_t . v_s
                float dp_dot_p = 0.0f;
                for (int s = 0; s < T; s++) {
                    const float *vs = v + ((size_t)b * T + s) * VW + (size_t)h * HV;
                    float *dvs = dv + ((size_t)b * T + s) * VW + (size_t)h * HV;
                    float acc = 0.0f;
                    for (int i = 0; i < HV; i++) {
                        acc += dot[i] * vs[i];
                        dvs[i] += p[s] * dot[i];
                    }
                    dp[s] = acc;
                    dp_dot_p += acc * p[s];
                }
                // through the softmax and the scores q_t . k_s
                const float *qt = q + ((size_t)b * T + t) * QW + (size_t)h * QK;
                float *dqt = dq + ((size_t)b * T + t) * QW + (size_t)h * QK;
                for (int s = 0; s < T; s++) {
                    float ds = p[s] * (dp[s] - dp_dot_p);
                    const float *ks = k + ((size_t)b * T + s) * QW + (size_t)h * QK;
                    float *dks = dk + ((size_t)b * T + s) * QW + (size_t)h * QK;
                    for (int i = 0; i < QK; i++) {
                        dqt[i] += ds * ks[i];
                        dks[i] += ds * qt[i];
                    }
                }
            }
        }
    }
}

static inline float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

void bfs_squash_forward(float *out, const float *inp, int R, int C, int offset, int W) {
    if (out != inp) memcpy(out, inp, (size_t)R * C * sizeof(float));
    for (int r = 0; r < R; r++) {
        float *o = out + (size_t)r * C + offset;
        const float *x = inp + (size_t)r * C + offset;
        for (int i = 0; i < W; i++) o[i] = 2.0f * sigmoidf(SQUASH_GAIN * x[i]) - 1.0f;
    }
}

void bfs_squash_backward(float *dinp, const float *dout, const float *inp, int R, int C, int offset, int W) {
    for (int r = 0; r < R; r++) {
        float *di = dinp + (size_t)r * C;
        const float *d = dout + (size_t)r * C, *x = inp + (size_t)r * C;
        for (int i = 0; i < C; i++) {
            float g = d[i];
            if (i >= offset && i < offset + W) {
                float s = sigmoidf(SQUASH_GAIN * x[i]);
                g *= 2.0f * SQUASH_GAIN * s * (1.0f - s);
            }
            di[i] += g;
        }
    }
}

void bfs_readout_forward(float *pred, const float *inp, int B, int T, int C, int offset, int W) {
    for (int b = 0; b < B; b++) {
        const float *o = inp + (size_t)b * T * C + offset;
        float sum = 1.0f;
        for (int i = 0; i < W; i++) sum += 1.0f - o[i];
        pred[b] = sum;
    }
}

void bfs_readout_backward(float *dinp, const float *dpred, int B, int T, int C, int offset, int W) {
    for (int b = 0; b < B; b++) {
        float *d = dinp + (size_t)b * T * C + offset;
        for (int i = 0; i < W; i++) d[i] -= dpred[b];
    }
}

// ---------------------------------------------------------------------------------------------
// Model

// Saved tensor of layer l: its own slot when training, the one shared slot otherwise.
static float *layer_act(const BfsModel *m, float *base, int l, size_t per_example) {
    size_t slot = m->training ? (size_t)l : 0;
    return base + slot * (size_t)m->capacity * per_example;
}

static float *layer_input(const BfsModel *m, int l) {
    size_t slot = m->training ? (size_t)l : (size_t)(l % 2);
    return m->x + slot * (size_t)m->capacity * m->T * m->C;
}

void bfs_forward(BfsModel *m, int B) {
    int N = m->N, T = m->T, C = m->C, RQ = m->RQ, BT = B * T;
    size_t TC = (size_t)T * C, TT = (size_t)T * T;
    for (int l = 0; l < m->L; l++) {
        float *x = layer_input(m, l), *y = layer_act(m, m->y, l, TC);
        float *rq = layer_act(m, m->reach_q, l, (size_t)T * 2 * N),
              *rk = layer_act(m, m->reach_k, l, (size_t)T * 2 * N);
        float *rv = layer_act(m, m->reach_v, l, (size_t)T * N * N), *ratt = layer_act(m, m->reach_att, l, N * TT);
        float *cq = layer_act(m, m->record_q, l, (size_t)T * RQ), *ck = layer_act(m, m->record_k, l, (size_t)T * RQ);
        float *cv = layer_act(m, m->record_v, l, (size_t)T * N), *catt = layer_act(m, m->record_att, l, TT);
        const BfsParams *p = &m->params;
        matmul_forward(rq, x, p->reach_q, NULL, BT, C, 2 * N);
        matmul_forward(rk, x, p->reach_k, NULL, BT, C, 2 * N);
        matmul_forward(rv, x, p->reach_v, NULL, BT, C, N * N);
        matmul_forward(cq, x, p->record_q + (size_t)l * RQ * C, NULL, BT, C, RQ);
        matmul_forward(ck, x, p->record_k + (size_t)l * RQ * C, NULL, BT, C, RQ);
        matmul_forward(cv, x, p->record_v + (size_t)l * N * C, NULL, BT, C, N);
        memcpy(y, x, (size_t)BT * C * sizeof(float));
        bfs_attention_forward(y, ratt, rq, rk, rv, B, T, C, m->reach_off, N, 2, N);
        bfs_attention_forward(y, catt, cq, ck, cv, B, T, C, m->out_off, 1, RQ, N);
        bfs_squash_forward(layer_input(m, l + 1), y, BT, C, m->reach_off, N);
    }
    bfs_readout_forward(m->pred, layer_input(m, m->L), B, T, C, m->out_off, N);
}

double bfs_mse(const BfsModel *m, const float *labels, int B) { return mse_forward(m->pred, labels, B) / B; }

void bfs_zero_grad(BfsModel *m) { memset(m->grads_memory, 0, m->num_parameters * sizeof(float)); }

void bfs_backward(BfsModel *m, const float *labels, int B) {
    int N = m->N, T = m->T, C = m->C, RQ = m->RQ, BT = B * T;
    size_t TC = (size_t)T * C, TT = (size_t)T * T, n_act = (size_t)BT * C;
    mse_backward(m->dpred, m->pred, labels, NULL, B, 1.0f / B);
    memset(m->dx, 0, n_act * sizeof(float));
    bfs_readout_backward(m->dx, m->dpred, B, T, C, m->out_off, N);
    const BfsParams *p = &m->params;
    BfsParams *g = &m->grads;
    for (int l = m->L - 1; l >= 0; l--) {
        float *x = layer_input(m, l), *y = layer_act(m, m->y, l, TC);
        float *rq = layer_act(m, m->reach_q, l, (size_t)T * 2 * N),
              *rk = layer_act(m, m->reach_k, l, (size_t)T * 2 * N);
        float *rv = layer_act(m, m->reach_v, l, (size_t)T * N * N), *ratt = layer_act(m, m->reach_att, l, N * TT);
        float *cq = layer_act(m, m->record_q, l, (size_t)T * RQ), *ck = layer_act(m, m->record_k, l, (size_t)T * RQ);
        float *cv = layer_act(m, m->record_v, l, (size_t)T * N), *catt = layer_act(m, m->record_att, l, TT);
        memset(m->dy, 0, n_act * sizeof(float));
        bfs_squash_backward(m->dy, m->dx, y, BT, C, m->reach_off, N);
        memset(m->dreach_q, 0, (size_t)BT * 2 * N * sizeof(float));
        memset(m->dreach_k, 0, (size_t)BT * 2 * N * sizeof(float));
        memset(m->dreach_v, 0, (size_t)BT * N * N * sizeof(float));
        memset(m->drecord_q, 0, (size_t)BT * RQ * sizeof(float));
        memset(m->drecord_k, 0, (size_t)BT * RQ * sizeof(float));
        memset(m->drecord_v, 0, (size_t)BT * N * sizeof(float));
        bfs_attention_backward(m->dreach_q, m->dreach_k, m->dreach_v, m->dy, rq, rk, rv, ratt, B, T, C, m->reach_off,
                               N, 2, N);
        bfs_attention_backward(m->drecord_q, m->drecord_k, m->drecord_v, m->dy, cq, ck, cv, catt, B, T, C, m->out_off,
                               1, RQ, N);
        // The residual path carries dy straight to the layer's input; layer 0's input needs no gradient.
        float *dx = NULL;
        if (l > 0) {
            dx = m->dx_next;
            memcpy(dx, m->dy, n_act * sizeof(float));
        }
        matmul_backward(dx, g->reach_q, NULL, m->dreach_q, x, p->reach_q, BT, C, 2 * N);
        matmul_backward(dx, g->reach_k, NULL, m->dreach_k, x, p->reach_k, BT, C, 2 * N);
        matmul_backward(dx, g->reach_v, NULL, m->dreach_v, x, p->reach_v, BT, C, N * N);
        matmul_backward(dx, g->record_q + (size_t)l * RQ * C, NULL, m->drecord_q, x, p->record_q + (size_t)l * RQ * C,
                        BT, C, RQ);
        matmul_backward(dx, g->record_k + (size_t)l * RQ * C, NULL, m->drecord_k, x, p->record_k + (size_t)l * RQ * C,
                        BT, C, RQ);
        matmul_backward(dx, g->record_v + (size_t)l * N * C, NULL, m->drecord_v, x, p->record_v + (size_t)l * N * C,
                        BT, C, N);
        if (l > 0) {
            float *swap = m->dx;
            m->dx = m->dx_next;
            m->dx_next = swap;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Evaluation

void bfs_evaluate(BfsEval *r, BfsModel *m, uint64_t seed, long count) {
    memset(r, 0, sizeof(*r));
    float *labels = mallocCheck((size_t)m->capacity * sizeof(float));
    for (long first = 0; first < count; first += m->capacity) {
        int B = (int)(count - first < m->capacity ? count - first : m->capacity);
#pragma omp parallel for schedule(static)
        for (int b = 0; b < B; b++) {
            Graph g;
            int target, label;
            bfs_sample(&g, &target, &label, m, seed, EVAL_STEP, (uint64_t)(first + b));
            bfs_encode(m->x + (size_t)b * m->T * m->C, m, &g, target);
            labels[b] = (float)label;
        }
        bfs_forward(m, B);
        for (int b = 0; b < B; b++) {
            int label = (int)labels[b];
            double err = (double)m->pred[b] - label;
            r->count++;
            r->sse += err * err;
            r->correct += lround(m->pred[b]) == label;
            if (!(fabs(err) <= r->max_error)) r->max_error = fabs(err);  // NaN sticks
            r->label_count[label]++;
            r->label_sse[label] += err * err;
        }
    }
    free(labels);
}

double bfs_eval_mse(const BfsEval *r) { return r->count ? r->sse / r->count : 0.0; }

// ---------------------------------------------------------------------------------------------
// Experiments

BfsExperiment bfs_experiment_default(void) {
    BfsExperiment exp = {
        .n_min = BFS_MIN_N,
        .n_max = 15,
        .scale = BFS_DEFAULT_SCALE,
        .eval_count = 16384,
        .seed = 1,
        .kinds = {BFS_REACH_Q, BFS_REACH_K, BFS_REACH_V, BFS_RECORD_Q, BFS_RECORD_K, BFS_RECORD_V, -2},
        .matrix_index = -1,
        .seeds = 5,
        .steps = 10000,
        .lr = 1e-6,
        .batch = 512,
        .threshold = 1e-2,
        .sigmas = {1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0},  // the basin is narrow: MSE ~0.1 at 3e-5 (N = 8)
        .num_sigmas = 7,
    };
    return exp;
}

// Writes a cJSON tree (and frees it) to dir/name, atomically; pretty or on one line.
static int write_json(const char *dir, const char *name, cJSON *root, int pretty) {
    char path[4096];
    int rc = pf_path_join(path, sizeof(path), dir, name);
    if (rc == 0) rc = pf_write_json_atomic(path, root, pretty);
    cJSON_Delete(root);
    return rc;
}

// A Vega-Lite v5 spec: the static part as JSON text, with `values` (taken over) inlined as its data.
static int write_vega_lite(const char *dir, const char *name, const char *spec_text, cJSON *values) {
    cJSON *spec = cJSON_Parse(spec_text);
    if (!spec) {
        cJSON_Delete(values);
        return pf_fail("internal error: bad Vega-Lite template for %s", name);
    }
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "$schema", "https://vega.github.io/schema/vega-lite/v5.json");
    cJSON *data = cJSON_AddObjectToObject(root, "data");
    cJSON_AddItemToObject(data, "values", values);
    for (cJSON *item = spec->child; item;) {
        cJSON *next = item->next;
        cJSON_AddItemToObject(root, item->string, cJSON_DetachItemViaPointer(spec, item));
        item = next;
    }
    cJSON_Delete(spec);
    return write_json(dir, name, root, 0);  // figures hold thousands of points
}

static FILE *open_csv(const char *dir, const char *name, const char *header) {
    char path[4096];
    if (pf_path_join(path, sizeof(path), dir, name) != 0) return NULL;
    FILE *f = fopen(path, "w");
    if (!f) {
        pf_fail("cannot write %s: %s", path, strerror(errno));
        return NULL;
    }
    fprintf(f, "%s\n", header);
    return f;
}

static int close_csv(FILE *f, const char *name) {
    int ok = fflush(f) == 0 && !ferror(f);
    ok = fclose(f) == 0 && ok;
    return ok ? 0 : pf_fail("cannot write %s: %s", name, strerror(errno));
}

// Log scales cannot show 0: plotted values are clamped to this floor (the tables keep the raw value).
static double plot_floor(double x) { return x > 1e-12 ? x : 1e-12; }

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// Median of n values (sorted in place); NaN when n = 0.
static double median(double *v, int n) {
    if (n == 0) return NAN;
    qsort(v, (size_t)n, sizeof(double), compare_doubles);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static cJSON *eval_json(const BfsEval *r) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "count", (double)r->count);
    cJSON_AddNumberToObject(o, "mse", bfs_eval_mse(r));
    cJSON_AddNumberToObject(o, "accuracy", r->count ? (double)r->correct / r->count : 0.0);
    cJSON_AddNumberToObject(o, "max_error", r->max_error);
    return o;
}

static cJSON *config_json(const BfsConfig *cfg) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "n", cfg->n);
    cJSON_AddBoolToObject(o, "target_input", cfg->target_input);
    cJSON_AddNumberToObject(o, "scale", cfg->scale);
    return o;
}

int bfs_run_sweep_n(const BfsExperiment *exp, const char *out_dir) {
    if (pf_mkdir_p(out_dir) != 0) return -1;
    FILE *csv = open_csv(out_dir, "sweep_n.csv", "n,variant,scale,count,mse,accuracy,max_error,mse_unreachable");
    if (!csv) return -1;
    cJSON *rows = cJSON_CreateArray(), *plot = cJSON_CreateArray();
    const char *variants[2] = {"dist(1,2)", "dist(1,t)"};
    printf("%3s  %-10s %12s %10s %10s %14s\n", "N", "variant", "MSE", "accuracy", "max|err|", "MSE unreach.");
    for (int n = exp->n_min; n <= exp->n_max; n++) {
        for (int variant = 0; variant < 2; variant++) {
            BfsConfig cfg = {n, variant, exp->scale};
            BfsModel model;
            bfs_model_create(&model, &cfg, 256, 0);
            bfs_construct(&model);
            BfsEval r;
            bfs_evaluate(&r, &model, exp->seed, exp->eval_count);
            bfs_model_free(&model);
            double mse = bfs_eval_mse(&r), acc = (double)r.correct / r.count;
            long unreachable = r.label_count[n + 1];
            double mse_unreachable = unreachable ? r.label_sse[n + 1] / unreachable : 0.0;
            printf("%3d  %-10s %12.3e %10.6f %10.3e %14.3e\n", n, variants[variant], mse, acc, r.max_error,
                   mse_unreachable);
            fflush(stdout);
            fprintf(csv, "%d,%s,%g,%ld,%.9g,%.9g,%.9g,%.9g\n", n, variants[variant], (double)exp->scale, r.count, mse,
                    acc, r.max_error, mse_unreachable);
            cJSON *row = eval_json(&r);
            cJSON_AddNumberToObject(row, "n", n);
            cJSON_AddStringToObject(row, "variant", variants[variant]);
            cJSON_AddNumberToObject(row, "mse_unreachable", mse_unreachable);
            cJSON_AddItemToArray(rows, row);
            cJSON *point = cJSON_CreateObject();
            cJSON_AddNumberToObject(point, "n", n);
            cJSON_AddStringToObject(point, "variant", variants[variant]);
            cJSON_AddNumberToObject(point, "mse", plot_floor(mse));
            cJSON_AddNumberToObject(point, "accuracy", acc);
            cJSON_AddItemToArray(plot, point);
        }
    }
    if (close_csv(csv, "sweep_n.csv") != 0) {
        cJSON_Delete(rows);
        cJSON_Delete(plot);
        return -1;
    }
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "experiment", "bfs sweep-n");
    cJSON_AddNumberToObject(root, "scale", exp->scale);
    cJSON_AddNumberToObject(root, "seed", (double)exp->seed);
    cJSON_AddNumberToObject(root, "count", (double)exp->eval_count);
    cJSON_AddItemToObject(root, "rows", rows);
    if (write_json(out_dir, "sweep_n.json", root, 1) != 0) {
        cJSON_Delete(plot);
        return -1;
    }
    return write_vega_lite(
        out_dir, "sweep_n.vl.json",
        "{\"title\": \"Hand-built BFS transformer: MSE per N (floored at 1e-12)\","
        " \"width\": 400, \"height\": 250, \"mark\": {\"type\": \"line\", \"point\": true},"
        " \"encoding\": {"
        "  \"x\": {\"field\": \"n\", \"type\": \"quantitative\", \"title\": \"N (vertices = layers)\"},"
        "  \"y\": {\"field\": \"mse\", \"type\": \"quantitative\", \"scale\": {\"type\": \"log\"},"
        "         \"title\": \"MSE\"},"
        "  \"color\": {\"field\": \"variant\", \"type\": \"nominal\"},"
        "  \"tooltip\": [{\"field\": \"n\"}, {\"field\": \"variant\"}, {\"field\": \"mse\"},"
        "              {\"field\": \"accuracy\"}]}}",
        plot);
}

static void print_model_size(const BfsModel *m) {
    printf("bfs model N=%d%s: %zu parameters, %.1f MiB of activations for batches of %d\n", m->N,
           m->config.target_input ? " (target input)" : "", m->num_parameters,
           (double)m->num_activations * sizeof(float) / (1 << 20), m->capacity);
}

// Draws a weight matrix's entries from sigma N(0, 1), replacing (replace) or adding to them.
static void fill_normal(float *w, size_t n, double sigma, int replace, Rng *rng) {
    for (size_t i = 0; i < n; i++) w[i] = (float)(sigma * rng_normal(rng)) + (replace ? 0.0f : w[i]);
}

// Trains with Adam for exp->steps steps on fresh batches of data_seed; calls log_step with each
// step's batch loss (measured before that step's update). Returns the first step whose loss is
// below exp->threshold, or -1.
typedef void (*StepLogger)(void *ctx, long step, double loss);
static long train_adam(BfsModel *model, const BfsExperiment *exp, uint64_t data_seed, StepLogger log_step, void *ctx,
                       double *final_loss) {
    AdamState adam;
    adam_create(&adam, model->num_parameters);
    AdamConfig adam_cfg = adam_config_default();
    float *labels = mallocCheck((size_t)exp->batch * sizeof(float));
    long recovered_at = -1;
    double loss = NAN;
    for (long step = 0; step < exp->steps; step++) {
        bfs_make_batch(model, labels, data_seed, (uint64_t)step, exp->batch);
        bfs_forward(model, exp->batch);
        loss = bfs_mse(model, labels, exp->batch);
        if (log_step) log_step(ctx, step, loss);
        if (recovered_at < 0 && loss < exp->threshold) recovered_at = step;
        bfs_zero_grad(model);
        bfs_backward(model, labels, exp->batch);
        adam_update(&adam, model->params_memory, model->grads_memory, (float)exp->lr, &adam_cfg);
    }
    *final_loss = loss;
    free(labels);
    adam_free(&adam);
    return recovered_at;
}

typedef struct {
    FILE *csv;
    int run;
    const char *kind;
    int matrix, seed;
    cJSON *plot;      // thinned curve points for the figure
    long plot_every;
} RobustLog;

static void robust_log_step(void *ctx, long step, double loss) {
    RobustLog *log = ctx;
    fprintf(log->csv, "%d,%s,%d,%d,%ld,%.9g\n", log->run, log->kind, log->matrix, log->seed, step, loss);
    if (step % log->plot_every != 0) return;
    cJSON *point = cJSON_CreateObject();
    cJSON_AddNumberToObject(point, "run", log->run);
    char label[64];
    snprintf(label, sizeof(label), "%s[%d] seed %d", log->kind, log->matrix, log->seed);
    cJSON_AddStringToObject(point, "run_label", label);
    cJSON_AddStringToObject(point, "kind", log->kind);
    cJSON_AddNumberToObject(point, "step", (double)step);
    cJSON_AddNumberToObject(point, "loss", plot_floor(loss));
    cJSON_AddItemToArray(log->plot, point);
}

int bfs_run_robust(const BfsConfig *cfg, const BfsExperiment *exp, const char *out_dir) {
    if (bfs_config_validate(cfg) != 0) return -1;
    // Every kind has N matrices (N reach heads, L = N layers).
    if (exp->matrix_index >= cfg->n)
        return pf_fail("bfs: matrix index %d does not exist (each kind has %d matrices, 0..%d)", exp->matrix_index,
                       cfg->n, cfg->n - 1);
    if (pf_mkdir_p(out_dir) != 0) return -1;
    FILE *csv = open_csv(out_dir, "robust_loss.csv", "run,kind,matrix,seed,step,loss");
    if (!csv) return -1;
    int num_lists = 0;
    while (exp->kinds[num_lists] != -2) num_lists++;
    long total_runs = (long)num_lists * exp->seeds;
    // Keep the figure's inlined data near 5,000 points whatever the run length.
    long plot_every = total_runs * exp->steps / 5000 + 1;
    RobustLog log = {.csv = csv, .plot = cJSON_CreateArray(), .plot_every = plot_every};
    cJSON *runs = cJSON_CreateArray(), *table = cJSON_CreateArray(), *bars = cJSON_CreateArray();
    BfsModel model;
    bfs_model_create(&model, cfg, exp->batch, 1);
    print_model_size(&model);
    printf("%-12s %4s %12s %12s %12s %10s\n", "matrix", "seed", "eval before", "final loss", "eval after",
           "recovered");
    for (int list = 0; list < num_lists; list++) {
        double *steps = mallocCheck((size_t)exp->seeds * sizeof(double));
        double *befores = mallocCheck((size_t)exp->seeds * sizeof(double));
        double *finals = mallocCheck((size_t)exp->seeds * sizeof(double));
        int recovered = 0;
        for (int s = 0; s < exp->seeds; s++) {
            // The damage is drawn from (seed, kind list, run), the data from (seed, run): runs with the
            // same seed number see the same batches whatever matrix they damaged.
            Rng rng = rng_stream(exp->seed, 0xDA3A6EULL + (uint64_t)list, (uint64_t)s);
            int kind = exp->kinds[list] >= 0 ? exp->kinds[list] : (int)rng_below(&rng, BFS_NUM_KINDS);
            int count = bfs_kind_count(&model, kind);
            int index = exp->matrix_index >= 0 ? exp->matrix_index : (int)rng_below(&rng, (uint32_t)count);
            bfs_construct(&model);
            size_t size;
            float *w = bfs_matrix(&model, &model.params, kind, index, &size);
            fill_normal(w, size, 1.0, 1, &rng);
            BfsEval before, after;
            bfs_evaluate(&before, &model, exp->seed, exp->eval_count);
            log.run = list * exp->seeds + s;
            log.kind = BFS_KIND_NAMES[kind];
            log.matrix = index;
            log.seed = s;
            double start = pf_now_seconds(), final_loss;
            long at = train_adam(&model, exp, rng_mix64(exp->seed + 0x5eedULL * (uint64_t)(s + 1)), robust_log_step,
                                 &log, &final_loss);
            double seconds = pf_now_seconds() - start;
            bfs_evaluate(&after, &model, exp->seed, exp->eval_count);
            if (at >= 0) steps[recovered++] = (double)at;
            befores[s] = bfs_eval_mse(&before);
            finals[s] = bfs_eval_mse(&after);
            char recovered_text[32];
            if (at >= 0) snprintf(recovered_text, sizeof(recovered_text), "step %ld", at);
            else snprintf(recovered_text, sizeof(recovered_text), "no");
            printf("%-8s[%2d] %4d %12.4g %12.4g %12.4g %10s  (%.1f s)\n", BFS_KIND_NAMES[kind], index, s,
                       bfs_eval_mse(&before), final_loss, bfs_eval_mse(&after), recovered_text, seconds);
            fflush(stdout);
            cJSON *run = cJSON_CreateObject();
            cJSON_AddNumberToObject(run, "run", log.run);
            cJSON_AddStringToObject(run, "kind", BFS_KIND_NAMES[kind]);
            cJSON_AddNumberToObject(run, "matrix", index);
            cJSON_AddNumberToObject(run, "seed", s);
            cJSON_AddItemToObject(run, "eval_before", eval_json(&before));
            cJSON_AddItemToObject(run, "eval_after", eval_json(&after));
            cJSON_AddNumberToObject(run, "final_loss", final_loss);
            cJSON_AddBoolToObject(run, "recovered", at >= 0);
            if (at >= 0) cJSON_AddNumberToObject(run, "steps_to_recover", (double)at);
            else cJSON_AddNullToObject(run, "steps_to_recover");
            cJSON_AddNumberToObject(run, "seconds", seconds);
            cJSON_AddItemToArray(runs, run);
        }
        const char *name = exp->kinds[list] >= 0 ? BFS_KIND_NAMES[exp->kinds[list]] : "random";
        double fraction = (double)recovered / exp->seeds;
        double median_steps = median(steps, recovered), median_before = median(befores, exp->seeds);
        double median_final = median(finals, exp->seeds);
        cJSON *row = cJSON_CreateObject();
        cJSON_AddStringToObject(row, "kind", name);
        cJSON_AddNumberToObject(row, "runs", exp->seeds);
        cJSON_AddNumberToObject(row, "recovered", recovered);
        cJSON_AddNumberToObject(row, "recovered_fraction", fraction);
        cJSON_AddNumberToObject(row, "median_steps_to_recover", median_steps);
        cJSON_AddNumberToObject(row, "median_eval_mse_before", median_before);
        cJSON_AddNumberToObject(row, "median_final_eval_mse", median_final);
        cJSON_AddItemToArray(table, row);
        cJSON_AddItemToArray(bars, cJSON_Duplicate(row, 1));
        free(steps);
        free(befores);
        free(finals);
    }
    bfs_model_free(&model);
    int rc = close_csv(csv, "robust_loss.csv");

    printf("\n%-10s %6s %10s %14s %16s\n", "matrix", "runs", "recovered", "median steps", "median eval MSE");
    for (cJSON *row = table->child; row; row = row->next) {
        double median_steps = cJSON_GetObjectItem(row, "median_steps_to_recover")->valuedouble;
        char steps_text[32] = "-";  // no run recovered
        if (cJSON_GetObjectItem(row, "recovered")->valueint > 0)
            snprintf(steps_text, sizeof(steps_text), "%.0f", median_steps);
        printf("%-10s %6d %9.0f%% %14s %16.4g\n", cJSON_GetObjectItem(row, "kind")->valuestring,
               cJSON_GetObjectItem(row, "runs")->valueint,
               100.0 * cJSON_GetObjectItem(row, "recovered_fraction")->valuedouble, steps_text,
               cJSON_GetObjectItem(row, "median_final_eval_mse")->valuedouble);
    }
    printf("(recovered: batch loss below %g within %ld steps; median steps over recovered runs)\n", exp->threshold,
           exp->steps);

    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "experiment", "bfs robust");
    cJSON_AddItemToObject(root, "model", config_json(cfg));
    cJSON_AddNumberToObject(root, "seed", (double)exp->seed);
    cJSON_AddNumberToObject(root, "seeds", exp->seeds);
    cJSON_AddNumberToObject(root, "steps", (double)exp->steps);
    cJSON_AddNumberToObject(root, "lr", exp->lr);
    cJSON_AddNumberToObject(root, "batch", exp->batch);
    cJSON_AddNumberToObject(root, "threshold", exp->threshold);
    cJSON_AddNumberToObject(root, "eval_count", (double)exp->eval_count);
    cJSON_AddItemToObject(root, "table", table);
    cJSON_AddItemToObject(root, "runs", runs);
    if (rc == 0) rc = write_json(out_dir, "robust.json", root, 1);
    else cJSON_Delete(root);
    char title[256];
    snprintf(title, sizeof(title),
             "{\"title\": \"Loss after randomizing one matrix (N = %d, Adam lr %g, batch %d)\","
             " \"width\": 500, \"height\": 300, \"mark\": {\"type\": \"line\", \"opacity\": 0.7},",
             cfg->n, exp->lr, exp->batch);
    char spec[2048];
    snprintf(spec, sizeof(spec),
             "%s \"encoding\": {"
             "  \"x\": {\"field\": \"step\", \"type\": \"quantitative\"},"
             "  \"y\": {\"field\": \"loss\", \"type\": \"quantitative\", \"scale\": {\"type\": \"log\"},"
             "         \"title\": \"batch MSE\"},"
             "  \"color\": {\"field\": \"kind\", \"type\": \"nominal\", \"title\": \"damaged matrix\"},"
             "  \"detail\": {\"field\": \"run\", \"type\": \"nominal\"},"
             "  \"tooltip\": [{\"field\": \"run_label\"}, {\"field\": \"step\"}, {\"field\": \"loss\"}]}}",
             title);
    if (rc == 0) rc = write_vega_lite(out_dir, "robust_loss.vl.json", spec, log.plot);
    else cJSON_Delete(log.plot);
    snprintf(spec, sizeof(spec),
             "{\"title\": \"Runs recovering below MSE %g within %ld steps\","
             " \"width\": 300, \"height\": 200, \"mark\": \"bar\","
             " \"encoding\": {"
             "  \"x\": {\"field\": \"kind\", \"type\": \"nominal\", \"title\": \"damaged matrix\", \"sort\": null},"
             "  \"y\": {\"field\": \"recovered_fraction\", \"type\": \"quantitative\","
             "         \"scale\": {\"domain\": [0, 1]}, \"title\": \"recovered fraction\"},"
             "  \"tooltip\": [{\"field\": \"kind\"}, {\"field\": \"runs\"}, {\"field\": \"recovered\"},"
             "              {\"field\": \"median_steps_to_recover\"}, {\"field\": \"median_final_eval_mse\"}]}}",
             exp->threshold, exp->steps);
    if (rc == 0) rc = write_vega_lite(out_dir, "robust_recovered.vl.json", spec, bars);
    else cJSON_Delete(bars);
    return rc;
}

int bfs_run_noise(const BfsConfig *cfg, const BfsExperiment *exp, const char *out_dir) {
    if (bfs_config_validate(cfg) != 0) return -1;
    if (pf_mkdir_p(out_dir) != 0) return -1;
    FILE *csv = open_csv(out_dir, "noise.csv", "sigma,seed,mse_before,accuracy_before,mse_after,accuracy_after");
    if (!csv) return -1;
    cJSON *rows = cJSON_CreateArray(), *plot = cJSON_CreateArray();
    BfsModel model;
    bfs_model_create(&model, cfg, exp->batch, exp->steps > 0);
    print_model_size(&model);
    printf("%10s %14s %14s %14s %14s\n", "sigma", "median MSE", "min..max", "median acc.",
           exp->steps > 0 ? "median MSE after" : "");
    for (int i = 0; i < exp->num_sigmas; i++) {
        double sigma = exp->sigmas[i];
        double *mse_before = mallocCheck((size_t)exp->seeds * sizeof(double));
        double *acc_before = mallocCheck((size_t)exp->seeds * sizeof(double));
        double *mse_after = mallocCheck((size_t)exp->seeds * sizeof(double));
        for (int s = 0; s < exp->seeds; s++) {
            Rng rng = rng_stream(exp->seed, 0x5161A0ULL + (uint64_t)i, (uint64_t)s);
            bfs_construct(&model);
            fill_normal(model.params_memory, model.num_parameters, sigma, 0, &rng);
            BfsEval before, after = {0};
            bfs_evaluate(&before, &model, exp->seed, exp->eval_count);
            if (exp->steps > 0) {
                double final_loss;
                train_adam(&model, exp, rng_mix64(exp->seed + 0x5eedULL * (uint64_t)(s + 1)), NULL, NULL, &final_loss);
                bfs_evaluate(&after, &model, exp->seed, exp->eval_count);
            }
            mse_before[s] = bfs_eval_mse(&before);
            acc_before[s] = (double)before.correct / before.count;
            mse_after[s] = exp->steps > 0 ? bfs_eval_mse(&after) : NAN;
            double acc_after = exp->steps > 0 ? (double)after.correct / after.count : NAN;
            fprintf(csv, "%g,%d,%.9g,%.9g,%.9g,%.9g\n", sigma, s, mse_before[s], acc_before[s], mse_after[s],
                    acc_after);
            cJSON *point = cJSON_CreateObject();
            cJSON_AddNumberToObject(point, "sigma", sigma);
            cJSON_AddNumberToObject(point, "seed", s);
            cJSON_AddStringToObject(point, "when", "perturbed");
            cJSON_AddNumberToObject(point, "mse", plot_floor(mse_before[s]));
            cJSON_AddItemToArray(plot, point);
            if (exp->steps > 0) {
                point = cJSON_Duplicate(point, 1);
                cJSON_ReplaceItemInObject(point, "when", cJSON_CreateString("retrained"));
                cJSON_ReplaceItemInObject(point, "mse", cJSON_CreateNumber(plot_floor(mse_after[s])));
                cJSON_AddItemToArray(plot, point);
            }
        }
        double lo = mse_before[0], hi = mse_before[0];
        for (int s = 1; s < exp->seeds; s++) {
            lo = fmin(lo, mse_before[s]);
            hi = fmax(hi, mse_before[s]);
        }
        double med = median(mse_before, exp->seeds), med_acc = median(acc_before, exp->seeds);
        double med_after = exp->steps > 0 ? median(mse_after, exp->seeds) : NAN;
        char range[64];
        snprintf(range, sizeof(range), "%.2g..%.2g", lo, hi);
        printf("%10g %14.4g %14s %14.4f", sigma, med, range, med_acc);
        if (exp->steps > 0) printf(" %14.4g", med_after);
        printf("\n");
        fflush(stdout);
        cJSON *row = cJSON_CreateObject();
        cJSON_AddNumberToObject(row, "sigma", sigma);
        cJSON_AddNumberToObject(row, "runs", exp->seeds);
        cJSON_AddNumberToObject(row, "median_mse", med);
        cJSON_AddNumberToObject(row, "min_mse", lo);
        cJSON_AddNumberToObject(row, "max_mse", hi);
        cJSON_AddNumberToObject(row, "median_accuracy", med_acc);
        if (exp->steps > 0) cJSON_AddNumberToObject(row, "median_mse_after_retraining", med_after);
        cJSON_AddItemToArray(rows, row);
        free(mse_before);
        free(acc_before);
        free(mse_after);
    }
    bfs_model_free(&model);
    int rc = close_csv(csv, "noise.csv");
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "experiment", "bfs noise");
    cJSON_AddItemToObject(root, "model", config_json(cfg));
    cJSON_AddNumberToObject(root, "seed", (double)exp->seed);
    cJSON_AddNumberToObject(root, "seeds", exp->seeds);
    cJSON_AddNumberToObject(root, "eval_count", (double)exp->eval_count);
    cJSON_AddNumberToObject(root, "retrain_steps", (double)exp->steps);
    cJSON_AddNumberToObject(root, "lr", exp->lr);
    cJSON_AddNumberToObject(root, "batch", exp->batch);
    cJSON_AddItemToObject(root, "rows", rows);
    if (rc == 0) rc = write_json(out_dir, "noise.json", root, 1);
    else cJSON_Delete(root);
    char spec[2048];
    snprintf(spec, sizeof(spec),
             "{\"title\": \"MSE after perturbing every weight by sigma N(0,1) (N = %d; floored at 1e-12)\","
             " \"width\": 400, \"height\": 250,"
             " \"encoding\": {"
             "  \"x\": {\"field\": \"sigma\", \"type\": \"quantitative\", \"scale\": {\"type\": \"log\"}},"
             "  \"color\": {\"field\": \"when\", \"type\": \"nominal\"}},"
             " \"layer\": ["
             "  {\"mark\": {\"type\": \"point\", \"opacity\": 0.5},"
             "   \"encoding\": {\"y\": {\"field\": \"mse\", \"type\": \"quantitative\", \"scale\": {\"type\": \"log\"},"
             "                 \"title\": \"MSE\"}, \"tooltip\": [{\"field\": \"sigma\"}, {\"field\": \"seed\"},"
             "                 {\"field\": \"mse\"}]}},"
             "  {\"mark\": \"line\","
             "   \"encoding\": {\"y\": {\"aggregate\": \"median\", \"field\": \"mse\", \"type\": \"quantitative\"}}}]}",
             cfg->n);
    if (rc == 0) rc = write_vega_lite(out_dir, "noise.vl.json", spec, plot);
    else cJSON_Delete(plot);
    return rc;
}
