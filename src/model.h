// The transformer of SPEC §3: config, parameter/gradient/activation layout, PyTorch-style
// initialization, forward, backward, and checkpoints in safetensors with PyTorch's names.
#ifndef PATHFORMER_MODEL_H
#define PATHFORMER_MODEL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "safetensors.h"

typedef struct {
    int vocab;     // token vocabulary (max_v + 2)
    int seq_len;   // T, token pairs per example
    int d_model;   // C
    int n_layers;  // L
    int n_heads;   // NH
    int d_ff;      // F, feed-forward width
} ModelConfig;

ModelConfig model_config_default(void);  // 17 / 16 / 64 / 11 / 2 / 256
int model_config_validate(const ModelConfig *cfg);

// The parameter tensors, in the order of ParameterTensors and of params_memory: the embedding, the
// layer tensors (each stacked over L, in PyTorch's state_dict order within a layer), the readout.
typedef enum {
    PARAM_EMBEDDING,
    PARAM_IN_PROJ_W,
    PARAM_IN_PROJ_B,
    PARAM_OUT_PROJ_W,
    PARAM_OUT_PROJ_B,
    PARAM_LINEAR1_W,
    PARAM_LINEAR1_B,
    PARAM_LINEAR2_W,
    PARAM_LINEAR2_B,
    PARAM_NORM1_W,
    PARAM_NORM1_B,
    PARAM_NORM2_W,
    PARAM_NORM2_B,
    PARAM_FC_OUT_W,
    PARAM_FC_OUT_B,
    NUM_PARAM_TENSORS
} ParamTensor;
#define FIRST_LAYER_PARAM PARAM_IN_PROJ_W
#define LAST_LAYER_PARAM PARAM_NORM2_B

// Every parameter tensor, layer tensors stacked over L. Shapes are PyTorch's (out, in).
typedef struct {
    float *embedding;    // (V, C/2)
    float *in_proj_w;    // (L, 3C, C)
    float *in_proj_b;    // (L, 3C)
    float *out_proj_w;   // (L, C, C)
    float *out_proj_b;   // (L, C)
    float *linear1_w;    // (L, F, C)
    float *linear1_b;    // (L, F)
    float *linear2_w;    // (L, C, F)
    float *linear2_b;    // (L, C)
    float *norm1_w;      // (L, C)
    float *norm1_b;      // (L, C)
    float *norm2_w;      // (L, C)
    float *norm2_b;      // (L, C)
    float *fc_out_w;     // (1, C)
    float *fc_out_b;     // (1)
} ParameterTensors;

// The activation tensors, in the order of ActivationTensors and of acts_memory.
typedef enum {
    ACT_ENCODED,
    ACT_QKV,
    ACT_ATT,
    ACT_ATTY,
    ACT_ATTPROJ,
    ACT_RES1,
    ACT_LN1,
    ACT_LN1_MEAN,
    ACT_LN1_RSTD,
    ACT_FC1_RELU,
    ACT_RES2,
    ACT_LN2,
    ACT_LN2_MEAN,
    ACT_LN2_RSTD,
    NUM_ACTIVATION_TENSORS
} ActivationTensor;

// Saved forward values for a micro-batch of B examples, over N <= B * T packed rows (layer tensors
// stacked over L, each sized for the largest N).
typedef struct {
    float *encoded;   // (B, T, C) embedding output, the input of layer 0
    float *qkv;       // (L, B, T, 3C)
    float *att;       // (L, B, NH, T, T) softmax probabilities, in the attention backend's layout (ops.h)
    float *atty;      // (L, B, T, C) attention output before the projection
    float *attproj;   // (B, C) the last layer's output projection, on readout rows only (the other
                      // layers add theirs into res1 in the product's output pass)
    float *res1;      // (L, B, T, C) x + attention
    float *ln1;       // (L, B, T, C)
    float *ln1_mean;  // (L, B, T)
    float *ln1_rstd;  // (L, B, T)
    float *fc1_relu;  // (L, B, T, F) relu(linear1): in place, since relu(x) > 0 exactly where x > 0,
                      // which is all the backward needs of the input
    float *res2;      // (L, B, T, C) ln1 + feed-forward
    float *ln2;       // (L, B, T, C) the layer's output
    float *ln2_mean;  // (L, B, T)
    float *ln2_rstd;  // (L, B, T)
} ActivationTensors;

// The backward pass's buffers, in the order of BackwardScratch and of scratch_memory.
typedef enum {
    SCRATCH_DLAYER_OUT,
    SCRATCH_DRES,
    SCRATCH_DLN1,
    SCRATCH_DATTY,
    SCRATCH_DQKV,
    SCRATCH_DFC,
    SCRATCH_DPRED,
    SCRATCH_PAIR_DQKV,
    SCRATCH_PAIR_INPUTS,
    SCRATCH_PAIR_DINP,
    NUM_SCRATCH_TENSORS
} ScratchTensor;

