// The hand-built BFS transformer (SPEC §5): construction, ops, forward/backward and evaluation. The
// projections go through ops.c's matmul; the attention core, the squash and the readout are this
// model's own ops.
#include "bfs/bfs.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "ops/ops.h"
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
        q[C + m->notans_off] = 1.0f;                // ... and any vertex token ...
        k[C + 0] = s * ANSWER_KEY;                  // ... matches the answer token, whose value is zero,
        if (m->config.blog_reach) {
            k[j] = 1.0f;  // ... unless it matches the neighbours of j, and reads who they are
            for (int i = 0; i < N; i++) v[(size_t)i * C + m->self_off + i] = 1.0f;
        } else {
            k[m->self_off + j - 1] = 1.0f;  // ... unless it matches j itself, and reads j's neighbours
            for (int i = 0; i < N; i++) v[(size_t)i * C + 1 + i] = 1.0f;
        }
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

const float *bfs_layer_state(const BfsModel *m, int l) {
    if (!m->training || l < 0 || l > m->L) return NULL;
    return layer_input(m, l);
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
