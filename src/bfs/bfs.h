// The hand-built BFS transformer of SPEC §5: an attention-only model whose weights are set by hand
// so that it computes the BFS distance dist(1, 2) (or dist(1, t) with the target given as input),
// its forward/backward ops, evaluation on random graphs, and the robustness experiments (damage one
// weight matrix or perturb all weights, retrain with Adam, watch the loss recover: bfs_experiments.h).
//
// Tokens: token 0 is the answer token, token v (1..N) is vertex v; T = N + 1, no padding.
// Hidden width C = 4N + 2 (5N + 2 with the target input), in sections:
//   [answer flag (1) | neighbours (N) | reach (N) | out (N) | self (N) | (target (N)) | not-answer (1)]
// N layers. Each layer has N "reach" heads and one "record" head; head outputs are added into the
// residual stream, then the reach section is squashed by x -> 2 sigmoid(5x) - 1. No scaling, no
// LayerNorm, no MLP. Output = 1 + sum over l of (1 - out[l]) on the answer token.
//
// Parameters, as in the blog's code: reach head j has its own Q (2, C), K (2, C), V (N, C), shared by
// every layer (it does the same job, "gather the neighbours of j", in every layer); the record head
// has its own Q, K (RQ, C) and V (N, C) per layer (layer l writes out slot l). A head computes
// q = W_q x, k = W_k x, v = W_v x per token, softmax(q . k) over all tokens, and sums the values;
// reach heads add into the reach section, record heads into the out section.
#ifndef PATHFORMER_BFS_H
#define PATHFORMER_BFS_H

#include <stddef.h>
#include <stdint.h>

#include "graph.h"

#define BFS_MIN_N 3
#define BFS_MAX_N 31   // the attention activations grow as N^4; graph.h's own bound is 63
// The published constants (scale 1) leave softmax leaks of e^-7 per layer in the record head and
// e^-12 per head in the reach heads, which the squash (slope 2.5 at 0) amplifies layer after layer:
// MSE ~8e-5 at N = 8, ~1e-2 at N = 9, and unreachable vertices look reachable from N = 10. Doubling
// every score (scale 2) brings N = 8 to ~3e-11.
//
// Two ways to build the reach heads (BfsConfig.blog_reach):
// - the blog's: in head j, a vertex that reaches j attends to the neighbours of j (key neighbour[j])
//   and reads their self one-hots. The attention is split among the deg(j) neighbours, so a vertex
//   reached through a hub of degree k gets reach squash(1/k), and 30 squash(1/k) < 12 once k >= 6..7:
//   BFS stalls a layer and the answer is one too large (1..7 graphs in 16,384 for N = 11..15).
// - the default ("direct"): in head j, a vertex that reaches j attends to token j itself (key
//   self[j]) and reads j's neighbour section. One key matches, whatever j's degree, so every newly
//   reached vertex gets at least squash(1) = 0.987 and the next layer's query is never short of the
//   sink: exact for every N the tests reach (3..15, both variants). The same parameter shapes, the
//   same "gather the neighbours of j", one hop per layer.
#define BFS_DEFAULT_SCALE 2.0f

typedef struct {
    int n;              // N: vertices per graph, layers, reach heads (published 8)
    int target_input;   // 0: answers dist(1, 2) (the blog); 1: dist(1, t) with t on the answer token
    float scale;        // multiplies every attention score of the construction (1: the published 12/30/42/7)
    int blog_reach;     // 1: the blog's reach heads (attend to j's neighbours); 0: direct (attend to j)
} BfsConfig;

// 0, or -1 with the error set (N out of BFS_MIN_N..BFS_MAX_N, scale not in (0, 100]).
int bfs_config_validate(const BfsConfig *cfg);

// The weight-matrix kinds, in parameter order; a kind has N matrices (reach heads) or L = N
// matrices (record heads, one per layer).
#define BFS_NUM_KINDS 6
typedef enum { BFS_REACH_Q, BFS_REACH_K, BFS_REACH_V, BFS_RECORD_Q, BFS_RECORD_K, BFS_RECORD_V } BfsKind;
extern const char *const BFS_KIND_NAMES[BFS_NUM_KINDS];  // reach_q reach_k reach_v record_q record_k record_v
// The kind named `name`, or -1 with the error set.
int bfs_kind_lookup(const char *name);

