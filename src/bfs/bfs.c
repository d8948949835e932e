// The hand-built BFS transformer (SPEC §5): construction, ops, forward/backward and evaluation. The
// projections go through ops.c's matmul; the attention core, the squash and the readout are this
// model's own ops.
#include "bfs/bfs.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "common.h"
#include "bfs/bfs_kernels.h"
#include "ops/gemm.h"
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

// One zeroed allocation cut into the tensors of `sizes`; adds its floats to *count.
static float *allocate_block(float **const *ptrs, const size_t *sizes, size_t num, size_t *count) {
    size_t total = 0;
    for (size_t i = 0; i < num; i++) total += sizes[i];
    float *memory = callocCheck(total, sizeof(float)), *p = memory;
    for (size_t i = 0; i < num; i++) {
        *ptrs[i] = p;
        p += sizes[i];
    }
    *count += total;
    return memory;
}

// One thread's workspace on the fast path, for one micro-batch (MB = BFS_MICRO_BATCH examples, MBT
// = MB T rows): the activations of every layer (bfs_forward_backward's; bfs_forward keeps them in
// the model's whole-batch tensors instead) and the backward pass's scratch.
typedef struct BfsWorkspace {
    float *memory;                              // the one allocation behind the tensors below
    float *x;                                   // (L, MBT, C) the inputs of layers 1..L
    float *y;                                   // (L, MBT, C)
    float *reach_proj, *record_proj;            // (L, MBT, PR), (L, MBT, PC)
    float *reach_probs, *record_probs;          // (L, MB, N, T, 16), (L, MB, 1, T, 16)
    float *dx, *dx_next, *dy;                   // (MBT, C)
    float *dreach_proj, *drecord_proj;          // (MBT, PR), (MBT, PC)
    // the reach projections' share from the columns no head writes (the same in every layer), and
    // the reach projections' gradient summed over the layers (that share's weight gradient)
    float *reach_static, *dreach_sum;           // (MBT, PR) each
} Workspace;

static void allocate_workspace(BfsModel *m, Workspace *w) {
    size_t C = (size_t)m->C, L = (size_t)m->L, n = (size_t)m->N, T = (size_t)m->T, MB = BFS_MICRO_BATCH;
    size_t MBT = MB * T, PR = (size_t)m->PR, PC = (size_t)m->PC, probs = MB * T * BFS_KERNEL_LANES;
    size_t sizes[] = {L * MBT * C, L * MBT * C, L * MBT * PR, L * MBT * PC, L * probs * n, L * probs, MBT * C,
                      MBT * C,     MBT * C,     MBT * PR,     MBT * PC,     MBT * PR,      MBT * PR};
    float **ptrs[] = {&w->x,  &w->y,       &w->reach_proj,  &w->record_proj,  &w->reach_probs, &w->record_probs,
                      &w->dx, &w->dx_next, &w->dy,          &w->dreach_proj,  &w->drecord_proj, &w->reach_static,
                      &w->dreach_sum};
    w->memory = allocate_block(ptrs, sizes, sizeof(sizes) / sizeof(sizes[0]), &m->num_activations);
}

