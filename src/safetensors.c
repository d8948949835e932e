// safetensors reading and writing. The reader trusts nothing in the file: every length, dtype,
// shape and offset is checked before a pointer into the data is handed out, and any problem
// becomes a one-line error. Follows the format's rules (huggingface/safetensors): header length
// at most 100 MB, JSON header optionally padded with spaces, offsets relative to the data section,
// tensors covering the data section exactly (no overlap, no holes).
#include "safetensors.h"

#include "common.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

// Tensor bytes are used in place as float/int32 arrays, which is only right on a little-endian host.
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host"
#endif

#define ST_MAX_HEADER_BYTES 100000000ull   // the reference implementation's limit
#define ST_DATA_ALIGNMENT 64               // where the reader places the data section in memory
#define ST_FILE_ALIGNMENT 8                // where the writer starts the data section in the file
#define ST_MAX_EXACT_INTEGER 9007199254740992.0   // 2^53: JSON numbers arrive as doubles
#define ST_METADATA_KEY "__metadata__"

// ---------------------------------------------------------------------------------------------
// Small helpers

static char *copy_string(const char *text) {
    size_t len = strlen(text);
    char *copy = mallocCheck(len + 1);
    memcpy(copy, text, len + 1);
    return copy;
}

static const char *dtype_name(StDtype dtype) { return dtype == ST_F32 ? "F32" : "I32"; }

static void write_u64_le(unsigned char *out, uint64_t value) {
    for (int i = 0; i < 8; i++) out[i] = (unsigned char)(value >> (8 * i));
}

static uint64_t read_u64_le(const unsigned char *in) {
    uint64_t value = 0;
    for (int i = 0; i < 8; i++) value |= (uint64_t)in[i] << (8 * i);
    return value;
}

// Names come from the file and may hold control characters or be very long; error messages must
// stay on one line, so they show a shortened copy with control characters replaced by '?'.
#define PRINTABLE_NAME_BYTES 80
static const char *printable_name(char out[PRINTABLE_NAME_BYTES], const char *name) {
    const size_t keep_max = 60;
    size_t len = strlen(name);
    size_t keep = len;
    if (keep > keep_max) {
        keep = keep_max;
        while (keep > 0 && ((unsigned char)name[keep] & 0xC0) == 0x80) keep--;   // whole UTF-8 chars
    }
    for (size_t i = 0; i < keep; i++) {
        unsigned char c = (unsigned char)name[i];
        out[i] = (c < 0x20 || c == 0x7F) ? '?' : (char)c;
    }
    strcpy(out + keep, keep < len ? "..." : "");
    return out;
}

// "[2,3]" — at most ST_MAX_DIMS dims of at most 20 digits each fit in 200 bytes.
#define SHAPE_TEXT_BYTES 200
static const char *shape_text(char out[SHAPE_TEXT_BYTES], int ndim, const int64_t *shape) {
    size_t used = (size_t)snprintf(out, SHAPE_TEXT_BYTES, "[");
    for (int d = 0; d < ndim && used < SHAPE_TEXT_BYTES; d++)
        used += (size_t)snprintf(out + used, SHAPE_TEXT_BYTES - used, d ? ",%lld" : "%lld", (long long)shape[d]);
    if (used < SHAPE_TEXT_BYTES) snprintf(out + used, SHAPE_TEXT_BYTES - used, "]");
    return out;
}

// numel of a shape, or -1 if a dim is negative or the byte count (numel * 4) overflows size_t.
static int shape_numel(int ndim, const int64_t *shape, size_t *numel_out) {
    size_t numel = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0) return -1;
        uint64_t dim = (uint64_t)shape[d];
        if (dim != 0 && numel > SIZE_MAX / 4 / dim) return -1;
        numel *= (size_t)dim;
    }
    *numel_out = numel;
    return 0;
}