// Gradient buffers of the backward pass, reused layer after layer. P: the distinct token pairs of
// a micro-batch, at most min(B T, V^2).
typedef struct {
    float *dlayer_out;  // (B, T, C) gradient of the current layer's output
    float *dres;        // (B, T, C)
    float *dln1;        // (B, T, C)
    float *datty;       // (B, T, C)
    float *dqkv;        // (B, T, 3C)
    float *dfc;         // (B, T, F) the feed-forward's hidden gradient
    float *dpred;       // (B)
    // layer 0, whose input rows are embedded token pairs, runs its input-side backward per pair
    float *pair_dqkv;   // (P, 3C) the summed dqkv of each pair's rows
    float *pair_inputs; // (P, C) each pair's input row
    float *pair_dinp;   // (P, C) each pair's input gradient, for the embedding
} BackwardScratch;

// The linear layers' weights as gemm_pack leaves them for the forward products, per layer; and, in a
// training model, as gemm_pack_rows leaves them for the backward's input gradients (_ROWS; none
// otherwise).
typedef enum {
    PACKED_IN_PROJ,
    PACKED_OUT_PROJ,
    PACKED_LINEAR1,
    PACKED_LINEAR2,
    PACKED_IN_PROJ_ROWS,
    PACKED_OUT_PROJ_ROWS,
    PACKED_LINEAR1_ROWS,
    PACKED_LINEAR2_ROWS,
    NUM_PACKED_WEIGHTS
} PackedWeight;

// One layer's slices of a parameter block (the weights, or their gradients).
typedef struct {
    float *in_proj_w, *in_proj_b;    // (3C, C), (3C)
    float *out_proj_w, *out_proj_b;  // (C, C), (C)
    float *linear1_w, *linear1_b;    // (F, C), (F)
    float *linear2_w, *linear2_b;    // (C, F), (C)
    float *norm1_w, *norm1_b;        // (C)
    float *norm2_w, *norm2_b;        // (C)
} LayerParams;

// One layer's slices of the saved activations (att holds B NH T T with the capacity's stride).
typedef struct {
    float *qkv, *att, *atty, *res1, *ln1, *ln1_mean, *ln1_rstd, *fc1_relu, *res2, *ln2, *ln2_mean, *ln2_rstd;
} LayerActivations;

// Layer l as the forward, the backward and the weight packing see it: its weights, their gradients
// (NULL pointers in an inference-only model), its activations and its packed weights.
typedef struct {
    LayerParams w;
    LayerParams dw;
    LayerActivations act;
    float *packed[NUM_PACKED_WEIGHTS];
} LayerView;

typedef struct Model {
    ModelConfig config;
    size_t param_sizes[NUM_PARAM_TENSORS];
    size_t num_parameters;
    ParameterTensors params;
    float *params_memory;
    int shares_params;        // a replica: params_memory belongs to another model
    ParameterTensors grads;   // NULL pointers in an inference-only model
    float *grads_memory;
    int batch_capacity;       // largest micro-batch the activations hold
    size_t act_sizes[NUM_ACTIVATION_TENSORS];
    size_t num_activations;
    ActivationTensors acts;
    float *acts_memory;
    BackwardScratch scratch;
    float *scratch_memory;
    // The linear layers' weights packed for the products (PackedWeight), per layer, valid
    // between model_pack_weights and model_unpack_weights (weights_packed 1). A replica reads its
    // master's packed weights, layer 0 table and flag (`master`; NULL in a model of its own).
    const struct Model *master;
    float *packed_memory;
    size_t packed_sizes[NUM_PACKED_WEIGHTS];  // floats per layer
    int weights_packed;
    // Layer 0's q | k | v depend on a row's token pair alone: with the weights packed, they come
    // from this table (vocab^2 pairs, 3C each), computed from every pair's embedding at packing,
    // when the matmul backend gives a row the bits it would get among the batch's rows
    // (ops_matmul_rows_independent; not OpenBLAS, which then runs layer 0's product as unpacked).
    int pair_table;           // 1 while pair_qkv holds the table
    float *pair_inputs;       // (vocab^2, C) the embedded pairs
    float *pair_qkv;          // (vocab^2, 3C)
    // Padding never reaches the readout, so the current micro-batch is packed: only real token
    // pairs become rows of the activations (about a third fewer rows on pretrain data).
    int num_rows;             // packed rows of the current micro-batch
    int *offsets;             // (B + 1) example b owns rows offsets[b] .. offsets[b+1]-1
    int32_t *packed_tokens;   // (B * T, 2) the real token pairs, example after example
    int *readout_rows;        // (B) the row of each example's target pair (its last)
    // With no positional encoding, two positions of one example that hold the same token pair have
    // the same state in every layer. With merge_repeats on (model_create's default), such a pair
    // becomes one row, and attention weighs it as a key by its number of copies: the same function
    // and gradients, on fewer rows (7% fewer on pretrain data). The target pair is never merged.
    int merge_repeats;
    float *key_counts;        // (B * T) copies of each packed row's pair in its example
    // Layer 0's input rows are embedded token pairs, so its in_proj weight gradient and input
    // gradient run once per distinct pair of the micro-batch, on the sum of that pair's rows'
    // gradients: pair_slot (vocab^2, -1 when unused) numbers the pairs, group_tokens (B * T, 2)
    // lists them.
    int *pair_slot;
    int32_t *group_tokens;
    float *pred;              // (B) predictions of the current micro-batch
} Model;

