// Reading and writing safetensors files: an 8-byte little-endian header length, a JSON header
// {"name": {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, "__metadata__": {...}},
// then the raw little-endian data. Readers validate every size and offset before trusting them.
#ifndef PATHFORMER_SAFETENSORS_H
#define PATHFORMER_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#define ST_MAX_DIMS 8

typedef enum { ST_F32, ST_I32 } StDtype;

typedef struct {
    char *name;
    StDtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    size_t numel;
    const void *data;   // points into the file buffer (for reading) or the caller's memory (writing)
} StTensor;

typedef struct {
    char *buffer;        // whole file (reader) — owned
    size_t buffer_size;
    int num_tensors;
    StTensor *tensors;
    int num_metadata;
    char **metadata_keys;
    char **metadata_values;
} StFile;

// Loads and validates a file: header length within the file, header valid JSON, every dtype
// known (F32 or I32), shapes non-negative, offsets in range, sized exactly numel * 4, no overlap.
// 0 on success, -1 with a one-line error naming the problem.
int st_load(StFile *file, const char *path);
// Same, from a buffer that the StFile takes over (freed by st_free).
int st_parse(StFile *file, char *buffer, size_t size);
void st_free(StFile *file);

const StTensor *st_find(const StFile *file, const char *name);
// Finds a tensor and checks its dtype and shape; -1 with the error set if missing or mis-shaped.
int st_get_f32(const StFile *file, const char *name, int ndim, const int64_t *shape, const float **data);
const char *st_metadata(const StFile *file, const char *key);

// Builds files to write.
typedef struct {
    int num_tensors, cap_tensors;
    StTensor *tensors;
    int num_metadata, cap_metadata;
    char **metadata_keys;
    char **metadata_values;
} StWriter;

void st_writer_init(StWriter *writer);
// The data pointer must stay valid until st_writer_save.
void st_writer_add(StWriter *writer, const char *name, StDtype dtype, int ndim, const int64_t *shape,
                   const void *data);
void st_writer_metadata(StWriter *writer, const char *key, const char *value);
// Writes atomically (temporary file, then rename). 0 or -1 with the error set.
int st_writer_save(const StWriter *writer, const char *path);
void st_writer_free(StWriter *writer);

#endif
