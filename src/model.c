#include "model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "ops/gemm.h"
#include "graph.h"
#include "ops/ops.h"
#include "rng.h"

ModelConfig model_config_default(void) {
    ModelConfig cfg = {.vocab = 17, .seq_len = 16, .d_model = 64, .n_layers = 11, .n_heads = 2, .d_ff = 256};
    return cfg;
}

_Static_assert(PF_MAX_EDGES + 1 == OPS_MAX_T, "the attention ops' stack scratch must fit the longest sequence");

int model_config_validate(const ModelConfig *cfg) {
    if (cfg->vocab < 2) return pf_fail("vocab must be at least 2 (got %d)", cfg->vocab);
    // attention_backward keeps one row of scores on the stack
    if (cfg->seq_len < 1 || cfg->seq_len > PF_MAX_EDGES + 1)
        return pf_fail("seq_len must be in 1..%d (got %d)", PF_MAX_EDGES + 1, cfg->seq_len);
    if (cfg->d_model < 2 || cfg->d_model % 2 != 0 || cfg->d_model > 65536)
        return pf_fail("d_model must be even and in 2..65536 (got %d)", cfg->d_model);
    if (cfg->n_layers < 1 || cfg->n_layers > 1024)
        return pf_fail("n_layers must be in 1..1024 (got %d)", cfg->n_layers);
    if (cfg->n_heads < 1) return pf_fail("n_heads must be at least 1 (got %d)", cfg->n_heads);
    if (cfg->d_model % cfg->n_heads != 0)
        return pf_fail("d_model %d is not divisible by n_heads %d", cfg->d_model, cfg->n_heads);
    if ((cfg->d_model / cfg->n_heads) * ((cfg->seq_len + 15) / 16 * 16) > ATTENTION_SCRATCH)
        return pf_fail("head size %d x sequence length %d exceeds %d", cfg->d_model / cfg->n_heads, cfg->seq_len,
                       ATTENTION_SCRATCH);
    if (cfg->d_ff < 1 || cfg->d_ff > 1 << 20) return pf_fail("d_ff must be in 1..1048576 (got %d)", cfg->d_ff);
    return 0;
}

static const char *const PARAM_SUFFIX[NUM_PARAM_TENSORS] = {
    [PARAM_EMBEDDING] = "embedding.weight",
    [PARAM_IN_PROJ_W] = "self_attn.in_proj_weight",
    [PARAM_IN_PROJ_B] = "self_attn.in_proj_bias",
    [PARAM_OUT_PROJ_W] = "self_attn.out_proj.weight",
    [PARAM_OUT_PROJ_B] = "self_attn.out_proj.bias",
    [PARAM_LINEAR1_W] = "linear1.weight",
    [PARAM_LINEAR1_B] = "linear1.bias",
    [PARAM_LINEAR2_W] = "linear2.weight",
    [PARAM_LINEAR2_B] = "linear2.bias",
    [PARAM_NORM1_W] = "norm1.weight",
    [PARAM_NORM1_B] = "norm1.bias",
    [PARAM_NORM2_W] = "norm2.weight",
    [PARAM_NORM2_B] = "norm2.bias",
    [PARAM_FC_OUT_W] = "fc_out.weight",
    [PARAM_FC_OUT_B] = "fc_out.bias",
};

int model_param_is_layered(ParamTensor index) { return index >= FIRST_LAYER_PARAM && index <= LAST_LAYER_PARAM; }

// Shape of one layer's slice (or of the whole tensor for non-layer parameters).
static int param_shape(const ModelConfig *c, ParamTensor index, int64_t *shape) {
    int64_t C = c->d_model, F = c->d_ff;
    switch (index) {
    case PARAM_EMBEDDING: shape[0] = c->vocab; shape[1] = C / 2; return 2;
    case PARAM_IN_PROJ_W: shape[0] = 3 * C; shape[1] = C; return 2;
    case PARAM_IN_PROJ_B: shape[0] = 3 * C; return 1;
    case PARAM_OUT_PROJ_W: shape[0] = C; shape[1] = C; return 2;
    case PARAM_LINEAR1_W: shape[0] = F; shape[1] = C; return 2;
    case PARAM_LINEAR1_B: shape[0] = F; return 1;
    case PARAM_LINEAR2_W: shape[0] = C; shape[1] = F; return 2;
    case PARAM_FC_OUT_W: shape[0] = 1; shape[1] = C; return 2;
    case PARAM_FC_OUT_B: shape[0] = 1; return 1;
    default: shape[0] = C; return 1;  // out_proj.bias, linear2.bias, norms
    }
}

static size_t shape_numel(const int64_t *shape, int ndim) {
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (size_t)shape[i];
    return n;
}

int model_param_name(const Model *model, ParamTensor index, int layer, char *name, size_t size, int64_t *shape) {
    if (model_param_is_layered(index))
        snprintf(name, size, "transformer_encoder.layers.%d.%s", layer, PARAM_SUFFIX[index]);
    else
        snprintf(name, size, "%s", PARAM_SUFFIX[index]);
    return param_shape(&model->config, index, shape);
}

enum { LAYER_TENSORS = LAST_LAYER_PARAM - FIRST_LAYER_PARAM + 1 };

int model_num_named_tensors(const Model *model) {
    return NUM_PARAM_TENSORS - LAYER_TENSORS + LAYER_TENSORS * model->config.n_layers;
}

