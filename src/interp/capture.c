// The capture forward: model.c's layer, written over padded batches with every position kept.
#include "interp/capture.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "safetensors.h"
#include "ops/ops.h"

int capture_load_model(Model *model, DataConfig *data, const char *path, int capacity) {
    StFile file;
    if (model_open_checkpoint(&file, path) != 0) return -1;
    *data = data_config_default();
    ModelConfig mc = model_config_default();
    mc.seq_len = data_config_seq_len(data);
    int rc = model_config_from_file(&mc, &file);
    if (rc == 0) {
        data->max_v = mc.vocab - 2;
        if (data->max_v < 1 || (mc.seq_len - 1) % data->max_v != 0)
            rc = pf_fail("vocabulary %d and sequence length %d do not fit any data settings", mc.vocab, mc.seq_len);
    }
    if (rc == 0) {
        data->edges_per_vertex = (mc.seq_len - 1) / data->max_v;
        if (data->max_tune_v > data->max_v) data->max_tune_v = data->max_v;
        rc = data_config_validate(data);
    }
    if (rc == 0) {
        model_create(model, &mc, capacity, 0);
        rc = model_load_params(model, &file);
        if (rc != 0) model_free(model);
    }
    st_free(&file);
    if (rc != 0) {
        char message[512];
        snprintf(message, sizeof(message), "%s", pf_last_error());
        return pf_fail("%s: %s", path, message);
    }
    return 0;
}

void capture_create(Capture *cap, const ModelConfig *cfg, int capacity) {
    memset(cap, 0, sizeof(*cap));
    cap->capacity = capacity;
    cap->T = cfg->seq_len;
    cap->C = cfg->d_model;
    cap->L = cfg->n_layers;
    cap->NH = cfg->n_heads;
    cap->F = cfg->d_ff;
    size_t BT = (size_t)capacity * cap->T, C = (size_t)cap->C, L = (size_t)cap->L;
    cap->states = mallocCheck((L + 1) * BT * C * sizeof(float));
    cap->att = mallocCheck(L * BT * cap->NH * cap->T * sizeof(float));
    cap->pred = mallocCheck((size_t)capacity * sizeof(float));
    cap->pad = mallocCheck(BT);
    cap->head_sum = callocCheck(L * C, sizeof(double));
    cap->ffn_sum = callocCheck(L * C, sizeof(double));
    cap->head_mean = callocCheck(L * C, sizeof(float));
    cap->ffn_mean = callocCheck(L * C, sizeof(float));
    cap->qkv = mallocCheck(BT * 3 * C * sizeof(float));
    cap->atty = mallocCheck(BT * C * sizeof(float));
    cap->res = mallocCheck(BT * C * sizeof(float));
    cap->ln_mean = mallocCheck(BT * sizeof(float));
    cap->ln_rstd = mallocCheck(BT * sizeof(float));
    cap->fc = mallocCheck(BT * (size_t)cap->F * sizeof(float));
    cap->ffn = mallocCheck(BT * C * sizeof(float));
}

void capture_free(Capture *cap) {
    float *floats[] = {cap->states, cap->att, cap->pred, cap->head_mean, cap->ffn_mean, cap->qkv,
                       cap->atty, cap->res, cap->ln_mean, cap->ln_rstd, cap->fc, cap->ffn};
    for (size_t i = 0; i < sizeof(floats) / sizeof(floats[0]); i++) free(floats[i]);
    free(cap->pad);
    free(cap->head_sum);
    free(cap->ffn_sum);
    memset(cap, 0, sizeof(*cap));
}

void capture_reset_means(Capture *cap) {
    size_t n = (size_t)cap->L * cap->C;
    memset(cap->head_sum, 0, n * sizeof(double));
    memset(cap->ffn_sum, 0, n * sizeof(double));
    cap->mean_rows = 0;
}

int capture_finish_means(Capture *cap) {
    if (cap->mean_rows == 0) return pf_fail("capture: no positions collected for the mean ablation");
    for (size_t i = 0; i < (size_t)cap->L * cap->C; i++) {
        cap->head_mean[i] = (float)(cap->head_sum[i] / cap->mean_rows);
        cap->ffn_mean[i] = (float)(cap->ffn_sum[i] / cap->mean_rows);
    }
    return 0;
}

const float *capture_state(const Capture *cap, int layer, int b, int t) {
    return cap->states + (((size_t)layer * cap->B + b) * cap->T + t) * cap->C;
}