// An exact non-negative integer in [0, 2^53], as JSON offsets and dims must be.
static int json_to_count(const cJSON *item, double *value_out) {
    if (!cJSON_IsNumber(item)) return -1;
    double value = item->valuedouble;
    if (!(value >= 0.0 && value <= ST_MAX_EXACT_INTEGER) || value != floor(value)) return -1;
    *value_out = value;
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Reading

// Every reader error goes through here so that it names the file when there is one
// (source is the path for st_load, NULL for st_parse).
__attribute__((format(printf, 2, 3)))
static int parse_fail(const char *source, const char *fmt, ...) {
    char message[400];
    va_list args;
    va_start(args, fmt);
    vsnprintf(message, sizeof(message), fmt, args);
    va_end(args);
    if (source) return pf_fail("%s: %s", source, message);
    return pf_fail("%s", message);
}

// A tensor's place in the data section, for the overlap and coverage checks.
typedef struct {
    size_t begin, end;
    int index;
} ByteRange;

static int compare_ranges(const void *a, const void *b) {
    const ByteRange *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

static int compare_names(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

// The first name that appears twice in names[0..count), or NULL; cJSON keeps duplicate keys rather
// than rejecting them. Sorting keeps this fast for hostile headers with millions of entries.
static const char *find_duplicate_name(char *const *names, int count) {
    if (count < 2) return NULL;
    const char **sorted = mallocCheck((size_t)count * sizeof(char *));
    memcpy(sorted, names, (size_t)count * sizeof(char *));
    qsort(sorted, (size_t)count, sizeof(char *), compare_names);
    const char *duplicate = NULL;
    for (int i = 1; i < count && !duplicate; i++)
        if (strcmp(sorted[i - 1], sorted[i]) == 0) duplicate = sorted[i];
    free(sorted);
    return duplicate;
}

static const char *find_duplicate_tensor_name(const StTensor *tensors, int count) {
    char **names = mallocCheck((size_t)count * sizeof(char *));
    for (int i = 0; i < count; i++) names[i] = tensors[i].name;
    const char *duplicate = find_duplicate_name(names, count);
    free(names);
    return duplicate;
}

// Fills one tensor from its header entry; begin/end are relative to the data section.
static int parse_tensor(const char *source, StTensor *tensor, const cJSON *entry, const char *data,
                        size_t data_size, ByteRange *range) {
    char name[PRINTABLE_NAME_BYTES], shape_str[SHAPE_TEXT_BYTES];
    printable_name(name, tensor->name);
    if (!cJSON_IsObject(entry)) return parse_fail(source, "tensor '%s': header entry is not an object", name);

    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(entry, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(entry, "shape");
    const cJSON *offsets = cJSON_GetObjectItemCaseSensitive(entry, "data_offsets");
    if (!dtype) return parse_fail(source, "tensor '%s': missing dtype", name);
    if (!shape) return parse_fail(source, "tensor '%s': missing shape", name);
    if (!offsets) return parse_fail(source, "tensor '%s': missing data_offsets", name);

    if (!cJSON_IsString(dtype)) return parse_fail(source, "tensor '%s': dtype is not a string", name);
    if (strcmp(dtype->valuestring, "F32") == 0) {
        tensor->dtype = ST_F32;
    } else if (strcmp(dtype->valuestring, "I32") == 0) {
        tensor->dtype = ST_I32;
    } else {
        char dtype_str[PRINTABLE_NAME_BYTES];
        return parse_fail(source, "tensor '%s': dtype %s not supported (F32 or I32 expected)", name,
                          printable_name(dtype_str, dtype->valuestring));
    }

    if (!cJSON_IsArray(shape)) return parse_fail(source, "tensor '%s': shape is not an array", name);
    int ndim = cJSON_GetArraySize(shape);
    if (ndim > ST_MAX_DIMS)
        return parse_fail(source, "tensor '%s': shape has %d dims (at most %d supported)", name, ndim, ST_MAX_DIMS);
    tensor->ndim = ndim;
    int d = 0;
    for (const cJSON *dim = shape->child; dim; dim = dim->next, d++) {
        double value;
        if (!cJSON_IsNumber(dim))
            return parse_fail(source, "tensor '%s': shape dim %d is not a number", name, d);
        if (json_to_count(dim, &value) != 0)
            return parse_fail(source, "tensor '%s': shape dim %d is %g (non-negative integer expected)", name, d,
                              dim->valuedouble);
        tensor->shape[d] = (int64_t)value;
    }
    shape_text(shape_str, ndim, tensor->shape);
    if (shape_numel(ndim, tensor->shape, &tensor->numel) != 0)
        return parse_fail(source, "tensor '%s': shape %s is too large", name, shape_str);

    double begin, end;
    if (!cJSON_IsArray(offsets) || cJSON_GetArraySize(offsets) != 2 || json_to_count(offsets->child, &begin) != 0 ||
        json_to_count(offsets->child->next, &end) != 0)
        return parse_fail(source, "tensor '%s': data_offsets must be two non-negative integers [begin,end]", name);
    if (begin > end)
        return parse_fail(source, "tensor '%s': data_offsets [%.0f,%.0f] reversed (begin after end)", name, begin, end);
    if (end > (double)data_size)
        return parse_fail(source, "tensor '%s': data_offsets [%.0f,%.0f] out of range (data section is %zu bytes)",
                          name, begin, end, data_size);
    range->begin = (size_t)begin;
    range->end = (size_t)end;
    size_t bytes = range->end - range->begin;
    if (bytes != tensor->numel * 4)
        return parse_fail(source, "tensor '%s': %zu bytes for shape %s (%zu expected)", name, bytes, shape_str,
                          tensor->numel * 4);
    tensor->data = data + range->begin;
    return 0;
}

static int parse_metadata(const char *source, StFile *file, const cJSON *metadata) {
    if (file->metadata_keys) return parse_fail(source, "header has %s twice", ST_METADATA_KEY);
    if (!cJSON_IsObject(metadata)) return parse_fail(source, "%s is not an object", ST_METADATA_KEY);
    int count = cJSON_GetArraySize(metadata);
    file->metadata_keys = callocCheck((size_t)count, sizeof(char *));
    file->metadata_values = callocCheck((size_t)count, sizeof(char *));
    char key[PRINTABLE_NAME_BYTES];
    for (const cJSON *item = metadata->child; item; item = item->next) {
        // The format defines metadata as string → string; anything else is rejected, not guessed at.
        if (!cJSON_IsString(item))
            return parse_fail(source, "%s value for '%s' is not a string", ST_METADATA_KEY,
                              printable_name(key, item->string));
        file->metadata_keys[file->num_metadata] = copy_string(item->string);
        file->metadata_values[file->num_metadata] = copy_string(item->valuestring);
        file->num_metadata++;
    }
    const char *duplicate = find_duplicate_name(file->metadata_keys, file->num_metadata);
    if (duplicate)
        return parse_fail(source, "%s key '%s' appears twice", ST_METADATA_KEY, printable_name(key, duplicate));
    return 0;
}

// Non-empty tensors must tile the data section exactly: overlaps would alias two tensors, and
// holes could hide other content (the format forbids both). As every supported dtype is 4 bytes
// and tiling starts at 0, every non-empty tensor also starts 4-byte aligned.
static int check_tiling(const char *source, const StFile *file, ByteRange *ranges, size_t data_size) {
    int nonempty = 0;
    for (int i = 0; i < file->num_tensors; i++)
        if (ranges[i].end > ranges[i].begin) ranges[nonempty++] = ranges[i];
    qsort(ranges, (size_t)nonempty, sizeof(ByteRange), compare_ranges);
    size_t covered = 0;
    for (int i = 0; i < nonempty; i++) {
        if (ranges[i].begin < covered) {
            char first[PRINTABLE_NAME_BYTES], second[PRINTABLE_NAME_BYTES];
            return parse_fail(source, "tensors '%s' and '%s' overlap",
                              printable_name(first, file->tensors[ranges[i - 1].index].name),
                              printable_name(second, file->tensors[ranges[i].index].name));
        }
        if (ranges[i].begin > covered)
            return parse_fail(source, "data section bytes [%zu,%zu) belong to no tensor", covered, ranges[i].begin);
        covered = ranges[i].end;
    }
    if (covered != data_size)
        return parse_fail(source, "data section bytes [%zu,%zu) belong to no tensor (data section is %zu bytes)",
                          covered, data_size, data_size);
    return 0;
}

// Places the data section at a 64-byte boundary in memory, so tensors can be read in place as
// float or int32 arrays: the header length in the file is arbitrary and malloc promises only 16.
// The gap becomes header padding (spaces, which the format allows), so the buffer stays a valid
// safetensors file with the same tensors.
static void align_data_section(StFile *file, uint64_t *header_len) {
    size_t data_start = 8 + (size_t)*header_len;
    if ((uintptr_t)(file->buffer + data_start) % ST_DATA_ALIGNMENT == 0) return;
    char *aligned = mallocCheck(file->buffer_size + ST_DATA_ALIGNMENT);
    size_t shift = (ST_DATA_ALIGNMENT - (uintptr_t)(aligned + data_start) % ST_DATA_ALIGNMENT) % ST_DATA_ALIGNMENT;
    memcpy(aligned, file->buffer, data_start);
    memset(aligned + data_start, ' ', shift);
    memcpy(aligned + data_start + shift, file->buffer + data_start, file->buffer_size - data_start);
    *header_len += shift;
    write_u64_le((unsigned char *)aligned, *header_len);
    free(file->buffer);
    file->buffer = aligned;
    file->buffer_size += shift;
}

static int parse_header(const char *source, StFile *file, const cJSON *root, const char *data, size_t data_size) {
    if (!cJSON_IsObject(root)) return parse_fail(source, "header is not a JSON object");
    int num_entries = 0;
    for (const cJSON *item = root->child; item; item = item->next)
        if (strcmp(item->string, ST_METADATA_KEY) != 0) num_entries++;
    file->tensors = callocCheck((size_t)num_entries, sizeof(StTensor));
    ByteRange *ranges = callocCheck((size_t)num_entries, sizeof(ByteRange));
    int rc = 0;
    for (const cJSON *item = root->child; item && rc == 0; item = item->next) {
        if (strcmp(item->string, ST_METADATA_KEY) == 0) {
            rc = parse_metadata(source, file, item);
            continue;
        }
        StTensor *tensor = &file->tensors[file->num_tensors];
        tensor->name = copy_string(item->string);
        ranges[file->num_tensors].index = file->num_tensors;
        file->num_tensors++;
        rc = parse_tensor(source, tensor, item, data, data_size, &ranges[file->num_tensors - 1]);
    }
    const char *duplicate = rc == 0 ? find_duplicate_tensor_name(file->tensors, file->num_tensors) : NULL;
    char name[PRINTABLE_NAME_BYTES];
    if (duplicate) rc = parse_fail(source, "tensor '%s' appears twice in the header", printable_name(name, duplicate));
    if (rc == 0) rc = check_tiling(source, file, ranges, data_size);
    free(ranges);
    return rc;
}

static int parse_buffer(const char *source, StFile *file, char *buffer, size_t size) {
    memset(file, 0, sizeof(*file));
    file->buffer = buffer;
    file->buffer_size = size;
    if (size < 8) return parse_fail(source, "file is %zu bytes, too short for the 8-byte header length", size);
    uint64_t header_len = read_u64_le((const unsigned char *)buffer);
    if (header_len == 0) return parse_fail(source, "header length is 0");
    if (header_len > ST_MAX_HEADER_BYTES)
        return parse_fail(source, "header length %llu is absurd (limit %llu bytes)", (unsigned long long)header_len,
                          ST_MAX_HEADER_BYTES);
    if (header_len > size - 8)
        return parse_fail(source, "header length %llu exceeds file size %zu", (unsigned long long)header_len, size);

    const char *header = buffer + 8;
    const char *parse_end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(header, (size_t)header_len, &parse_end, 0);
    if (!root) {
        size_t at = parse_end ? (size_t)(parse_end - header) : 0;
        return parse_fail(source, "header is not valid JSON (error near byte %zu of %llu)", at,
                          (unsigned long long)header_len);
    }
    for (const char *p = parse_end; p < header + header_len; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            cJSON_Delete(root);
            return parse_fail(source, "header has bytes after its JSON (byte %zu of %llu)", (size_t)(p - header),
                              (unsigned long long)header_len);
        }
    }
    align_data_section(file, &header_len);
    size_t data_size = file->buffer_size - 8 - (size_t)header_len;
    int rc = parse_header(source, file, root, file->buffer + 8 + header_len, data_size);
    cJSON_Delete(root);
    return rc;
}

int st_parse(StFile *file, char *buffer, size_t size) {
    if (parse_buffer(NULL, file, buffer, size) == 0) return 0;
    st_free(file);
    return -1;
}

int st_load(StFile *file, const char *path) {
    memset(file, 0, sizeof(*file));
    size_t size;
    char *buffer = pf_read_file(path, &size);
    if (!buffer) return -1;
    if (parse_buffer(path, file, buffer, size) == 0) return 0;
    st_free(file);
    return -1;
}

void st_free(StFile *file) {
    for (int i = 0; i < file->num_tensors; i++) free(file->tensors[i].name);
    for (int i = 0; i < file->num_metadata; i++) {
        free(file->metadata_keys[i]);
        free(file->metadata_values[i]);
    }
    free(file->tensors);
    free(file->metadata_keys);
    free(file->metadata_values);
    free(file->buffer);
    memset(file, 0, sizeof(*file));
}

const StTensor *st_find(const StFile *file, const char *name) {
    for (int i = 0; i < file->num_tensors; i++)
        if (strcmp(file->tensors[i].name, name) == 0) return &file->tensors[i];
    return NULL;
}

int st_get_f32(const StFile *file, const char *name, int ndim, const int64_t *shape, const float **data) {
    const StTensor *tensor = st_find(file, name);
    if (!tensor) return pf_fail("missing tensor '%s'", name);
    if (tensor->dtype != ST_F32)
        return pf_fail("tensor '%s' has dtype %s, expected F32", name, dtype_name(tensor->dtype));
    int same = tensor->ndim == ndim;
    for (int d = 0; same && d < ndim; d++) same = tensor->shape[d] == shape[d];
    if (!same) {
        char found[SHAPE_TEXT_BYTES], expected[SHAPE_TEXT_BYTES];
        return pf_fail("tensor '%s' has shape %s, expected %s", name, shape_text(found, tensor->ndim, tensor->shape),
                       shape_text(expected, ndim, shape));
    }
    *data = tensor->data;
    return 0;
}

const char *st_metadata(const StFile *file, const char *key) {
    for (int i = 0; i < file->num_metadata; i++)
        if (strcmp(file->metadata_keys[i], key) == 0) return file->metadata_values[i];
    return NULL;
}

// ---------------------------------------------------------------------------------------------
// Writing

// Doubles the capacity of an array (elements of elem_size bytes) when it is full.
static void *grow_if_full(void *array, size_t elem_size, int count, int *capacity) {
    if (count < *capacity) return array;
    int new_capacity = *capacity ? 2 * *capacity : 16;
    void *grown = mallocCheck((size_t)new_capacity * elem_size);
    if (count) memcpy(grown, array, (size_t)count * elem_size);
    free(array);
    *capacity = new_capacity;
    return grown;
}

void st_writer_init(StWriter *writer) { memset(writer, 0, sizeof(*writer)); }

// Shapes are checked in st_writer_save, which can report an error; here they are only recorded.
void st_writer_add(StWriter *writer, const char *name, StDtype dtype, int ndim, const int64_t *shape,
                   const void *data) {
    writer->tensors = grow_if_full(writer->tensors, sizeof(StTensor), writer->num_tensors, &writer->cap_tensors);
    StTensor *tensor = &writer->tensors[writer->num_tensors++];
    memset(tensor, 0, sizeof(*tensor));
    tensor->name = copy_string(name);
    tensor->dtype = dtype;
    tensor->ndim = ndim;
    for (int d = 0; d < ndim && d < ST_MAX_DIMS; d++) tensor->shape[d] = shape[d];
    tensor->data = data;
}

// Setting a key twice keeps its first position and the latest value.
void st_writer_metadata(StWriter *writer, const char *key, const char *value) {
    for (int i = 0; i < writer->num_metadata; i++) {
        if (strcmp(writer->metadata_keys[i], key) == 0) {
            free(writer->metadata_values[i]);
            writer->metadata_values[i] = copy_string(value);
            return;
        }
    }
    int capacity = writer->cap_metadata;   // keys and values share one capacity
    writer->metadata_keys = grow_if_full(writer->metadata_keys, sizeof(char *), writer->num_metadata, &capacity);
    writer->metadata_values =
        grow_if_full(writer->metadata_values, sizeof(char *), writer->num_metadata, &writer->cap_metadata);
    writer->metadata_keys[writer->num_metadata] = copy_string(key);
    writer->metadata_values[writer->num_metadata] = copy_string(value);
    writer->num_metadata++;
}

// Checks what st_writer_add recorded, so that the file written is one st_load accepts.
static int check_writer_tensors(const StWriter *writer, size_t *numels) {
    for (int i = 0; i < writer->num_tensors; i++) {
        const StTensor *tensor = &writer->tensors[i];
        char name[PRINTABLE_NAME_BYTES], shape_str[SHAPE_TEXT_BYTES];
        printable_name(name, tensor->name);
        if (strcmp(tensor->name, ST_METADATA_KEY) == 0) return pf_fail("tensor name '%s' is reserved", name);
        if (tensor->dtype != ST_F32 && tensor->dtype != ST_I32) return pf_fail("tensor '%s': unknown dtype", name);
        if (tensor->ndim < 0 || tensor->ndim > ST_MAX_DIMS)
            return pf_fail("tensor '%s': %d dims (0 to %d supported)", name, tensor->ndim, ST_MAX_DIMS);
        if (shape_numel(tensor->ndim, tensor->shape, &numels[i]) != 0)
            return pf_fail("tensor '%s': shape %s is negative or too large", name,
                           shape_text(shape_str, tensor->ndim, tensor->shape));
        if (numels[i] && !tensor->data) return pf_fail("tensor '%s': no data", name);
    }
    const char *duplicate = find_duplicate_tensor_name(writer->tensors, writer->num_tensors);
    char name[PRINTABLE_NAME_BYTES];
    return duplicate ? pf_fail("tensor '%s' added twice", printable_name(name, duplicate)) : 0;
}

// The JSON header, keys in insertion order (metadata first), or NULL if cJSON ran out of memory.
static char *build_header_json(const StWriter *writer, const size_t *numels) {
    cJSON *root = cJSON_CreateObject();
    int ok = root != NULL;
    if (ok && writer->num_metadata) {
        cJSON *metadata = cJSON_AddObjectToObject(root, ST_METADATA_KEY);
        ok = metadata != NULL;
        for (int i = 0; ok && i < writer->num_metadata; i++)
            ok = cJSON_AddStringToObject(metadata, writer->metadata_keys[i], writer->metadata_values[i]) != NULL;
    }
    size_t offset = 0;
    for (int i = 0; ok && i < writer->num_tensors; i++) {
        const StTensor *tensor = &writer->tensors[i];
        cJSON *entry = cJSON_AddObjectToObject(root, tensor->name);
        ok = entry && cJSON_AddStringToObject(entry, "dtype", dtype_name(tensor->dtype));
        cJSON *shape = ok ? cJSON_AddArrayToObject(entry, "shape") : NULL;
        cJSON *offsets = shape ? cJSON_AddArrayToObject(entry, "data_offsets") : NULL;
        ok = offsets != NULL;
        for (int d = 0; ok && d < tensor->ndim; d++)
            ok = cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)tensor->shape[d]));
        size_t end = offset + numels[i] * 4;
        ok = ok && cJSON_AddItemToArray(offsets, cJSON_CreateNumber((double)offset)) &&
             cJSON_AddItemToArray(offsets, cJSON_CreateNumber((double)end));
        offset = end;
    }
    char *json = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    return json;
}