void model_named_tensor(const Model *model, float *base, int i, NamedTensor *out) {
    int last = model_num_named_tensors(model) - 1;
    ParamTensor index = i == 0          ? PARAM_EMBEDDING
                        : i == last - 1 ? PARAM_FC_OUT_W
                        : i == last     ? PARAM_FC_OUT_B
                                        : FIRST_LAYER_PARAM + (i - 1) % LAYER_TENSORS;
    int layer = model_param_is_layered(index) ? (i - 1) / LAYER_TENSORS : 0;
    out->ndim = model_param_name(model, index, layer, out->name, sizeof(out->name), out->shape);
    out->numel = shape_numel(out->shape, out->ndim);
    out->data = model_param_slice(model, base, index, layer);
}

float *model_param_slice(const Model *model, float *base, ParamTensor index, int layer) {
    size_t offset = 0;
    for (ParamTensor i = 0; i < index; i++) offset += model->param_sizes[i];
    if (model_param_is_layered(index)) offset += (size_t)layer * (model->param_sizes[index] / model->config.n_layers);
    return base + offset;
}

// Points each tensor in turn at its place in one allocation.
static void point_tensors(float **const *pointers, float *memory, const size_t *sizes, int count) {
    for (int i = 0; i < count; i++) {
        *pointers[i] = memory;
        memory += sizes[i];
    }
}

static void point_params(ParameterTensors *p, float *memory, const size_t *sizes) {
    float **const pointers[NUM_PARAM_TENSORS] = {
        [PARAM_EMBEDDING] = &p->embedding,   [PARAM_IN_PROJ_W] = &p->in_proj_w, [PARAM_IN_PROJ_B] = &p->in_proj_b,
        [PARAM_OUT_PROJ_W] = &p->out_proj_w, [PARAM_OUT_PROJ_B] = &p->out_proj_b,
        [PARAM_LINEAR1_W] = &p->linear1_w,   [PARAM_LINEAR1_B] = &p->linear1_b,
        [PARAM_LINEAR2_W] = &p->linear2_w,   [PARAM_LINEAR2_B] = &p->linear2_b,
        [PARAM_NORM1_W] = &p->norm1_w,       [PARAM_NORM1_B] = &p->norm1_b,
        [PARAM_NORM2_W] = &p->norm2_w,       [PARAM_NORM2_B] = &p->norm2_b,
        [PARAM_FC_OUT_W] = &p->fc_out_w,     [PARAM_FC_OUT_B] = &p->fc_out_b,
    };
    point_tensors(pointers, memory, sizes, NUM_PARAM_TENSORS);
}

static void point_activations(ActivationTensors *a, float *memory, const size_t *sizes) {
    float **const pointers[NUM_ACTIVATION_TENSORS] = {
        [ACT_ENCODED] = &a->encoded,   [ACT_QKV] = &a->qkv,           [ACT_ATT] = &a->att,
        [ACT_ATTY] = &a->atty,         [ACT_ATTPROJ] = &a->attproj,   [ACT_RES1] = &a->res1,
        [ACT_LN1] = &a->ln1,           [ACT_LN1_MEAN] = &a->ln1_mean, [ACT_LN1_RSTD] = &a->ln1_rstd,
        [ACT_FC1_RELU] = &a->fc1_relu, [ACT_RES2] = &a->res2,         [ACT_LN2] = &a->ln2,
        [ACT_LN2_MEAN] = &a->ln2_mean, [ACT_LN2_RSTD] = &a->ln2_rstd,
    };
    point_tensors(pointers, memory, sizes, NUM_ACTIVATION_TENSORS);
}

static void point_scratch(BackwardScratch *s, float *memory, const size_t *sizes) {
    float **const pointers[NUM_SCRATCH_TENSORS] = {
        [SCRATCH_DLAYER_OUT] = &s->dlayer_out, [SCRATCH_DRES] = &s->dres,
        [SCRATCH_DLN1] = &s->dln1,             [SCRATCH_DATTY] = &s->datty,
        [SCRATCH_DQKV] = &s->dqkv,             [SCRATCH_DFC] = &s->dfc,
        [SCRATCH_DPRED] = &s->dpred,           [SCRATCH_PAIR_DQKV] = &s->pair_dqkv,
        [SCRATCH_PAIR_INPUTS] = &s->pair_inputs, [SCRATCH_PAIR_DINP] = &s->pair_dinp,
    };
    point_tensors(pointers, memory, sizes, NUM_SCRATCH_TENSORS);
}

static size_t sum_sizes(const size_t *sizes, int count) {
    size_t total = 0;
    for (int i = 0; i < count; i++) total += sizes[i];
    return total;
}

// Floats of each BackwardScratch tensor for micro-batches of up to B examples.
static void scratch_tensor_sizes(const ModelConfig *cfg, int B, size_t *sizes) {
    size_t BT = (size_t)B * cfg->seq_len, C = cfg->d_model, F = cfg->d_ff;
    size_t pairs = (size_t)cfg->vocab * cfg->vocab, P = BT < pairs ? BT : pairs;  // distinct token pairs
    sizes[SCRATCH_DLAYER_OUT] = BT * C;
    sizes[SCRATCH_DRES] = BT * C;
    sizes[SCRATCH_DLN1] = BT * C;
    sizes[SCRATCH_DATTY] = BT * C;
    sizes[SCRATCH_DQKV] = BT * 3 * C;
    sizes[SCRATCH_DFC] = BT * F;
    sizes[SCRATCH_DPRED] = (size_t)B;
    sizes[SCRATCH_PAIR_DQKV] = P * 3 * C;
    sizes[SCRATCH_PAIR_INPUTS] = P * C;
    sizes[SCRATCH_PAIR_DINP] = P * C;
}