typedef struct {
    float *reach_q;    // (N, 2, C)  head j: rows (30 reach[j], not-answer)
    float *reach_k;    // (N, 2, C)  head j: rows (self[j], 12 answer); blog: (neighbour[j], 12 answer)
    float *reach_v;    // (N, N, C)  the token's neighbour section; blog: its self one-hot
    float *record_q;   // (L, RQ, C) answer flag on every row (+ the target one-hot)
    float *record_k;   // (L, RQ, C)
    float *record_v;   // (L, N, C)  self[1] into out slot l
} BfsParams;

typedef struct {
    BfsConfig config;
    int N, L, T, C, RQ;          // vertices, layers, tokens, width, record head query width
    int reach_off, out_off, self_off, target_off, notans_off;   // section offsets (answer flag at 0,
                                                                 // neighbour j at column j)
    size_t param_sizes[BFS_NUM_KINDS];
    size_t num_parameters;
    float *params_memory;
    BfsParams params;
    float *grads_memory;         // NULL for an inference-only model
    BfsParams grads;
    int capacity;                // B, examples per forward
    int training;                // activations of every layer saved for the backward pass
    int fast;                    // training through the kernels (see bfs_model_create); the per-head
                                 // tensors below are then NULL and the fast path's are used
    // activations: per layer when training, one reused slot otherwise (x: two slots)
    size_t num_activations;      // floats in acts_memory and scratch_memory together
    float *acts_memory;
    float *x;          // (L + 1, B, T, C) layer inputs; x[L] is the final state
    float *y;          // (L, B, T, C) residual stream before the squash
    float *reach_q;    // (L, B, T, 2N) head j at columns 2j..2j+1
    float *reach_k;    // (L, B, T, 2N)
    float *reach_v;    // (L, B, T, N*N) head j at columns jN..jN+N-1
    float *reach_att;  // (L, B, N, T, T) softmax probabilities
    float *record_q;   // (L, B, T, RQ)
    float *record_k;   // (L, B, T, RQ)
    float *record_v;   // (L, B, T, N)
    float *record_att; // (L, B, 1, T, T)
    float *pred;       // (B)
    // backward scratch, one layer
    float *scratch_memory;
    float *dx, *dx_next, *dy;              // (B, T, C) (reference path)
    float *dreach_q, *dreach_k, *dreach_v; // as the activations
    float *drecord_q, *drecord_k, *drecord_v;
    float *dpred;                          // (B)
    // the fast path: each layer's projections of all heads of a kind, one row per token (reach:
    // q | k | v of the N heads, PR = 4N + N^2 columns, the parameters' own order; record: q | k | v,
    // PC = 2 RQ + N), the probabilities with the query in the lanes (bfs_kernels.h), and each layer's
    // record weights gathered into one (PC, C) matrix
    int PR, PC;
    float *reach_proj, *record_proj;       // (L, B, T, PR), (L, B, T, PC)
    float *reach_probs, *record_probs;     // (L, B, N, T, 16), (L, B, 1, T, 16)
    float *record_packed;                  // (L, PC, C)
    // The fast path works in micro-batches of BFS_MICRO_BATCH examples, each thread on whole ones:
    // per thread a workspace (one micro-batch's activations of every layer, for
    // bfs_forward_backward, and its backward scratch), and each micro-batch's share of the weight
    // gradients, added up in micro-batch order (so the sums depend on neither threads nor calls).
    int workspaces;                        // threads that can work at once
    struct BfsWorkspace *workspace;        // (workspaces), each thread's (bfs.c)
    float *grad_parts;                     // (micro-batches in `capacity`, num_parameters), each
                                           // with the record heads' rows packed per layer (bfs.c)
} BfsModel;

// What a model is for. BFS_TRAINING takes the fast path when it fits (T <= 16, i.e. N <= 15): the
// projections of all heads in one product per kind, the attention and the squash in the kernels of
// bfs_kernels.h (one variant per instruction set, the same bits on each), single-threaded kernels
// over example ranges, and the input gradient only where a parameter's gradient needs it (the reach
// and out sections; the others never change). Its sums run in another order than the reference
// path (BFS_TRAINING_REFERENCE, the ops above in plain loops), so the two agree to float round-off,
// not bit for bit (test_bfs checks both against finite differences and against each other).
enum { BFS_INFERENCE = 0, BFS_TRAINING = 1, BFS_TRAINING_REFERENCE = 2 };
// Examples per micro-batch of the fast path. One micro-batch's activations of all N = 8 layers take
// about 3 MiB, so a step of bfs_forward_backward keeps them in cache where whole-batch layers (a
// batch of 512: 46 MiB) went through memory; it also fixes the order of the gradient's sums.
enum { BFS_MICRO_BATCH = 32 };
// Allocates a model for batches of up to `capacity` examples; weights zero (see bfs_construct).
void bfs_model_create(BfsModel *model, const BfsConfig *cfg, int capacity, int training);
void bfs_model_free(BfsModel *model);
// Sets the hand-built weights of SPEC §5 (and the target-input generalization).
void bfs_construct(BfsModel *model);
// Matrix `index` of a kind within a parameter (or gradient) block: pointer and element count.
float *bfs_matrix(const BfsModel *model, const BfsParams *block, BfsKind kind, int index, size_t *size);
// Matrices in a kind: N for reach heads, L for record heads.
int bfs_kind_count(const BfsModel *model, BfsKind kind);