// The fast path's tensors: each layer's projections of all heads of a kind in one row per token
// (the kernels' layout), the probabilities with the query in the lanes, the threads' workspaces and
// the micro-batches' gradient shares.
static void allocate_fast(BfsModel *m, size_t BT) {
    size_t C = (size_t)m->C, L = (size_t)m->L, n = (size_t)m->N, B = (size_t)m->capacity, T = (size_t)m->T;
    size_t acts[] = {(L + 1) * BT * C, L * BT * C, L * BT * (size_t)m->PR, L * BT * (size_t)m->PC,
                     L * B * n * T * BFS_KERNEL_LANES, L * B * T * BFS_KERNEL_LANES, B};
    float **act_ptrs[] = {&m->x, &m->y, &m->reach_proj, &m->record_proj, &m->reach_probs, &m->record_probs, &m->pred};
    m->acts_memory = allocate_block(act_ptrs, acts, sizeof(acts) / sizeof(acts[0]), &m->num_activations);
    size_t scratch[] = {B, L * (size_t)m->PC * C};
    float **scratch_ptrs[] = {&m->dpred, &m->record_packed};
    m->scratch_memory = allocate_block(scratch_ptrs, scratch, sizeof(scratch) / sizeof(scratch[0]), &m->num_activations);
#ifdef _OPENMP
    m->workspaces = omp_get_max_threads();
#else
    m->workspaces = 1;
#endif
    m->workspace = callocCheck((size_t)m->workspaces, sizeof(*m->workspace));
    for (int i = 0; i < m->workspaces; i++) allocate_workspace(m, &m->workspace[i]);
    size_t parts = (B + BFS_MICRO_BATCH - 1) / BFS_MICRO_BATCH;
    m->grad_parts = callocCheck(parts * m->num_parameters, sizeof(float));
    m->num_activations += parts * m->num_parameters;
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
    model->training = training != BFS_INFERENCE;
    model->fast = training == BFS_TRAINING && model->T <= BFS_KERNEL_LANES && 2 * N <= BFS_KERNEL_MAX_QK &&
                  model->RQ <= BFS_KERNEL_MAX_QK;
    model->PR = 4 * N + N * N;
    model->PC = 2 * model->RQ + N;

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
    if (model->fast) {
        allocate_fast(model, BT);
        return;
    }
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
    model->acts_memory = allocate_block(act_ptrs, act_sizes, sizeof(act_sizes) / sizeof(act_sizes[0]),
                                        &model->num_activations);
    if (!training) return;
    size_t scratch_sizes[] = {BT * C, BT * C, BT * C, BT * 2 * n, BT * 2 * n, BT * n * n, BT * RQ, BT * RQ, BT * n,
                              (size_t)capacity};
    float **scratch_ptrs[] = {&model->dx,        &model->dx_next,   &model->dy,        &model->dreach_q,
                              &model->dreach_k,  &model->dreach_v,  &model->drecord_q, &model->drecord_k,
                              &model->drecord_v, &model->dpred};
    model->scratch_memory = allocate_block(scratch_ptrs, scratch_sizes, sizeof(scratch_sizes) / sizeof(scratch_sizes[0]),
                                           &model->num_activations);
}