void model_create(Model *model, const ModelConfig *cfg, int batch_capacity, int training) {
    memset(model, 0, sizeof(*model));
    model->config = *cfg;
    size_t L = cfg->n_layers;
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) {
        int64_t shape[2];
        int ndim = param_shape(cfg, i, shape);
        model->param_sizes[i] = shape_numel(shape, ndim) * (model_param_is_layered(i) ? L : 1);
    }
    model->num_parameters = sum_sizes(model->param_sizes, NUM_PARAM_TENSORS);
    model->params_memory = callocCheck(model->num_parameters, sizeof(float));
    point_params(&model->params, model->params_memory, model->param_sizes);

    size_t B = batch_capacity, T = cfg->seq_len, C = cfg->d_model, F = cfg->d_ff, NH = cfg->n_heads;
    size_t BT = B * T;
    size_t act_sizes[NUM_ACTIVATION_TENSORS] = {
        [ACT_ENCODED] = BT * C,      [ACT_QKV] = L * BT * 3 * C,   [ACT_ATT] = L * B * NH * T * T,
        [ACT_ATTY] = L * BT * C,     [ACT_ATTPROJ] = B * C,        [ACT_RES1] = L * BT * C,
        [ACT_LN1] = L * BT * C,      [ACT_LN1_MEAN] = L * BT,      [ACT_LN1_RSTD] = L * BT,
        [ACT_FC1_RELU] = L * BT * F, [ACT_RES2] = L * BT * C,      [ACT_LN2] = L * BT * C,
        [ACT_LN2_MEAN] = L * BT,     [ACT_LN2_RSTD] = L * BT,
    };
    memcpy(model->act_sizes, act_sizes, sizeof(act_sizes));
    model->num_activations = sum_sizes(act_sizes, NUM_ACTIVATION_TENSORS);
    model->acts_memory = largeAllocCheck(model->num_activations * sizeof(float));
    point_activations(&model->acts, model->acts_memory, act_sizes);
    model->batch_capacity = batch_capacity;
    model->offsets = mallocCheck((B + 1) * sizeof(int));
    model->packed_tokens = mallocCheck(BT * 2 * sizeof(int32_t));
    model->readout_rows = mallocCheck(B * sizeof(int));
    model->key_counts = mallocCheck(BT * sizeof(float));
    model->pair_slot = mallocCheck((size_t)cfg->vocab * cfg->vocab * sizeof(int));
    for (int i = 0; i < cfg->vocab * cfg->vocab; i++) model->pair_slot[i] = -1;
    model->group_tokens = mallocCheck(BT * 2 * sizeof(int32_t));
    model->merge_repeats = 1;
    model->pred = mallocCheck(B * sizeof(float));
    model->packed_sizes[PACKED_IN_PROJ] = gemm_packed_floats(3 * cfg->d_model, cfg->d_model);
    model->packed_sizes[PACKED_OUT_PROJ] = gemm_packed_floats(cfg->d_model, cfg->d_model);
    model->packed_sizes[PACKED_LINEAR1] = gemm_packed_floats(cfg->d_ff, cfg->d_model);
    model->packed_sizes[PACKED_LINEAR2] = gemm_packed_floats(cfg->d_model, cfg->d_ff);
    if (training) {  // weight (OC, C) as the input gradient's B: OC rows of C
        model->packed_sizes[PACKED_IN_PROJ_ROWS] = gemm_rows_packed_floats(3 * cfg->d_model, cfg->d_model);
        model->packed_sizes[PACKED_OUT_PROJ_ROWS] = gemm_rows_packed_floats(cfg->d_model, cfg->d_model);
        model->packed_sizes[PACKED_LINEAR1_ROWS] = gemm_rows_packed_floats(cfg->d_ff, cfg->d_model);
        model->packed_sizes[PACKED_LINEAR2_ROWS] = gemm_rows_packed_floats(cfg->d_model, cfg->d_ff);
    }
    model->packed_memory = mallocCheck(L * sum_sizes(model->packed_sizes, NUM_PACKED_WEIGHTS) * sizeof(float));
    size_t pairs = (size_t)cfg->vocab * cfg->vocab;
    model->pair_inputs = mallocCheck(pairs * cfg->d_model * sizeof(float));
    model->pair_qkv = mallocCheck(pairs * 3 * cfg->d_model * sizeof(float));

    if (training) {
        model->grads_memory = callocCheck(model->num_parameters, sizeof(float));
        point_params(&model->grads, model->grads_memory, model->param_sizes);
        size_t scratch_sizes[NUM_SCRATCH_TENSORS];
        scratch_tensor_sizes(cfg, batch_capacity, scratch_sizes);
        model->scratch_memory = largeAllocCheck(sum_sizes(scratch_sizes, NUM_SCRATCH_TENSORS) * sizeof(float));
        point_scratch(&model->scratch, model->scratch_memory, scratch_sizes);
    }
}

