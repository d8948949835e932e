// The layer ops of the encoder, as forward/backward pairs, threaded with OpenMP: the reference in
// ops_reference.c, the fast versions of some behind a backend table (backend.h; chosen below).
// Argument order: outputs, saved values, inputs and weights, sizes. Backward functions accumulate
// (+=) into parameter gradients and into input gradients.
#ifndef PATHFORMER_OPS_H
#define PATHFORMER_OPS_H

#include <stddef.h>
#include <stdint.h>

// The longest sequence the attention ops take (they keep rows of scores on the stack): one more than
// graph.h's PF_MAX_EDGES, the longest the data settings allow (model.c asserts that they agree).
#define OPS_MAX_T 257

// Sets the thread count of OpenMP and of the BLAS library (n <= 0: all cores); returns it.
int ops_set_threads(int n);

// Backends. The ops with more than one implementation come in families, and each family runs on
// one backend, chosen at run time: "kernels" (the default: matmul with gemm.h's products, attention,
// layernorm), "loops" (the reference, plain loops: every family) and "openblas" (matmul, when the
// build found a CBLAS; outside the guarantee below). The other ops have one implementation.
// test_backends runs every family on every backend against "loops".
//
// The kernels come in one variant per instruction set ("avx512", "avx2", "plain" on x86-64; "neon" on
// ARM64), all in one binary: the fastest the CPU runs is chosen at start, or the one the environment
// variable PF_KERNELS names (an unknown one, or one the CPU cannot run, stops the program with an
// error). Every variant gives the same bits, so a run's results do not depend on the machine.
const char *ops_kernels_variant(void);
// The variants this build has that this CPU runs, fastest first, separated by spaces.
const char *ops_kernel_variants(void);
// Switches the kernels to the named variant; -1 when the build lacks it or the CPU cannot run it.
int ops_set_kernels_variant(const char *name);
typedef enum {
    OPS_MATMUL,     // matmul_forward(_fused), matmul_backward, matmul_backward_relu
    OPS_ATTENTION,  // attention_forward_packed, attention_backward_packed
    OPS_LAYERNORM,  // layernorm_forward, layernorm_backward
    NUM_OP_FAMILIES
} OpFamily;
const char *ops_family_name(OpFamily family);
// The backends this build has for a family: i = 0 .. ops_num_backends(family) - 1, fastest first.
int ops_num_backends(OpFamily family);
const char *ops_backend_name(OpFamily family, int i);
// Runs the family on the named backend from now on; -1 when the build lacks it for the family.
// A forward and its backward must run on the same backend (the attention's saved probabilities
// have the backend's own layout).
int ops_set_backend(OpFamily family, const char *name);
const char *ops_get_backend(OpFamily family);
// The matmul family's backend (ops_get_backend(OPS_MATMUL)) and its setter.
const char *ops_backend(void);
int ops_set_matmul_backend(const char *name);
// 1 when the backend in use gives each row of matmul_forward_fused's output the same bits whichever
// other rows share the product and however the threads split them: the kernels (each sum runs over
// the depth in one order, the same in every row of a tile) and the loops (each sum on its own, in
// double). 0 for OpenBLAS, whose sums for a row change with the row's place in the library's
// register blocks (measured with 0.3.21: rows called in groups of 1 to 40 matched the whole
// product's bits only in groups of 12 with its Haswell kernel, the one a Zen 3 runs, and differed in
// other groupings with its AVX-512 ones). Layer 0's table of token pairs relies on it
// (model_pack_weights).
int ops_matmul_rows_independent(void);

// out (N, C) = concat(table[tokens[n,0]], table[tokens[n,1]]); table (V, C/2), tokens (N, 2)
void embedding_forward(float *out, const int32_t *tokens, const float *table, int N, int C);
void embedding_backward(float *dtable, const float *dout, const int32_t *tokens, int N, int C);

// out (N, OC) = inp (N, C) @ weight^T + bias; weight (OC, C), bias (OC) or NULL
void matmul_forward(float *out, const float *inp, const float *weight, const float *bias, int N, int C, int OC);
// out (N, OC) = relu(residual + (inp @ weight^T + bias)), residual (N, OC) or NULL, relu 0 or 1: a
// linear layer with the residual and ReLU ops that follow it fused into its output pass (the same
// sums in the same order as the separate ops). weight_packed: the weight as gemm_pack left it (the
// kernels backend then skips packing), or NULL. Its backward is relu_backward, the identity for
// the residual, and matmul_backward.
void matmul_forward_fused(float *out, const float *inp, const float *weight, const float *weight_packed,
                          const float *bias, const float *residual, int relu, int N, int C, int OC);
