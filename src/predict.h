// predict as a streaming filter: graphs as JSON Lines in, one answer per line out, each written and
// flushed as soon as its line has been read; lines that arrive together run as one batch.
#ifndef PATHFORMER_PREDICT_H
#define PATHFORMER_PREDICT_H

#include <stdio.h>

#include "graph.h"
#include "model.h"

typedef struct {
    int skip_bad;         // 1: a bad line gets one stderr line and is skipped; 0: it stops the stream
    const char *in_name;  // the input's name in messages
} PredictOptions;

// Answers every line of in_fd on out: the line's JSON object with every key kept, "distance" set
// to the true BFS distance and "prediction" added. Blank lines are skipped. 0 at the end of the
// input, or -1 with the error set (a bad line in strict mode, naming its number; a read or write
// error). The model's capacity is the largest batch.
int predict_stream(Model *model, const DataConfig *data, int in_fd, FILE *out, const PredictOptions *options);

#endif