void model_create_replica(Model *replica, const Model *master, int batch_capacity) {
    model_create(replica, &master->config, batch_capacity, master->grads_memory != NULL);
    free(replica->params_memory);
    replica->params_memory = master->params_memory;
    replica->params = master->params;
    replica->shares_params = 1;
    replica->merge_repeats = master->merge_repeats;
    free(replica->packed_memory);
    free(replica->pair_inputs);
    free(replica->pair_qkv);
    replica->master = master;
    replica->packed_memory = master->packed_memory;
    replica->pair_inputs = master->pair_inputs;
    replica->pair_qkv = master->pair_qkv;
}

void model_free(Model *model) {
    if (!model->shares_params) free(model->params_memory);
    free(model->grads_memory);
    free(model->acts_memory);
    free(model->scratch_memory);
    if (!model->shares_params) {
        free(model->packed_memory);
        free(model->pair_inputs);
        free(model->pair_qkv);
    }
    free(model->offsets);
    free(model->packed_tokens);
    free(model->readout_rows);
    free(model->key_counts);
    free(model->pair_slot);
    free(model->group_tokens);
    free(model->pred);
    memset(model, 0, sizeof(*model));
}

// Layer l's slices of a parameter block (params or grads).
static LayerParams layer_params(const ParameterTensors *p, const ModelConfig *c, int l) {
    size_t C = c->d_model, F = c->d_ff;
    LayerParams v = {
        .in_proj_w = p->in_proj_w + l * 3 * C * C,
        .in_proj_b = p->in_proj_b + l * 3 * C,
        .out_proj_w = p->out_proj_w + l * C * C,
        .out_proj_b = p->out_proj_b + l * C,
        .linear1_w = p->linear1_w + l * F * C,
        .linear1_b = p->linear1_b + l * F,
        .linear2_w = p->linear2_w + l * C * F,
        .linear2_b = p->linear2_b + l * C,
        .norm1_w = p->norm1_w + l * C,
        .norm1_b = p->norm1_b + l * C,
        .norm2_w = p->norm2_w + l * C,
        .norm2_b = p->norm2_b + l * C,
    };
    return v;
}

LayerView model_layer(const Model *model, int l, int slot) {
    const ModelConfig *c = &model->config;
    // layer slices keep the capacity's stride, so a layer's tensors sit where backward expects them
    size_t cap = (size_t)model->batch_capacity * c->seq_len, capC = cap * c->d_model, s = slot;
    const ActivationTensors *a = &model->acts;
    LayerView v = {
        .w = layer_params(&model->params, c, l),
        .act = {
            .qkv = a->qkv + s * capC * 3,
            .att = a->att + s * model->batch_capacity * c->n_heads * c->seq_len * c->seq_len,
            .atty = a->atty + s * capC,
            .res1 = a->res1 + s * capC,
            .ln1 = a->ln1 + s * capC,
            .ln1_mean = a->ln1_mean + s * cap,
            .ln1_rstd = a->ln1_rstd + s * cap,
            .fc1_relu = a->fc1_relu + s * cap * c->d_ff,
            .res2 = a->res2 + s * capC,
            .ln2 = a->ln2 + s * capC,
            .ln2_mean = a->ln2_mean + s * cap,
            .ln2_rstd = a->ln2_rstd + s * cap,
        },
    };
    if (model->grads_memory) v.dw = layer_params(&model->grads, c, l);
    float *packed = model->packed_memory + (size_t)l * sum_sizes(model->packed_sizes, NUM_PACKED_WEIGHTS);
    for (int i = 0; i < NUM_PACKED_WEIGHTS; i++) {
        v.packed[i] = packed;
        packed += model->packed_sizes[i];
    }
    return v;
}

void model_pack_weights(Model *model) {
    const ModelConfig *c = &model->config;
    int C = c->d_model, F = c->d_ff;
    ParameterTensors p = model->params;
    for (int l = 0; l < c->n_layers; l++) {
        LayerView layer = model_layer(model, l, l);
        gemm_pack(layer.packed[PACKED_IN_PROJ], layer.w.in_proj_w, C, 3 * C, C);
        gemm_pack(layer.packed[PACKED_OUT_PROJ], layer.w.out_proj_w, C, C, C);
        gemm_pack(layer.packed[PACKED_LINEAR1], layer.w.linear1_w, C, F, C);
        gemm_pack(layer.packed[PACKED_LINEAR2], layer.w.linear2_w, F, C, F);
        if (!model->grads_memory) continue;
        gemm_pack_rows(layer.packed[PACKED_IN_PROJ_ROWS], layer.w.in_proj_w, C, 3 * C, C);
        gemm_pack_rows(layer.packed[PACKED_OUT_PROJ_ROWS], layer.w.out_proj_w, C, C, C);
        gemm_pack_rows(layer.packed[PACKED_LINEAR1_ROWS], layer.w.linear1_w, C, F, C);
        gemm_pack_rows(layer.packed[PACKED_LINEAR2_ROWS], layer.w.linear2_w, F, C, F);
    }
    // layer 0's q | k | v of every token pair, by the same product the forward would run per row:
    // only where that product gives a row the same bits among any other rows
    model->pair_table = ops_matmul_rows_independent();
    if (model->pair_table) {
        int V = c->vocab, pairs = V * V;
        int32_t *tokens = mallocCheck(sizeof(int32_t) * 2 * pairs);
        for (int pair = 0; pair < pairs; pair++) {
            tokens[2 * pair] = pair / V;
            tokens[2 * pair + 1] = pair % V;
        }
        embedding_forward(model->pair_inputs, tokens, p.embedding, pairs, C);
        free(tokens);
        LayerView layer0 = model_layer(model, 0, 0);
        matmul_forward_fused(model->pair_qkv, model->pair_inputs, layer0.w.in_proj_w, layer0.packed[PACKED_IN_PROJ],
                             layer0.w.in_proj_b, NULL, 0, pairs, C, 3 * C);
    }
    model->weights_packed = 1;
}

