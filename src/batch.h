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

// A batch reduced to its distinct examples. The model has no positional encoding and edge pairs
// are stored (min, max), so an example is its set of edge pairs plus its target pair: examples
// with the same set get the same prediction and the same gradient (up to the order of float sums
// inside attention). Running each distinct example once, weighted by the count of its copies, gives
// the loss and gradient of the whole batch. Batches of 2^15 hold about 20% repeats on pretrain (10%
// of the work: the repeats are small graphs) and 58% on tune.
typedef struct {
    Batch batch;      // first occurrences in draw order; batch.B distinct examples
    float *counts;    // (batch.B) copies of each in the input
    uint16_t *keys;   // (capacity, T) sorted edge codes, then the target pair's code
    int32_t *table;   // open addressing over keys: distinct index + 1, 0 when empty
    size_t table_mask;
} BatchDistinct;

void batch_distinct_create(BatchDistinct *d, int capacity, int T);
void batch_distinct_free(BatchDistinct *d);
// Fills d->batch and d->counts from in (in->B <= capacity). Deterministic: input order decides.
void batch_distinct_collect(BatchDistinct *d, const Batch *in);

// Writes one example as a JSON line: {"edges": [[1,3],[3,4]], "target": 3, "distance": 2}.
void example_write_jsonl(FILE *out, const Example *ex);

// Parses one JSON line {"edges": [[a,b],...], "target": t} (a "distance" field is ignored) into an
// example whose label is the true BFS distance. 0 on success, -1 with the error set (malformed JSON,
// missing fields, vertex ids out of range, too many edges).
int example_parse_jsonl(Example *ex, const char *line, const DataConfig *cfg);

#endif