const float *capture_attention(const Capture *cap, int layer, int head, int b, int t) {
    return cap->att + ((((size_t)layer * cap->B + b) * cap->NH + head) * cap->T + t) * cap->T;
}

// Columns [lo, hi) of every real row of x (B T, C) summed into sum (C), or replaced (zero or mean).
static void sum_rows(double *sum, const float *x, const uint8_t *pad, int rows, int C) {
    for (int r = 0; r < rows; r++) {
        if (pad[r]) continue;
        for (int c = 0; c < C; c++) sum[c] += x[(size_t)r * C + c];
    }
}

static void knock_out(float *x, const float *mean, int rows, int C, int lo, int hi) {
    for (int r = 0; r < rows; r++)
        for (int c = lo; c < hi; c++) x[(size_t)r * C + c] = mean ? mean[c] : 0.0f;
}

void capture_forward(Capture *cap, const Model *model, const int32_t *tokens, int B, const Ablation *ablation,
                     int from, int collect_means) {
    int T = cap->T, C = cap->C, F = cap->F, NH = cap->NH, L = cap->L, BT = B * T, hs = C / NH;
    size_t plane = (size_t)BT * C;
    if (from == 0 || cap->B != B) {
        from = 0;
        cap->B = B;
        for (int r = 0; r < BT; r++) cap->pad[r] = tokens[2 * r] == 0 && r % T != T - 1;
        embedding_forward(cap->states, tokens, model->params.embedding, BT, C);
    }
    int ablate_layer = ablation && ablation->mode != ABLATE_NONE ? ablation->layer : -1;
    for (int l = from; l < L; l++) {
        LayerParams w = model_layer(model, l, 0).w;
        const float *x = cap->states + (size_t)l * plane;
        float *out = cap->states + (size_t)(l + 1) * plane;
        float *att = cap->att + (size_t)l * B * NH * T * T;
        // attention, each head's output in its slice of atty
        matmul_forward(cap->qkv, x, w.in_proj_w, w.in_proj_b, BT, C, 3 * C);
        attention_forward(cap->atty, att, cap->qkv, cap->pad, B, T, C, NH);
        if (collect_means) sum_rows(cap->head_sum + (size_t)l * C, cap->atty, cap->pad, BT, C);
        if (l == ablate_layer && ablation->head >= 0) {
            const float *mean = ablation->mode == ABLATE_MEAN ? cap->head_mean + (size_t)l * C : NULL;
            knock_out(cap->atty, mean, BT, C, ablation->head * hs, (ablation->head + 1) * hs);
        }
        // res = x + out_proj(atty); ln1 (into atty, free again)
        matmul_forward(cap->res, cap->atty, w.out_proj_w, w.out_proj_b, BT, C, C);
        residual_forward(cap->res, cap->res, x, plane);
        layernorm_forward(cap->atty, cap->ln_mean, cap->ln_rstd, cap->res, w.norm1_w, w.norm1_b, BT, C);
        // feed-forward
        matmul_forward(cap->fc, cap->atty, w.linear1_w, w.linear1_b, BT, C, F);
        relu_forward(cap->fc, cap->fc, (size_t)BT * F);
        matmul_forward(cap->ffn, cap->fc, w.linear2_w, w.linear2_b, BT, F, C);
        if (collect_means) sum_rows(cap->ffn_sum + (size_t)l * C, cap->ffn, cap->pad, BT, C);
        if (l == ablate_layer && ablation->head < 0)
            knock_out(cap->ffn, ablation->mode == ABLATE_MEAN ? cap->ffn_mean + (size_t)l * C : NULL, BT, C, 0, C);
        residual_forward(cap->res, cap->ffn, cap->atty, plane);
        layernorm_forward(out, cap->ln_mean, cap->ln_rstd, cap->res, w.norm2_w, w.norm2_b, BT, C);
    }
    if (collect_means)
        for (int r = 0; r < BT; r++) cap->mean_rows += !cap->pad[r];
    const float *last = cap->states + (size_t)L * plane;
    for (int b = 0; b < B; b++) {
        const float *row = last + ((size_t)b * T + T - 1) * C;
        float sum = model->params.fc_out_b[0];
        for (int c = 0; c < C; c++) sum += row[c] * model->params.fc_out_w[c];
        cap->pred[b] = sum;
    }
}