void model_unpack_weights(Model *model) {
    model->weights_packed = 0;
    model->pair_table = 0;
}

void model_describe(const Model *model, FILE *out) {
    const ModelConfig *c = &model->config;
    size_t scratch = 0;
    if (model->grads_memory) {
        size_t sizes[NUM_SCRATCH_TENSORS];
        scratch_tensor_sizes(c, model->batch_capacity, sizes);
        scratch = sum_sizes(sizes, NUM_SCRATCH_TENSORS);
    }
    double mib = 1.0 / (1024.0 * 1024.0);
    fprintf(out,
            "model: d_model %d, layers %d, heads %d, d_ff %d, vocab %d, seq %d: %zu parameters\n"
            "memory: parameters %.1f MiB, gradients %.1f MiB, activations %.1f MiB + backward %.1f MiB "
            "(micro-batch %d)\n",
            c->d_model, c->n_layers, c->n_heads, c->d_ff, c->vocab, c->seq_len, model->num_parameters,
            model->num_parameters * 4 * mib, model->grads_memory ? model->num_parameters * 4 * mib : 0.0,
            model->num_activations * 4 * mib, scratch * 4 * mib, model->batch_capacity);
}

static void fill_uniform(float *x, size_t n, float bound, Rng *rng) {
    for (size_t i = 0; i < n; i++) x[i] = (float)((2.0 * rng_uniform(rng) - 1.0) * bound);
}

static void fill_const(float *x, size_t n, float value) {
    for (size_t i = 0; i < n; i++) x[i] = value;
}

// Initializes parameter tensor `index` of one layer as PyTorch does.
static void init_tensor(Model *model, ParamTensor index, int layer, Rng *rng) {
    int64_t shape[2] = {0, 0};
    int ndim = param_shape(&model->config, index, shape);
    size_t n = shape_numel(shape, ndim);
    float *x = model_param_slice(model, model->params_memory, index, layer);
    float C = (float)model->config.d_model, F = (float)model->config.d_ff;
    switch (index) {
    case PARAM_EMBEDDING:  // nn.Embedding: N(0, 1)
        for (size_t i = 0; i < n; i++) x[i] = (float)rng_normal(rng);
        break;
    case PARAM_IN_PROJ_W:  // Xavier uniform over (3C, C)
        fill_uniform(x, n, sqrtf(6.0f / (C + 3.0f * C)), rng);
        break;
    case PARAM_OUT_PROJ_W:  // nn.Linear's kaiming_uniform(a=sqrt(5)) = U(±1/sqrt(fan_in))
    case PARAM_LINEAR1_W:
    case PARAM_FC_OUT_W:
        fill_uniform(x, n, 1.0f / sqrtf((float)shape[1]), rng);
        break;
    case PARAM_LINEAR2_W:
        fill_uniform(x, n, 1.0f / sqrtf(F), rng);
        break;
    case PARAM_LINEAR1_B:  // linear biases: U(±1/sqrt(fan_in))
    case PARAM_FC_OUT_B:
        fill_uniform(x, n, 1.0f / sqrtf(C), rng);
        break;
    case PARAM_LINEAR2_B:
        fill_uniform(x, n, 1.0f / sqrtf(F), rng);
        break;
    case PARAM_NORM1_W:  // LayerNorm weights 1
    case PARAM_NORM2_W:
        fill_const(x, n, 1.0f);
        break;
    default:  // in_proj_bias, out_proj.bias, LayerNorm biases 0
        fill_const(x, n, 0.0f);
        break;
    }
}

void model_init(Model *model, uint64_t seed, int identical_layers) {
    Rng rng = rng_stream(seed, 0x696e6974ULL, 0);
    int L = model->config.n_layers;
    for (ParamTensor index = 0; index < NUM_PARAM_TENSORS; index++) {
        if (!model_param_is_layered(index)) {
            init_tensor(model, index, 0, &rng);
            continue;
        }
        for (int layer = 0; layer < L; layer++) {
            if (identical_layers && layer > 0) {
                size_t per_layer = model->param_sizes[index] / L;
                memcpy(model_param_slice(model, model->params_memory, index, layer),
                       model_param_slice(model, model->params_memory, index, 0), per_layer * sizeof(float));
            } else {
                init_tensor(model, index, layer, &rng);
            }
        }
    }
}

