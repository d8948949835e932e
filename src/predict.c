#include "predict.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "batch.h"
#include "common.h"

// The input as lines, read with read(2) so that "is more input waiting?" has an answer: lines
// already buffered, or a poll of the descriptor that does not wait.
typedef struct {
    int fd;
    char *data;
    size_t start, end, capacity;  // unread bytes are data[start..end)
    int eof;
} LineReader;

// The next complete line in the buffer (its newline replaced by '\0'), the last line at the end
// of the input, or NULL when no whole line is buffered yet.
static char *next_buffered_line(LineReader *r) {
    char *begin = r->data + r->start;
    char *newline = memchr(begin, '\n', r->end - r->start);
    if (!newline) {
        if (!r->eof || r->start == r->end) return NULL;
        r->data[r->end] = '\0';  // a last line without a newline
        r->start = r->end;
        return begin;
    }
    *newline = '\0';
    r->start = (size_t)(newline - r->data) + 1;
    return begin;
}

// Reads what the descriptor has (waiting for at least one byte); 0, or -1 with the error set.
static int fill(LineReader *r, const char *name) {
    if (r->start > 0) {  // keep the partial line at the front
        memmove(r->data, r->data + r->start, r->end - r->start);
        r->end -= r->start;
        r->start = 0;
    }
    if (r->capacity - r->end < 4096) {
        char *bigger = mallocCheck(r->capacity * 2);
        memcpy(bigger, r->data, r->end);
        free(r->data);
        r->data = bigger;
        r->capacity *= 2;
    }
    ssize_t n;
    do n = read(r->fd, r->data + r->end, r->capacity - r->end - 1);
    while (n < 0 && errno == EINTR);
    if (n < 0) return pf_fail("cannot read %s: %s", name, strerror(errno));
    if (n == 0) r->eof = 1;
    r->end += (size_t)n;
    return 0;
}

// Whether the descriptor has input ready now (or its end), without waiting.
static int input_waiting(const LineReader *r) {
    struct pollfd p = {.fd = r->fd, .events = POLLIN};
    return poll(&p, 1, 0) > 0;
}

// Writes the batch's answers: each input object with its distance and prediction.
static int write_answers(FILE *out, cJSON **objects, const Batch *batch, const float *pred, int B) {
    for (int b = 0; b < B; b++) {
        char number[32];
        cJSON_DeleteItemFromObjectCaseSensitive(objects[b], "distance");
        cJSON_DeleteItemFromObjectCaseSensitive(objects[b], "prediction");
        cJSON_AddNumberToObject(objects[b], "distance", batch->labels[b]);
        snprintf(number, sizeof(number), "%.6f", pred[b]);
        cJSON_AddItemToObject(objects[b], "prediction", cJSON_CreateRaw(number));
        char *text = cJSON_PrintUnformatted(objects[b]);
        fputs(text, out);
        fputc('\n', out);
        free(text);
        cJSON_Delete(objects[b]);
        objects[b] = NULL;
    }
    if (fflush(out) != 0 || ferror(out)) return pf_fail("cannot write the predictions: %s", strerror(errno));
    return 0;
}

int predict_stream(Model *model, const DataConfig *data, int in_fd, FILE *out, const PredictOptions *options) {
    int capacity = model->batch_capacity;
    LineReader reader = {.fd = in_fd, .data = mallocCheck(65536), .capacity = 65536};
    Batch batch;
    batch_alloc(&batch, capacity, model->config.seq_len);
    cJSON **objects = callocCheck((size_t)capacity, sizeof(cJSON *));
    long line_number = 0;
    int B = 0, rc = 0;
    while (rc == 0) {
        char *line = next_buffered_line(&reader);
        if (line) {
            line_number++;
            if (line[strspn(line, " \t\r")] == '\0') continue;  // blank lines are allowed
            Example example;
            if (example_parse_jsonl(&example, line, data) == 0) {
                objects[B] = cJSON_Parse(line);
                batch_encode(&batch, B++, &example, data);
            } else if (options->skip_bad) {
                fprintf(stderr, "pathformer: %s line %ld: %s (skipped)\n", options->in_name, line_number,
                        pf_last_error());
            } else {
                char error[512];
                snprintf(error, sizeof(error), "%s line %ld: %s", options->in_name, line_number, pf_last_error());
                if (B > 0) {  // the lines before it are answered first
                    model_infer(model, batch.tokens, NULL, B);
                    write_answers(out, objects, &batch, model->pred, B);
                    B = 0;
                }
                rc = pf_fail("%s", error);
                break;
            }
            if (B < capacity) continue;
        }
        // a full batch, or no whole line buffered and none waiting: answer what is held now
        if (B > 0 && (B == capacity || reader.eof || !input_waiting(&reader))) {
            model_infer(model, batch.tokens, NULL, B);
            rc = write_answers(out, objects, &batch, model->pred, B);
            B = 0;
            continue;
        }
        if (reader.eof) break;
        rc = fill(&reader, options->in_name);
    }
    for (int b = 0; b < B; b++) cJSON_Delete(objects[b]);
    free(objects);
    batch_free(&batch);
    free(reader.data);
    return rc;
}
