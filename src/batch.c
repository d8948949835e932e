// Token encoding (SPEC §2), batch filling in parallel, and JSON Lines in and out.
#include "batch.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "common.h"

#ifdef _OPENMP
#include <omp.h>
#endif

void batch_alloc(Batch *batch, int B, int T) {
    batch->B = B;
    batch->T = T;
    batch->tokens = mallocCheck((size_t)B * T * 2 * sizeof(int32_t));
    batch->labels = mallocCheck((size_t)B * sizeof(float));
    batch->targets = mallocCheck((size_t)B * sizeof(int32_t));
}

void batch_free(Batch *batch) {
    free(batch->tokens);
    free(batch->labels);
    free(batch->targets);
    memset(batch, 0, sizeof(*batch));
}

// Row b: (T, 2) token pairs = edges in list order, (0, 0) padding, then (t, TARGET).
void batch_encode(Batch *batch, int b, const Example *ex, const DataConfig *cfg) {
    int T = batch->T;
    assert(ex->graph.num_edges <= T - 1);
    int32_t *row = batch->tokens + (size_t)b * T * 2;
    int e = 0;
    for (; e < ex->graph.num_edges; e++) {
        row[2 * e] = ex->graph.edges[e][0];
        row[2 * e + 1] = ex->graph.edges[e][1];
    }
    for (; e < T - 1; e++) {
        row[2 * e] = 0;
        row[2 * e + 1] = 0;
    }
    row[2 * (T - 1)] = ex->target;
    row[2 * (T - 1) + 1] = cfg->max_v + 1;
    batch->labels[b] = (float)ex->label;
    batch->targets[b] = ex->target;
}

void batch_fill(Batch *batch, const DataSet *set, const DataConfig *cfg, uint64_t seed,
                uint64_t step, uint64_t first) {
    // Each example has its own keyed stream, so the split across threads cannot change it.
#ifdef _OPENMP
#pragma omp parallel for schedule(static)
#endif
    for (int b = 0; b < batch->B; b++) {
        Example ex;
        dataset_sample_keyed(&ex, set, cfg, seed, step, first + (uint64_t)b);
        batch_encode(batch, b, &ex, cfg);
    }
}

// Appends the decimal digits of a non-negative int; returns the new end.
static char *put_int(char *p, int value) {
    char digits[12];
    int len = 0;
    do {
        digits[len++] = (char)('0' + value % 10);
        value /= 10;
    } while (value > 0);
    while (len > 0) *p++ = digits[--len];
    return p;
}

static char *put_str(char *p, const char *s) {
    size_t len = strlen(s);
    memcpy(p, s, len);
    return p + len;
}

// Formatted by hand into one buffer: `gen` writes millions of lines.
void example_write_jsonl(FILE *out, const Example *ex) {
    // Each edge takes at most 8 characters ("[63,62],"); the rest fits in 64.
    char line[PF_MAX_EDGES * 8 + 64];
    char *p = put_str(line, "{\"edges\": [");
    for (int e = 0; e < ex->graph.num_edges; e++) {
        if (e > 0) *p++ = ',';
        *p++ = '[';
        p = put_int(p, ex->graph.edges[e][0]);
        *p++ = ',';
        p = put_int(p, ex->graph.edges[e][1]);
        *p++ = ']';
    }
    p = put_str(p, "], \"target\": ");
    p = put_int(p, ex->target);
    p = put_str(p, ", \"distance\": ");
    p = put_int(p, ex->label);
    p = put_str(p, "}\n");
    fwriteCheck(line, 1, (size_t)(p - line), out);
}

// Reads a vertex id in 1..max_v from a JSON value; `what` names it in the error ("edge 3", "target").
static int parse_vertex(int *out, const cJSON *item, const char *what, const DataConfig *cfg) {
    if (!cJSON_IsNumber(item)) return pf_fail("%s: vertex is not a number", what);
    double value = item->valuedouble;
    if (value != floor(value)) return pf_fail("%s: vertex %g is not an integer", what, value);
    if (value < 1 || value > cfg->max_v)
        return pf_fail("%s: vertex %g out of range 1..%d", what, value, cfg->max_v);
    *out = (int)value;
    return 0;
}