// Packs the real token pairs of the micro-batch (first token not PAD) example after example; with
// merge_repeats, a pair already packed for the example counts as one more copy of that row.
static void pack_batch(Model *model, const int32_t *tokens, int B) {
    int T = model->config.seq_len, rows = 0;
    int32_t *packed = model->packed_tokens;
    for (int b = 0; b < B; b++) {
        int first = rows;
        model->offsets[b] = first;
        for (int t = 0; t < T; t++) {
            const int32_t *pair = tokens + ((size_t)b * T + t) * 2;
            // the last position is the readout row even if a caller left it PAD, so every example
            // has one (the encoders always put the target pair there)
            int readout = t == T - 1;
            if (pair[0] == 0 && !readout) continue;
            int r = model->merge_repeats && !readout ? first : rows;
            while (r < rows && (packed[2 * r] != pair[0] || packed[2 * r + 1] != pair[1])) r++;
            if (r < rows) {
                model->key_counts[r] += 1.0f;
                continue;
            }
            packed[2 * rows] = pair[0];
            packed[2 * rows + 1] = pair[1];
            model->key_counts[rows] = 1.0f;
            rows++;
        }
        model->readout_rows[b] = rows - 1;  // the target pair, last
    }
    model->offsets[B] = rows;
    model->num_rows = rows;
}

// keep_activations 0: every layer reuses the first layer's activation slices, so the working set
// stays in cache (inference: 22% more examples/s measured) and nothing is left for a backward.
static double forward(Model *model, const int32_t *tokens, const float *labels, int B, int keep_activations) {
    const ModelConfig *c = &model->config;
    int T = c->seq_len, C = c->d_model, F = c->d_ff, NH = c->n_heads, L = c->n_layers;
    pack_batch(model, tokens, B);
    int N = model->num_rows;
    ParameterTensors p = model->params;
    ActivationTensors a = model->acts;
    // the packed weights when the caller packed them for this step (model_pack_weights), and layer
    // 0's table of token pairs when packing made one (replicas follow their master)
    const Model *owner = model->master ? model->master : model;
    int packed = owner->weights_packed, pair_table = owner->pair_table;

    // token pairs -> rows of C: each token's embedding, the two side by side
    embedding_forward(a.encoded, model->packed_tokens, p.embedding, N, C);
    const float *x = a.encoded;
    for (int l = 0; l < L; l++) {
        LayerView layer = model_layer(model, l, keep_activations ? l : 0);
        const LayerParams *w = &layer.w;
        const LayerActivations *act = &layer.act;
        const float *pk_in = packed ? layer.packed[PACKED_IN_PROJ] : NULL;
        const float *pk_out = packed ? layer.packed[PACKED_OUT_PROJ] : NULL;
        const float *pk1 = packed ? layer.packed[PACKED_LINEAR1] : NULL;
        const float *pk2 = packed ? layer.packed[PACKED_LINEAR2] : NULL;
        // Only the readout rows of the last layer reach the output: there, attention has one query
        // per example and everything after it runs on M = B rows.
        int last = l == L - 1, M = last ? B : N;

        // q | k | v = in_proj(x); layer 0's from the table of token pairs when packing made one
        if (l == 0 && pair_table) {
            int V = c->vocab;
            for (int r = 0; r < N; r++) {
                const int32_t *pair = model->packed_tokens + 2 * r;
                memcpy(act->qkv + (size_t)r * 3 * C, model->pair_qkv + ((size_t)pair[0] * V + pair[1]) * 3 * C,
                       sizeof(float) * 3 * C);
            }
        } else {
            matmul_forward_fused(act->qkv, x, w->in_proj_w, pk_in, w->in_proj_b, NULL, 0, N, C, 3 * C);
        }
        // attention within each example: softmax(q k^T / sqrt(C/NH)) v, keys weighted by their copies
        attention_forward_packed(act->atty, act->att, act->qkv, model->key_counts, model->offsets, B, T, C, NH, last);
        // res1 = x + out_proj(atty); the residual adds and the ReLU ride in the products' output passes
        if (last) {
            matmul_forward_fused(a.attproj, act->atty, w->out_proj_w, pk_out, w->out_proj_b, NULL, 0, M, C, C);
            gather_residual_forward(act->res1, x, model->readout_rows, a.attproj, B, C);
        } else {
            matmul_forward_fused(act->res1, act->atty, w->out_proj_w, pk_out, w->out_proj_b, x, 0, M, C, C);
        }
        layernorm_forward(act->ln1, act->ln1_mean, act->ln1_rstd, act->res1, w->norm1_w, w->norm1_b, M, C);
        // res2 = ln1 + linear2(relu(linear1(ln1)))
        matmul_forward_fused(act->fc1_relu, act->ln1, w->linear1_w, pk1, w->linear1_b, NULL, 1, M, C, F);
        matmul_forward_fused(act->res2, act->fc1_relu, w->linear2_w, pk2, w->linear2_b, act->ln1, 0, M, F, C);
        layernorm_forward(act->ln2, act->ln2_mean, act->ln2_rstd, act->res2, w->norm2_w, w->norm2_b, M, C);
        x = act->ln2;
    }
    // one number per example from its target pair's row (the last layer's rows are the readout rows)
    readout_forward(model->pred, x, NULL, p.fc_out_w, p.fc_out_b, B, C);
    return labels ? mse_forward(model->pred, labels, B) : 0.0;
}

double model_forward(Model *model, const int32_t *tokens, const float *labels, int B) {
    return forward(model, tokens, labels, B, 1);
}

double model_infer(Model *model, const int32_t *tokens, const float *labels, int B) {
    return forward(model, tokens, labels, B, 0);
}