void bfs_model_free(BfsModel *model) {
    free(model->params_memory);
    free(model->grads_memory);
    free(model->acts_memory);
    free(model->scratch_memory);
    for (int i = 0; model->workspace && i < model->workspaces; i++) free(model->workspace[i].memory);
    free(model->workspace);
    free(model->grad_parts);
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

// ---------------------------------------------------------------------------------------------
// The fast path (BFS_TRAINING, bfs.h): per layer one product for the reach heads' q | k | v (their
// parameters are one (PR, C) matrix), one for the record head's (its rows gathered per step), the
// kernels' attention and squash; the input gradient only in the reach and out sections, the only
// ones a head writes (so the only ones whose gradient reaches a parameter). The batch goes in
// micro-batches, each through every layer by one thread; each micro-batch's weight gradients are
// summed from zero into its own share, and the shares are added in micro-batch order, so that the
// results depend on neither the thread count nor the calls (bfs_forward_backward or the two).

static const BfsKernels *kernels(void) {
    const char *name = ops_kernels_variant();
#if defined(__x86_64__) && defined(PF_KERNELS_SIMD)
    if (strcmp(name, "avx512") == 0) return &BFS_KERNELS_avx512;
    if (strcmp(name, "avx2") == 0) return &BFS_KERNELS_avx2;
#endif
    (void)name;
#if defined(__aarch64__)
    return &BFS_KERNELS_neon;
#else
    return &BFS_KERNELS_plain;
#endif
}

// Threads for a parallel region over the micro-batches: as many as OpenMP would start, at most one
// per workspace.
static int micro_threads(const BfsModel *m) {
#ifdef _OPENMP
    int threads = omp_get_max_threads();
    return threads < m->workspaces ? threads : m->workspaces;
#else
    return 1;
#endif
}

// Layer l's record head as one (PC, C) matrix: q rows, k rows, v rows.
static void pack_record(BfsModel *m) {
    size_t C = (size_t)m->C, RQ = (size_t)m->RQ, n = (size_t)m->N;
    for (int l = 0; l < m->L; l++) {
        float *dst = m->record_packed + (size_t)l * m->PC * C;
        memcpy(dst, m->params.record_q + l * RQ * C, RQ * C * sizeof(float));
        memcpy(dst + RQ * C, m->params.record_k + l * RQ * C, RQ * C * sizeof(float));
        memcpy(dst + 2 * RQ * C, m->params.record_v + l * n * C, n * C * sizeof(float));
    }
}

// Where a micro-batch keeps its activations: in the model's whole-batch tensors (bfs_forward, which
// keeps every layer's state) or in its thread's workspace (bfs_forward_backward). Pointers at the
// micro-batch's first example; `slot`: examples between one layer's tensor and the next one's.
typedef struct {
    const float *x0;   // the input (the model's x[0])
    float *x;          // layer 1's input
    float *y, *reach_proj, *record_proj, *reach_probs, *record_probs;  // layer 0's
    size_t slot;
} Acts;

static Acts model_acts(const BfsModel *m, int b0) {
    size_t T = (size_t)m->T, slot = (size_t)m->capacity, b = (size_t)b0, probs = T * BFS_KERNEL_LANES;
    Acts a = {
        .x0 = m->x + b * T * m->C,
        .x = m->x + (slot + b) * T * m->C,
        .y = m->y + b * T * m->C,
        .reach_proj = m->reach_proj + b * T * m->PR,
        .record_proj = m->record_proj + b * T * m->PC,
        .reach_probs = m->reach_probs + b * m->N * probs,
        .record_probs = m->record_probs + b * probs,
        .slot = slot,
    };
    return a;
}

static Acts workspace_acts(const BfsModel *m, const Workspace *w, int b0) {
    Acts a = {
        .x0 = m->x + (size_t)b0 * m->T * m->C,
        .x = w->x,
        .y = w->y,
        .reach_proj = w->reach_proj,
        .record_proj = w->record_proj,
        .reach_probs = w->reach_probs,
        .record_probs = w->record_probs,
        .slot = BFS_MICRO_BATCH,
    };
    return a;
}

typedef struct {
    const float *x;
    float *x_next, *reach_proj, *record_proj, *reach_probs, *record_probs;
    float *y;  // the reach section before the squash (only those columns are kept)
    const float *record_weight;
} FastLayer;

static FastLayer fast_layer(const BfsModel *m, const Acts *a, int l) {
    size_t rows = a->slot * m->T, C = (size_t)m->C, probs = a->slot * m->T * BFS_KERNEL_LANES;
    FastLayer f = {
        .x = l == 0 ? a->x0 : a->x + (size_t)(l - 1) * rows * C,
        .x_next = a->x + (size_t)l * rows * C,
        .y = a->y + (size_t)l * rows * C,
        .reach_proj = a->reach_proj + (size_t)l * rows * m->PR,
        .record_proj = a->record_proj + (size_t)l * rows * m->PC,
        .reach_probs = a->reach_probs + (size_t)l * probs * m->N,
        .record_probs = a->record_probs + (size_t)l * probs,
        .record_weight = m->record_packed + (size_t)l * m->PC * C,
    };
    return f;
}

// Forward through every layer of examples [b0, b0 + n) (n <= BFS_MICRO_BATCH); pred written.
static void forward_micro(BfsModel *m, const Workspace *w, const Acts *a, int b0, int n) {
    const BfsKernels *k = kernels();
    int N = m->N, T = m->T, C = m->C, RQ = m->RQ, PR = m->PR, PC = m->PC, rows = n * T;
    int dyn = m->reach_off, dyn_width = 2 * N, tail = dyn + dyn_width;  // the reach and out sections
    const float *reach_w = m->params.reach_q;
    // The reach heads' weights are shared by every layer, and the columns outside the reach and
    // out sections never change: their share of the reach projections is computed once.
    gemm_nt(w->reach_static, PR, a->x0, C, reach_w, C, rows, PR, dyn, NULL, NULL, 0, 0);
    gemm_nt(w->reach_static, PR, a->x0 + tail, C, reach_w + tail, C, rows, PR, C - tail, NULL, w->reach_static, PR, 0);
    const float *x = a->x0;
    for (int l = 0; l < m->L; l++) {
        FastLayer f = fast_layer(m, a, l);
        gemm_nt(f.reach_proj, PR, f.x + dyn, C, reach_w + dyn, C, rows, PR, dyn_width, NULL, w->reach_static, PR, 0);
        gemm_nt(f.record_proj, PC, f.x, C, f.record_weight, C, rows, PC, C, NULL, NULL, 0, 0);
        // the heads add into the next layer's input; y keeps the reach section before the squash
        memcpy(f.x_next, f.x, (size_t)rows * C * sizeof(float));
        k->attention_forward(f.x_next, f.reach_probs, f.reach_proj, PR, 0, n, T, C, m->reach_off, N, 2, N);
        k->attention_forward(f.x_next, f.record_probs, f.record_proj, PC, 0, n, T, C, m->out_off, 1, RQ, N);
        for (size_t r = 0; r < (size_t)rows; r++)
            memcpy(f.y + r * C + m->reach_off, f.x_next + r * C + m->reach_off, N * sizeof(float));
        k->squash_forward(f.x_next, f.y, 0, rows, C, m->reach_off, N);
        x = f.x_next;
    }
    bfs_readout_forward(m->pred + b0, x, n, T, C, m->out_off, N);
}

// A micro-batch's share of the weight gradients: the reach heads' (PR, C) block as in the parameters,
// then each layer's record head as one (PC, C) matrix like record_packed (its q, k and v gradients
// in one product: 14 of 16 lanes busy at N = 8 where three products kept 3, 3 and 8).
static float *record_part(const BfsModel *m, float *part, int l) {
    return part + (size_t)m->PR * m->C + (size_t)l * m->PC * m->C;
}

// Backward through every layer of examples [b0, b0 + n) from dpred: their weight gradients added
// into `part` (record_part's layout).
static void backward_micro(const BfsModel *m, const Workspace *w, const Acts *a, int b0, int n, float *part) {
    const BfsKernels *k = kernels();
    int N = m->N, T = m->T, C = m->C, RQ = m->RQ, PR = m->PR, PC = m->PC, rows = n * T;
    int dyn = m->reach_off, dyn_width = 2 * N, tail = dyn + dyn_width;  // the reach and out sections
    float *dx = w->dx, *dx_next = w->dx_next, *dy = w->dy;
    memset(dx, 0, (size_t)rows * C * sizeof(float));
    bfs_readout_backward(dx, m->dpred + b0, n, T, C, m->out_off, N);
    for (int l = m->L - 1; l >= 0; l--) {
        FastLayer f = fast_layer(m, a, l);
        k->squash_backward(dy, dx, f.y, 0, rows, C, m->reach_off, N);
        for (int r = 0; r < rows; r++)
            memcpy(dy + (size_t)r * C + m->out_off, dx + (size_t)r * C + m->out_off, N * sizeof(float));
        k->attention_backward(w->dreach_proj, dy, f.reach_proj, f.reach_probs, PR, 0, n, T, C, m->reach_off, N, 2, N);
        k->attention_backward(w->drecord_proj, dy, f.record_proj, f.record_probs, PC, 0, n, T, C, m->out_off, 1, RQ,
                              N);
        // the static columns' share of the reach gradient: the sum over layers, taken once
        size_t count = (size_t)rows * PR;
        if (l == m->L - 1) memcpy(w->dreach_sum, w->dreach_proj, count * sizeof(float));
        else for (size_t i = 0; i < count; i++) w->dreach_sum[i] += w->dreach_proj[i];
        if (l > 0) {  // the residual path, then each product's input gradient
            for (int r = 0; r < rows; r++)
                memcpy(dx_next + (size_t)r * C + dyn, dy + (size_t)r * C + dyn, (size_t)dyn_width * sizeof(float));
            gemm_nn(dx_next + dyn, C, w->dreach_proj, PR, m->params.reach_q + dyn, C, rows, dyn_width, PR, 1);
            gemm_nn(dx_next + dyn, C, w->drecord_proj, PC, f.record_weight + dyn, C, rows, dyn_width, PC, 1);
        }
        // the weight gradients: reach q | k | v in their dynamic columns, the record head whole
        gemm_tn(part + dyn, C, w->dreach_proj, PR, f.x + dyn, C, rows, PR, dyn_width);
        gemm_tn(record_part(m, part, l), C, w->drecord_proj, PC, f.x, C, rows, PC, C);
        float *swap = dx;
        dx = dx_next;
        dx_next = swap;
    }
    gemm_tn(part, C, w->dreach_sum, PR, a->x0, C, rows, PR, dyn);
    gemm_tn(part + tail, C, w->dreach_sum, PR, a->x0 + tail, C, rows, PR, C - tail);
}

static int micro_batches(int B) { return (B + BFS_MICRO_BATCH - 1) / BFS_MICRO_BATCH; }

// grads[dst, dst + count) += the micro-batches' shares at [src, src + count), added in micro-batch order.
static void add_parts(BfsModel *m, int parts, float *dst, size_t src, size_t count) {
    size_t P = m->num_parameters;
    for (size_t i = 0; i < count; i++) {
        float sum = m->grad_parts[src + i];
        for (int p = 1; p < parts; p++) sum += m->grad_parts[(size_t)p * P + src + i];
        dst[i] += sum;
    }
}

// grads += the micro-batches' shares (record_part's layout).
static void add_grad_parts(BfsModel *m, int parts) {
    size_t C = (size_t)m->C, RQ = (size_t)m->RQ, n = (size_t)m->N;
    BfsParams *g = &m->grads;
    add_parts(m, parts, g->reach_q, 0, (size_t)m->PR * C);  // reach q, k and v: one block
    for (int l = 0; l < m->L; l++) {
        size_t at = (size_t)(record_part(m, m->grad_parts, l) - m->grad_parts);
        add_parts(m, parts, g->record_q + l * RQ * C, at, RQ * C);
        add_parts(m, parts, g->record_k + l * RQ * C, at + RQ * C, RQ * C);
        add_parts(m, parts, g->record_v + l * n * C, at + 2 * RQ * C, n * C);
    }
}

enum { PASS_FORWARD = 1, PASS_BACKWARD = 2 };

// The fast path over the batch: forward (into the model's tensors), backward (from them), or both
// per micro-batch (in the workspaces).
static void run_fast(BfsModel *m, const float *labels, int B, int passes) {
    int parts = micro_batches(B);
    if (passes & PASS_FORWARD) pack_record(m);
    if (passes == PASS_BACKWARD) mse_backward(m->dpred, m->pred, labels, NULL, B, 1.0f / B);
#pragma omp parallel num_threads(micro_threads(m))
    {
        int lo, hi;
        pf_thread_share(parts, &lo, &hi);
        const Workspace *w = &m->workspace[pf_thread_id()];
        for (int p = lo; p < hi; p++) {
            int b0 = p * BFS_MICRO_BATCH, n = B - b0 < BFS_MICRO_BATCH ? B - b0 : BFS_MICRO_BATCH;
            Acts a = passes == (PASS_FORWARD | PASS_BACKWARD) ? workspace_acts(m, w, b0) : model_acts(m, b0);
            if (passes & PASS_FORWARD) forward_micro(m, w, &a, b0, n);
            if (passes & PASS_BACKWARD) {
                float *part = m->grad_parts + (size_t)p * m->num_parameters;
                if (passes & PASS_FORWARD)
                    mse_backward(m->dpred + b0, m->pred + b0, labels + b0, NULL, n, 1.0f / B);
                memset(part, 0, m->num_parameters * sizeof(float));
                backward_micro(m, w, &a, b0, n, part);
            }
        }
    }
    if (passes & PASS_BACKWARD) add_grad_parts(m, parts);
}

void bfs_forward(BfsModel *m, int B) {
    if (m->fast) {
        run_fast(m, NULL, B, PASS_FORWARD);
        return;
    }
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
    if (m->fast) {
        run_fast(m, labels, B, PASS_BACKWARD);
        return;
    }
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
        matmul_backward(dx, g->reach_q, NULL, m->dreach_q, x, p->reach_q, NULL, BT, C, 2 * N);
        matmul_backward(dx, g->reach_k, NULL, m->dreach_k, x, p->reach_k, NULL, BT, C, 2 * N);
        matmul_backward(dx, g->reach_v, NULL, m->dreach_v, x, p->reach_v, NULL, BT, C, N * N);
        matmul_backward(dx, g->record_q + (size_t)l * RQ * C, NULL, m->drecord_q, x,
                        p->record_q + (size_t)l * RQ * C, NULL, BT, C, RQ);
        matmul_backward(dx, g->record_k + (size_t)l * RQ * C, NULL, m->drecord_k, x,
                        p->record_k + (size_t)l * RQ * C, NULL, BT, C, RQ);
        matmul_backward(dx, g->record_v + (size_t)l * N * C, NULL, m->drecord_v, x,
                        p->record_v + (size_t)l * N * C, NULL, BT, C, N);
        if (l > 0) {
            float *swap = m->dx;
            m->dx = m->dx_next;
            m->dx_next = swap;
        }
    }
}

void bfs_forward_backward(BfsModel *m, const float *labels, int B) {
    if (m->fast) {
        run_fast(m, labels, B, PASS_FORWARD | PASS_BACKWARD);
        return;
    }
    bfs_forward(m, B);
    bfs_backward(m, labels, B);
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