static int parse_example(Example *ex, const cJSON *root, const DataConfig *cfg) {
    if (!cJSON_IsObject(root)) return pf_fail("expected a JSON object {\"edges\": [...], \"target\": t}");
    const cJSON *edges = cJSON_GetObjectItemCaseSensitive(root, "edges");
    if (!edges) return pf_fail("missing \"edges\"");
    if (!cJSON_IsArray(edges)) return pf_fail("\"edges\" must be an array of [a, b] pairs");
    int num_edges = cJSON_GetArraySize(edges);
    int max_edges = data_config_seq_len(cfg) - 1;
    if (num_edges > max_edges) return pf_fail("too many edges: %d (at most %d)", num_edges, max_edges);

    int pairs[PF_MAX_EDGES][2];
    int e = 0;
    const cJSON *edge;
    cJSON_ArrayForEach(edge, edges) {
        char what[32];
        snprintf(what, sizeof(what), "edge %d", e + 1);
        if (!cJSON_IsArray(edge) || cJSON_GetArraySize(edge) != 2)
            return pf_fail("%s: expected a pair [a, b]", what);
        for (int j = 0; j < 2; j++) {
            if (parse_vertex(&pairs[e][j], cJSON_GetArrayItem(edge, j), what, cfg) != 0) return -1;
        }
        e++;
    }

    const cJSON *target = cJSON_GetObjectItemCaseSensitive(root, "target");
    if (!target) return pf_fail("missing \"target\"");
    if (parse_vertex(&ex->target, target, "target", cfg) != 0) return -1;
    if (graph_from_edges(&ex->graph, (const int (*)[2])pairs, num_edges, cfg) != 0) return -1;

    int dist[PF_MAX_VERTICES + 1], parent[PF_MAX_VERTICES + 1];
    graph_bfs(&ex->graph, cfg, dist, parent);
    ex->label = dist[ex->target];
    return 0;
}

int example_parse_jsonl(Example *ex, const char *line, const DataConfig *cfg) {
    size_t start = strspn(line, " \t\r\n");
    if (line[start] == '\0') return pf_fail("empty line");
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithOpts(line, &end, 1);
    if (!root) {
        size_t offset = end ? (size_t)(end - line) : 0;
        return pf_fail("not valid JSON (near character %zu)", offset + 1);
    }
    int rc = parse_example(ex, root, cfg);
    cJSON_Delete(root);
    return rc;
}

void batch_distinct_create(BatchDistinct *d, int capacity, int T) {
    batch_alloc(&d->batch, capacity, T);
    d->batch.B = 0;
    d->counts = mallocCheck(sizeof(float) * capacity);
    d->keys = mallocCheck(sizeof(uint16_t) * (size_t)capacity * T);
    size_t size = 1024;
    while (size < 2 * (size_t)capacity) size *= 2;
    d->table = mallocCheck(sizeof(int32_t) * size);
    d->table_mask = size - 1;
}

void batch_distinct_free(BatchDistinct *d) {
    batch_free(&d->batch);
    free(d->counts);
    free(d->keys);
    free(d->table);
}

void batch_distinct_collect(BatchDistinct *d, const Batch *in) {
    int T = in->T, count = 0;
    memset(d->table, 0, sizeof(int32_t) * (d->table_mask + 1));
    for (int b = 0; b < in->B; b++) {
        const int32_t *tokens = in->tokens + (size_t)b * T * 2;
        uint16_t *key = d->keys + (size_t)count * T;  // written in place; kept when the example is new
        for (int t = 0; t < T; t++) {  // codes below 2^16: vertex ids and TARGET are below 256
            uint16_t code = (uint16_t)(tokens[2 * t] << 8 | tokens[2 * t + 1]);
            int i = t;
            if (t < T - 1)  // insertion sort of the edge positions (padding codes are 0 and sort first)
                for (; i > 0 && key[i - 1] > code; i--) key[i] = key[i - 1];
            key[i] = code;
        }
        uint64_t hash = 1469598103934665603ull;  // FNV-1a over the codes
        for (int t = 0; t < T; t++) hash = (hash ^ key[t]) * 1099511628211ull;
        size_t slot = (size_t)hash & d->table_mask;
        for (; d->table[slot] != 0; slot = (slot + 1) & d->table_mask)
            if (memcmp(d->keys + (size_t)(d->table[slot] - 1) * T, key, sizeof(uint16_t) * T) == 0) break;
        if (d->table[slot] != 0) {
            d->counts[d->table[slot] - 1] += 1.0f;
            continue;
        }
        d->table[slot] = count + 1;
        d->counts[count] = 1.0f;
        memcpy(d->batch.tokens + (size_t)count * T * 2, tokens, sizeof(int32_t) * T * 2);
        d->batch.labels[count] = in->labels[b];
        d->batch.targets[count] = in->targets[b];
        count++;
    }
    d->batch.B = count;
}