void model_zero_grad(Model *model) {
    if (model->grads_memory) memset(model->grads_memory, 0, model->num_parameters * sizeof(float));
}

float *model_swap_grads(Model *model, float *memory) {
    float *old = model->grads_memory;
    model->grads_memory = memory;
    point_params(&model->grads, memory, model->param_sizes);
    return old;
}

// Sums the rows of drows (N, width) that hold the same token pair into sums (P, width), one row per
// distinct pair in order of first appearance, and copies that pair's input row (inputs, stride C)
// into pair_rows (P, C). Returns P; group_tokens lists the pairs.
static int group_rows_by_pair(Model *model, const float *drows, int N, int width, const float *inputs, int C,
                              float *sums, float *pair_rows) {
    int V = model->config.vocab, P = 0;
    const int32_t *tokens = model->packed_tokens;
    for (int r = 0; r < N; r++) {
        int *slot = &model->pair_slot[tokens[2 * r] * V + tokens[2 * r + 1]];
        const float *d = drows + (size_t)r * width;
        if (*slot < 0) {
            *slot = P++;
            memcpy(sums + (size_t)*slot * width, d, sizeof(float) * width);
            memcpy(pair_rows + (size_t)*slot * C, inputs + (size_t)r * C, sizeof(float) * C);
            model->group_tokens[2 * *slot] = tokens[2 * r];
            model->group_tokens[2 * *slot + 1] = tokens[2 * r + 1];
        } else {
            float *sum = sums + (size_t)*slot * width;
            for (int i = 0; i < width; i++) sum[i] += d[i];
        }
    }
    for (int i = 0; i < P; i++) model->pair_slot[model->group_tokens[2 * i] * V + model->group_tokens[2 * i + 1]] = -1;
    return P;
}

void model_backward(Model *model, const float *labels, const float *weights, int B, float scale) {
    const ModelConfig *c = &model->config;
    int T = c->seq_len, C = c->d_model, F = c->d_ff, NH = c->n_heads, L = c->n_layers;
    int N = model->num_rows;
    size_t NC = (size_t)N * C;
    ParameterTensors p = model->params, g = model->grads;
    ActivationTensors a = model->acts;
    BackwardScratch s = model->scratch;
    // the weights as the input gradients read them, when the caller packed them for this step
    int packed = (model->master ? model->master : model)->weights_packed;

    mse_backward(s.dpred, model->pred, labels, weights, B, scale);
    memset(s.dlayer_out, 0, (size_t)B * C * sizeof(float));
    readout_backward(s.dlayer_out, g.fc_out_w, g.fc_out_b, s.dpred, model_layer(model, L - 1, L - 1).act.ln2, NULL,
                     p.fc_out_w, B, C);

    for (int l = L - 1; l >= 0; l--) {
        LayerView layer = model_layer(model, l, l);
        const LayerParams *w = &layer.w, *dw = &layer.dw;
        const LayerActivations *act = &layer.act;
        const float *x = l == 0 ? a.encoded : model_layer(model, l - 1, l - 1).act.ln2;
        int last = l == L - 1, M = last ? B : N;  // rows after attention, as in the forward
        size_t MC = (size_t)M * C;
        const float *rows_in = packed ? layer.packed[PACKED_IN_PROJ_ROWS] : NULL;
        const float *rows_out = packed ? layer.packed[PACKED_OUT_PROJ_ROWS] : NULL;
        const float *rows1 = packed ? layer.packed[PACKED_LINEAR1_ROWS] : NULL;
        const float *rows2 = packed ? layer.packed[PACKED_LINEAR2_ROWS] : NULL;

        // ln2 = LN(res2), res2 = ln1 + W2 relu(W1 ln1 + b1) + b2
        layernorm_backward(s.dres, dw->norm2_w, dw->norm2_b, s.dlayer_out, act->res2, w->norm2_w, act->ln2_mean,
                           act->ln2_rstd, M, C);
        memcpy(s.dln1, s.dres, MC * sizeof(float));
        matmul_backward_relu(s.dfc, dw->linear2_w, dw->linear2_b, s.dres, act->fc1_relu, w->linear2_w, rows2, M, F, C);
        matmul_backward(s.dln1, dw->linear1_w, dw->linear1_b, s.dfc, act->ln1, w->linear1_w, rows1, M, C, F);

        // ln1 = LN(res1), res1 = x + out_proj(attention(in_proj(x)))
        layernorm_backward(s.dres, dw->norm1_w, dw->norm1_b, s.dln1, act->res1, w->norm1_w, act->ln1_mean,
                           act->ln1_rstd, M, C);
        memset(s.datty, 0, MC * sizeof(float));
        matmul_backward(s.datty, dw->out_proj_w, dw->out_proj_b, s.dres, act->atty, w->out_proj_w, rows_out, M, C, C);
        attention_backward_packed(s.dqkv, s.datty, act->qkv, act->att, model->offsets, B, T, C, NH, last);
        // the residual path's gradient of x, on every row (the last layer's readout rows only)
        float *dx = s.dres;
        if (last) {
            dx = s.dln1;
            memset(dx, 0, NC * sizeof(float));
            scatter_rows_add(dx, model->readout_rows, s.dres, B, C);
        }
        if (l == 0 && !last) {
            // per distinct pair (see group_rows_by_pair); dx keeps the residual path's gradient,
            // which the embedding takes after the loop
            int P = group_rows_by_pair(model, s.dqkv, N, 3 * C, x, C, s.pair_dqkv, s.pair_inputs);
            memset(s.pair_dinp, 0, (size_t)P * C * sizeof(float));
            matmul_backward(s.pair_dinp, dw->in_proj_w, dw->in_proj_b, s.pair_dqkv, s.pair_inputs, w->in_proj_w,
                            rows_in, P, C, 3 * C);
            embedding_backward(g.embedding, s.pair_dinp, model->group_tokens, P, C);
        } else {
            matmul_backward(dx, dw->in_proj_w, dw->in_proj_b, s.dqkv, x, w->in_proj_w, rows_in, N, C, 3 * C);
        }

        // dx becomes the gradient of the layer below's output; its old buffer is free for reuse
        float *free_buffer = s.dlayer_out;
        s.dlayer_out = dx;
        if (last)
            s.dln1 = free_buffer;
        else
            s.dres = free_buffer;
    }
    embedding_backward(g.embedding, s.dlayer_out, model->packed_tokens, N, C);
}

