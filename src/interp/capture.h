// Activations of the model of SPEC §3 for interpretability: a separate forward over every position
// of padded batches (no packing, no merged repeats, every position of the last layer), that keeps
// each layer's output and each head's attention, and can knock out one head or one layer's
// feed-forward on the way. It runs the same ops as model.c's forward (embedding, matmul,
// attention, layernorm) but owns its buffers, so the training forward is untouched by it.
#ifndef PATHFORMER_INTERP_CAPTURE_H
#define PATHFORMER_INTERP_CAPTURE_H

#include <stdint.h>

#include "graph.h"
#include "model.h"

typedef enum { ABLATE_NONE, ABLATE_ZERO, ABLATE_MEAN } AblationMode;

// One component knocked out: head `head` of layer `layer` (its slice of the attention output,
// before the output projection), or with head = -1 the layer's feed-forward output (linear2 with
// its bias). Mean ablation puts the component's mean over the real positions of a reference set
// there (Capture.head_mean / ffn_mean, filled by a capture_forward with collect_means set).
typedef struct {
    AblationMode mode;
    int layer;
    int head;
} Ablation;

typedef struct {
    int capacity, B, T, C, L, NH, F;
    float *states;    // (L + 1, B, T, C) residual stream: the embedding, then each layer's output
    float *att;       // (L, B, NH, T, T) softmax probabilities, query-major (att[t T + s]: query t on key s)
    float *pred;      // (B) the readout of position T - 1
    uint8_t *pad;     // (B, T) 1 where the position is padding
    // the mean of each layer's attention output and feed-forward output over real positions, summed
    // over every capture_forward since capture_reset_means with collect_means on
    double *head_sum; // (L, C)
    double *ffn_sum;  // (L, C)
    long mean_rows;
    float *head_mean; // (L, C) head_sum / mean_rows (capture_finish_means)
    float *ffn_mean;  // (L, C)
    // scratch of one layer
    float *qkv, *atty, *res, *ln_mean, *ln_rstd, *fc, *ffn;
} Capture;

// Loads a checkpoint for inference (capacity examples per forward), with the data settings its
// vocabulary and sequence length imply. 0 or -1 with the error set (prefixed with the path).
int capture_load_model(Model *model, DataConfig *data, const char *path, int capacity);

void capture_create(Capture *cap, const ModelConfig *cfg, int capacity);
void capture_free(Capture *cap);

// Runs B <= capacity examples (tokens (B, T, 2), encoded as batch_encode does) through the model,
// keeping every layer's state and attention; ablation NULL or mode ABLATE_NONE runs the model
// unchanged. Starts at layer `from` (0: from the tokens), reusing states[from] of the previous call
// on the same tokens (an ablation at layer l leaves the layers before it alone).
void capture_forward(Capture *cap, const Model *model, const int32_t *tokens, int B, const Ablation *ablation,
                     int from, int collect_means);
void capture_reset_means(Capture *cap);
// head_mean and ffn_mean from the sums (0 or -1 with the error set when no rows were collected).
int capture_finish_means(Capture *cap);

// Pointers into a capture: layer state (0..L) of example b, position t (C floats); attention row of
// layer l, head h, example b, query t (T floats).
const float *capture_state(const Capture *cap, int layer, int b, int t);
const float *capture_attention(const Capture *cap, int layer, int head, int b, int t);

#endif