// Allocates everything once (parameters, and gradients when `training`), for micro-batches of up
// to batch_capacity examples. Prints nothing; model_describe says how much was allocated.
void model_create(Model *model, const ModelConfig *cfg, int batch_capacity, int training);
// A replica reads `master`'s parameters, and its packed weights while the master has them packed,
// and has its own gradients and activations, so that several threads can each run their own
// micro-batches at once (see train.c).
void model_create_replica(Model *replica, const Model *master, int batch_capacity);
// Packs the current weights of every linear layer for the forward products, which then skip
// packing them on every call; for callers that run many micro-batches with fixed weights (a
// training step, an evaluation). The same results bit for bit. model_unpack_weights ends it
// (before the weights change). Call them on the master: its replicas follow.
void model_pack_weights(Model *model);
void model_unpack_weights(Model *model);
void model_free(Model *model);
void model_describe(const Model *model, FILE *out);

// PyTorch's initialization (SPEC §3). With identical_layers, layer 0 is drawn and copied to all
// layers, as nn.TransformerEncoder's deep copy does.
void model_init(Model *model, uint64_t seed, int identical_layers);

// tokens (B, T, 2), encoded as batch_encode does (position T-1 holds the target pair); fills
// model->pred (B). Returns the sum of squared errors when labels is not NULL (0 otherwise).
double model_forward(Model *model, const int32_t *tokens, const float *labels, int B);
// The same forward for inference: the same predictions bit for bit, but every layer reuses one set
// of activation buffers (a cache-sized working set), so model_backward cannot follow it.
double model_infer(Model *model, const int32_t *tokens, const float *labels, int B);
// Accumulates parameter gradients of scale * sum of squared errors of the last forward
// (scale = 1 / full batch size gives the gradient of the MSE over the full batch); with weights
// (B, or NULL for all 1) example b's error counts weights[b] times.
void model_backward(Model *model, const float *labels, const float *weights, int B, float scale);
void model_zero_grad(Model *model);
// The model's gradients move to memory (num_parameters floats, from mallocCheck or callocCheck; the
// model now owns it and frees it); returns the memory that held them, which the caller now owns.
float *model_swap_grads(Model *model, float *memory);

// Layer l's view; `slot` is the layer whose activation slices it points at (l in training, 0 when
// every layer reuses the first layer's, as model_infer does).
LayerView model_layer(const Model *model, int l, int slot);

// The name of parameter tensor `index` for layer `layer` (PyTorch state_dict names) and its shape.
// Returns the number of dims; layer is ignored for non-layer tensors.
int model_param_name(const Model *model, ParamTensor index, int layer, char *name, size_t size, int64_t *shape);
int model_param_is_layered(ParamTensor index);
// Pointer to parameter tensor `index` of `layer` inside `base` (params_memory or grads_memory layout).
float *model_param_slice(const Model *model, float *base, ParamTensor index, int layer);

// One parameter tensor of one layer under its PyTorch state_dict name.
typedef struct {
    char name[96];
    int ndim;
    int64_t shape[2];
    size_t numel;
    float *data;  // inside the `base` given to model_named_tensor
} NamedTensor;

// Tensors in PyTorch's state_dict order: embedding, each layer's 12, then the readout's 2.
int model_num_named_tensors(const Model *model);
// Tensor i (0 <= i < model_num_named_tensors) within `base` (params_memory, grads_memory, or any
// buffer of the same layout).
void model_named_tensor(const Model *model, float *base, int i, NamedTensor *out);

// Checkpoint: every parameter under its PyTorch name plus the config in the metadata
// (extra metadata pairs may be added by the caller). Atomic write.
int model_save(const Model *model, const char *path, int num_extra, const char *const *extra_keys,
               const char *const *extra_values);
// Loads a checkpoint file for model_config_from_file and model_load_params. A state_dict saved from
// a torch.compile'd model names every tensor "_orig_mod.NAME"; such a prefix, when every tensor
// carries it, is dropped here. 0 or -1 with the error set.
int model_open_checkpoint(StFile *file, const char *path);
// Reads the config from a checkpoint's metadata, or infers it from the tensor shapes when the
// metadata lacks it (as in files converted from PyTorch). Heads and sequence length cannot be
// inferred from shapes: without metadata they keep the values *cfg holds on entry.
// 0 or -1 with the error set.
int model_config_from_file(ModelConfig *cfg, const StFile *file);
// Copies every parameter from a loaded file into the model; checks names, dtypes and shapes.
int model_load_params(Model *model, const StFile *file);

#endif