static const char *const CONFIG_KEYS[] = {"vocab", "seq_len", "d_model", "n_layers", "n_heads", "d_ff"};

int model_save(const Model *model, const char *path, int num_extra, const char *const *extra_keys,
               const char *const *extra_values) {
    StWriter writer;
    st_writer_init(&writer);
    const int *values = &model->config.vocab;
    char buf[32];
    for (int i = 0; i < 6; i++) {
        snprintf(buf, sizeof(buf), "%d", values[i]);
        st_writer_metadata(&writer, CONFIG_KEYS[i], buf);
    }
    st_writer_metadata(&writer, "format", "pt");
    st_writer_metadata(&writer, "pathformer_version", PF_VERSION);
    for (int i = 0; i < num_extra; i++) st_writer_metadata(&writer, extra_keys[i], extra_values[i]);
    for (int i = 0; i < model_num_named_tensors(model); i++) {
        NamedTensor t;
        model_named_tensor(model, model->params_memory, i, &t);
        st_writer_add(&writer, t.name, ST_F32, t.ndim, t.shape, t.data);
    }
    int rc = st_writer_save(&writer, path);
    st_writer_free(&writer);
    return rc;
}

static int parse_metadata_int(const StFile *file, const char *key, int *out) {
    const char *value = st_metadata(file, key);
    if (!value) return 0;
    char *end;
    long v = strtol(value, &end, 10);
    if (end == value || *end != '\0' || v < 1 || v > 1 << 24)
        return pf_fail("checkpoint metadata %s='%s' is not a positive integer", key, value);
    *out = (int)v;
    return 1;
}

int model_open_checkpoint(StFile *file, const char *path) {
    if (st_load(file, path) != 0) return -1;
    static const char COMPILED_PREFIX[] = "_orig_mod.";
    size_t len = strlen(COMPILED_PREFIX);
    int prefixed = 0;
    for (int i = 0; i < file->num_tensors; i++) prefixed += strncmp(file->tensors[i].name, COMPILED_PREFIX, len) == 0;
    if (prefixed > 0 && prefixed == file->num_tensors)
        for (int i = 0; i < file->num_tensors; i++) {
            char *name = file->tensors[i].name;
            memmove(name, name + len, strlen(name + len) + 1);
        }
    return 0;
}

int model_config_from_file(ModelConfig *cfg, const StFile *file) {
    const StTensor *emb = st_find(file, "embedding.weight");
    const StTensor *fc1 = st_find(file, "transformer_encoder.layers.0.linear1.weight");
    if (!emb || emb->ndim != 2) return pf_fail("checkpoint has no 2-D tensor 'embedding.weight'");
    if (!fc1 || fc1->ndim != 2)
        return pf_fail("checkpoint has no 2-D tensor 'transformer_encoder.layers.0.linear1.weight'");
    // shapes first, then metadata where present (it must agree: model_load_params checks every shape)
    cfg->vocab = (int)emb->shape[0];
    cfg->d_model = (int)emb->shape[1] * 2;
    cfg->d_ff = (int)fc1->shape[0];
    int layers = 0;
    char name[96];
    for (;;) {
        snprintf(name, sizeof(name), "transformer_encoder.layers.%d.linear1.weight", layers);
        if (!st_find(file, name)) break;
        layers++;
    }
    cfg->n_layers = layers;
    int *fields = &cfg->vocab;
    for (int i = 0; i < 6; i++)
        if (parse_metadata_int(file, CONFIG_KEYS[i], &fields[i]) < 0) return -1;
    return model_config_validate(cfg);
}

int model_load_params(Model *model, const StFile *file) {
    int expected = model_num_named_tensors(model);
    for (int i = 0; i < expected; i++) {
        NamedTensor t;
        model_named_tensor(model, model->params_memory, i, &t);
        const float *data;
        if (st_get_f32(file, t.name, t.ndim, t.shape, &data) != 0) return -1;
        memcpy(t.data, data, t.numel * sizeof(float));
    }
    if (file->num_tensors != expected)
        return pf_fail("checkpoint has %d tensors, the model expects %d (unexpected extra tensors)", file->num_tensors,
                       expected);
    for (size_t i = 0; i < model->num_parameters; i++)
        if (!isfinite(model->params_memory[i])) return pf_fail("checkpoint holds a non-finite parameter value");
    return 0;
}