int st_writer_save(const StWriter *writer, const char *path) {
    size_t *numels = callocCheck((size_t)writer->num_tensors, sizeof(size_t));
    if (check_writer_tensors(writer, numels) != 0) {
        free(numels);
        return -1;
    }
    char *json = build_header_json(writer, numels);
    if (!json) {
        free(numels);
        return pf_fail("out of memory building the header of %s", path);
    }
    // Spaces after the JSON start the data section at an aligned file offset, as the format suggests.
    size_t json_len = strlen(json);
    size_t header_len = (8 + json_len + ST_FILE_ALIGNMENT - 1) / ST_FILE_ALIGNMENT * ST_FILE_ALIGNMENT - 8;
    size_t data_size = 0;
    for (int i = 0; i < writer->num_tensors; i++) data_size += numels[i] * 4;
    size_t file_size = 8 + header_len + data_size;

    unsigned char *out = mallocCheck(file_size);
    write_u64_le(out, header_len);
    memcpy(out + 8, json, json_len);
    memset(out + 8 + json_len, ' ', header_len - json_len);
    size_t at = 8 + header_len;
    for (int i = 0; i < writer->num_tensors; i++) {
        if (numels[i]) memcpy(out + at, writer->tensors[i].data, numels[i] * 4);
        at += numels[i] * 4;
    }
    int rc = pf_write_file_atomic(path, out, file_size);
    free(out);
    cJSON_free(json);
    free(numels);
    return rc;
}

void st_writer_free(StWriter *writer) {
    for (int i = 0; i < writer->num_tensors; i++) free(writer->tensors[i].name);
    for (int i = 0; i < writer->num_metadata; i++) {
        free(writer->metadata_keys[i]);
        free(writer->metadata_values[i]);
    }
    free(writer->tensors);
    free(writer->metadata_keys);
    free(writer->metadata_values);
    memset(writer, 0, sizeof(*writer));
}