// Initial residual stream of one example (T, C): graph on N vertices; target used with target_input.
void bfs_encode(float *x, const BfsModel *model, const Graph *g, int target);

// One example: graph on N vertices from the "2N draws" rule, target 2 (or uniform in 2..N with the
// target input), label dist(1, target) or N + 1 when unreachable. Keyed like the data sets.
void bfs_sample(Graph *g, int *target, int *label, const BfsModel *model, uint64_t seed, uint64_t step,
                uint64_t index);
// Fills the model's input x[0] and labels (B) with examples (seed, step, 0..B-1).
void bfs_make_batch(BfsModel *model, float *labels, uint64_t seed, uint64_t step, int B);

// --- the ops, forward/backward pairs (backward accumulates into its outputs) ---
// out (B, T, C) += at columns [offset, offset + HV): sum over H heads of softmax(q_h k_h^T) v_h.
// q, k (B, T, H QK), v (B, T, H HV), head h at columns h QK and h HV; att (B, H, T, T) saves the
// probabilities. No scaling, no mask.
void bfs_attention_forward(float *out, float *att, const float *q, const float *k, const float *v, int B, int T,
                           int C, int offset, int H, int QK, int HV);
// dq, dk, dv += their gradients given dout (B, T, C) at columns [offset, offset + HV).
void bfs_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k,
                            const float *v, const float *att, int B, int T, int C, int offset, int H, int QK, int HV);
// out (R, C) = inp, with columns [offset, offset + W) squashed by 2 sigmoid(5x) - 1.
void bfs_squash_forward(float *out, const float *inp, int R, int C, int offset, int W);
// dinp (R, C) += dout, times the squash's derivative 10 s (1 - s), s = sigmoid(5 inp), on the squashed columns.
void bfs_squash_backward(float *dinp, const float *dout, const float *inp, int R, int C, int offset, int W);
// pred (B) = 1 + sum over the W columns from `offset` of token 0 of (1 - inp).
void bfs_readout_forward(float *pred, const float *inp, int B, int T, int C, int offset, int W);
void bfs_readout_backward(float *dinp, const float *dpred, int B, int T, int C, int offset, int W);

// --- the model ---
// Forward on x[0] (B, T, C), filled by the caller (bfs_encode or bfs_make_batch); writes pred (B).
void bfs_forward(BfsModel *model, int B);
// The residual stream entering layer l (0..L; L is the final state) in the last forward, (B, T, C)
// with example b at b T C: for interpretability (src/interp probes it). Needs a training model,
// the one that keeps every layer (an inference model reuses two slots); NULL otherwise.
const float *bfs_layer_state(const BfsModel *model, int l);
// Mean squared error of pred against labels.
double bfs_mse(const BfsModel *model, const float *labels, int B);
void bfs_zero_grad(BfsModel *model);
// Backward of the mean squared error (needs a training model and a forward on the same batch).
void bfs_backward(BfsModel *model, const float *labels, int B);
// bfs_forward then bfs_backward in one call, with the same bits. On the fast path each micro-batch
// goes through every layer and back while its activations are in cache (N = 8, batch 512: 1.35-1.6x
// the examples/s of whole-batch layers); the layer states (bfs_layer_state) are then not kept.
void bfs_forward_backward(BfsModel *model, const float *labels, int B);

// --- evaluation ---
typedef struct {
    long count;
    double sse;            // sum of squared errors
    long correct;          // round(pred) == label
    double max_error;      // largest |pred - label|
    long label_count[BFS_MAX_N + 2];
    double label_sse[BFS_MAX_N + 2];
} BfsEval;

// `count` fresh examples (seed, stream far from training steps) in batches of the model's capacity.
void bfs_evaluate(BfsEval *result, BfsModel *model, uint64_t seed, long count);
double bfs_eval_mse(const BfsEval *result);

#endif