// dinp (N, C) += dout @ weight; dweight (OC, C) += dout^T @ inp; dbias (OC) += column sums of dout.
// dinp may be NULL (no input gradient wanted). weight_rows: the weight as gemm_pack_rows(weight_rows,
// weight, C, OC, C) left it (the kernels backend then skips packing), or NULL.
void matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                     const float *weight, const float *weight_rows, int N, int C, int OC);

// Multi-head self-attention core. qkv (B, T, 3C) packed [q | k | v], heads of size C/NH.
// pad (B, T): 1 where the position is padding (masked as a key). att (B, NH, T, T) saves the
// softmax probabilities (0 on masked keys). out (B, T, C).
void attention_forward(float *out, float *att, const float *qkv, const uint8_t *pad, int B, int T, int C, int NH);
void attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att, const uint8_t *pad,
                        int B, int T, int C, int NH);

// Bound of head size x (sequence length rounded up to 16) for the packed kernels' per-thread
// scratch (floats on the stack): room for the longest sequence the data settings allow.
#define ATTENTION_SCRATCH (OPS_MAX_T * (OPS_MAX_T + 15))

// The same attention over packed rows: example b owns rows offsets[b] .. offsets[b+1]-1 of qkv
// (N, 3C) and out (N, C), all real (padding removed, so no mask). att (B, NH, T, T) keeps each
// example's len x len block with row stride T, in the backend's layout, read only by the same
// backend's backward: query-major (att[t T + s], query t's weight on key s) in the reference and in
// the kernels' last_only path; key-major (att[s T + t]) in the kernels' all-queries path. With
// last_only, only each example's last row (its target pair, the one the readout uses) is a query,
// and out (B, C) has one row per example.
// key_counts (N, or NULL for all ones): row r stands for key_counts[r] identical positions, so as
// a key its softmax weight is multiplied by that count (merged repeats, see Model). The backward
// needs nothing more: given the saved probabilities, the gradient formulas are unchanged. The
// backward writes dqkv (N, 3C) (not added to, unlike attention_backward).
// Tested against the padded version above.
void attention_forward_packed(float *out, float *att, const float *qkv, const float *key_counts, const int *offsets,
                              int B, int T, int C, int NH, int last_only);
void attention_backward_packed(float *dqkv, const float *dout, const float *qkv, const float *att,
                               const int *offsets, int B, int T, int C, int NH, int last_only);

// The backward of relu(x) followed by a linear layer whose input inp (N, C) is that ReLU's output:
// dinp (N, C) is WRITTEN (not accumulated) with the gradient of x, dout @ weight where inp > 0 and 0
// elsewhere; dweight and dbias accumulate as in matmul_backward. (One pass instead of clearing
// dinp, matmul_backward and relu_backward; the same values.)
void matmul_backward_relu(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                          const float *weight, const float *weight_rows, int N, int C, int OC);

// out (N, C) = (inp - mean) * rstd * weight + bias; mean, rstd (N) saved; eps 1e-5
void layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                       const float *bias, int N, int C);
// dinp (N, C) is written (as 0 + the gradient: never -0); dweight and dbias (C) are added to.
void layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                        const float *weight, const float *mean, const float *rstd, int N, int C);

// out = a + b (n elements)
void residual_forward(float *out, const float *a, const float *b, size_t n);

// out (B, C) = x[rows[b]] + y[b]: the residual of the last layer, where only readout rows go on.
// Its backward is scatter_rows_add for x (dx[rows[b]] += dout[b]) and the identity for y.
void gather_residual_forward(float *out, const float *x, const int *rows, const float *y, int B, int C);
void scatter_rows_add(float *dx, const int *rows, const float *dout, int B, int C);

// out = max(inp, 0) (out may be inp); backward in place: dinout (the gradient of out) becomes the
// gradient of inp, zero where inp <= 0 (as PyTorch's threshold_backward). `inp` may be the output
// instead: it is positive exactly where the input is.
void relu_forward(float *out, const float *inp, size_t n);
void relu_backward(float *dinout, const float *inp, size_t n);

// Readout of one row per example: pred (B) = inp[rows[b], :] . weight (C) + bias (1); rows NULL
// means row b
void readout_forward(float *pred, const float *inp, const int *rows, const float *weight, const float *bias, int B,
                     int C);
// dinp[rows[b]] += dpred[b] * weight; dweight += dpred[b] * inp[rows[b]]; dbias += sum dpred
void readout_backward(float *dinp, float *dweight, float *dbias, const float *dpred, const float *inp, const int *rows,
                      const float *weight, int B, int C);

// Sum of squared errors over B predictions, and dpred[b] = 2 (pred[b] - label[b]) * scale
// (scale = 1 / total batch size gives the gradient of the mean).
double mse_forward(const float *pred, const float *labels, int B);
// weights (B) or NULL: example b counts weights[b] times (a distinct example standing for its copies).
void mse_backward(float *dpred, const float *pred, const float *labels, const float *weights, int B, float scale);

#endif
