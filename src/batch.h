// Token encoding of examples (SPEC §2), batches, and JSON Lines in and out.
#ifndef PATHFORMER_BATCH_H
#define PATHFORMER_BATCH_H

#include <stdint.h>
#include <stdio.h>

#include "graph.h"

// A batch of B encoded examples of T token pairs each.
typedef struct {
    int B, T;
    int32_t *tokens;   // (B, T, 2): edge pairs in list order, (0,0) padding, last (t, TARGET)
    float *labels;     // (B)
    int32_t *targets;  // (B) target vertex, kept for reports
} Batch;

void batch_alloc(Batch *batch, int B, int T);
void batch_free(Batch *batch);

// Encodes one example into row b of the batch.
void batch_encode(Batch *batch, int b, const Example *ex, const DataConfig *cfg);

// Fills the batch with examples [first, first + B) of `step` for `seed`, in parallel with OpenMP;
// the result does not depend on the thread count.
void batch_fill(Batch *batch, const DataSet *set, const DataConfig *cfg, uint64_t seed,
                uint64_t step, uint64_t first);

// Writes one example as a JSON line: {"edges": [[1,3],[3,4]], "target": 3, "distance": 2}.
void example_write_jsonl(FILE *out, const Example *ex);

// Parses one JSON line {"edges": [[a,b],...], "target": t} (a "distance" field is ignored) into an
// example whose label is the true BFS distance. 0 on success, -1 with the error set (malformed JSON,
// missing fields, vertex ids out of range, too many edges).
int example_parse_jsonl(Example *ex, const char *line, const DataConfig *cfg);

#endif
