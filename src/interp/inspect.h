// One graph through a model, everything kept: the prediction, every layer's and head's attention
// between the example's real tokens, and the norm of the residual stream at every token and state;
// as JSON, and as Vega-Lite figures for a page: the graph drawn with the attention a chosen token
// pays each edge token (layer, head and query picked with sliders), the token x token attention,
// and the residual norms.
#ifndef PATHFORMER_INTERP_INSPECT_H
#define PATHFORMER_INTERP_INSPECT_H

#include <cjson/cJSON.h>

#include "graph.h"
#include "model.h"

// The JSON of one example: {"edges", "target", "label", "prediction", "layers", "heads",
// "tokens": [[a, b], ...] (the real tokens: edges in list order, then the target pair),
// "attention": [layer][head][query][key] over those tokens, "residual_norms": [state][token]
// (state 0: the embedding, state l: layer l's output)}.
cJSON *inspect_example(const Model *model, const Example *ex, const DataConfig *cfg);
// The figures of an inspect_example JSON.
cJSON *inspect_graph_spec(const cJSON *inspected);
cJSON *inspect_attention_spec(const cJSON *inspected);
cJSON *inspect_norms_spec(const cJSON *inspected);

#endif
