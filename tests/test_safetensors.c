// safetensors: round trips through the writer and reader, the authors' checkpoint, and a catalogue
// of broken files that must each fail with a one-line message (plus random header corruption that
// must never crash).
#include "testutil.h"

#include "common.h"
#include "safetensors.h"

#include <math.h>
#include <unistd.h>

// ---------------------------------------------------------------------------------------------
// Helpers

// The last error must exist, fit on one line and mention `expected`.
static void assert_one_line_error(const char *expected) {
    const char *message = pf_last_error();
    assert_true(message[0] != '\0');
    if (strchr(message, '\n')) fail_msg("error message spans lines: %s", message);
    if (expected && !strstr(message, expected)) fail_msg("error '%s' does not mention '%s'", message, expected);
}

// A file image: 8-byte length, the header exactly as given, then data_size bytes of data.
static char *build_file(const char *header, size_t data_size, size_t *size_out) {
    size_t header_len = strlen(header);
    size_t size = 8 + header_len + data_size;
    char *buffer = mallocCheck(size);
    for (int i = 0; i < 8; i++) buffer[i] = (char)((uint64_t)header_len >> (8 * i));
    memcpy(buffer + 8, header, header_len);
    for (size_t i = 0; i < data_size; i++) buffer[8 + header_len + i] = (char)i;
    *size_out = size;
    return buffer;
}

static void expect_parse_error_bytes(char *buffer, size_t size, const char *expected) {
    pf_fail("%s", "");
    StFile file;
    assert_int_equal(st_parse(&file, buffer, size), -1);
    assert_one_line_error(expected);
    assert_null(file.buffer);   // freed with everything else
    assert_int_equal(file.num_tensors, 0);
}

static void expect_parse_error(const char *header, size_t data_size, const char *expected) {
    size_t size;
    char *buffer = build_file(header, data_size, &size);
    expect_parse_error_bytes(buffer, size, expected);
}

static void write_bytes(const char *path, const void *data, size_t size) {
    assert_int_equal(pf_write_file_atomic(path, data, size), 0);
}

static char *read_bytes(const char *path, size_t *size) {
    char *data = pf_read_file(path, size);
    if (!data) fail_msg("%s", pf_last_error());
    return data;
}

// A small valid file with metadata, F32 and I32 tensors, written by the writer into `path`.
static const float sample_weight[6] = {1.5f, -2.0f, 3.25f, 0.0f, -0.125f, 1e-7f};
static const float sample_bias[3] = {0.5f, 0.25f, -1.0f};
static const int32_t sample_tokens[4] = {7, -3, 2147483647, 0};
static const float sample_scalar = 42.0f;

static void write_sample_file(const char *path) {
    StWriter writer;
    st_writer_init(&writer);
    st_writer_metadata(&writer, "d_model", "64");
    st_writer_metadata(&writer, "format", "pt");
    st_writer_add(&writer, "layer.weight", ST_F32, 2, (int64_t[]){2, 3}, sample_weight);
    st_writer_add(&writer, "layer.bias", ST_F32, 1, (int64_t[]){3}, sample_bias);
    st_writer_add(&writer, "tokens", ST_I32, 1, (int64_t[]){4}, sample_tokens);
    st_writer_add(&writer, "scale", ST_F32, 0, NULL, &sample_scalar);
    st_writer_add(&writer, "empty", ST_F32, 2, (int64_t[]){0, 5}, NULL);
    if (st_writer_save(&writer, path) != 0) fail_msg("%s", pf_last_error());
    st_writer_free(&writer);
}

// ---------------------------------------------------------------------------------------------
// Valid files

static void test_round_trip(void **state) {
    (void)state;
    char dir[256], path[300];
    test_scratch_dir(dir, sizeof(dir), "st-roundtrip");
    snprintf(path, sizeof(path), "%s/sample.safetensors", dir);
    write_sample_file(path);

    // The data section starts 8-byte aligned in the file, and the header is padded with spaces.
    size_t raw_size;
    unsigned char *raw = (unsigned char *)read_bytes(path, &raw_size);
    uint64_t header_len = 0;
    for (int i = 0; i < 8; i++) header_len |= (uint64_t)raw[i] << (8 * i);
    assert_int_equal((8 + header_len) % 8, 0);
    assert_int_equal(raw_size, 8 + header_len + (6 + 3 + 4 + 1) * 4);
    free(raw);

    StFile file;
    if (st_load(&file, path) != 0) fail_msg("%s", pf_last_error());
    assert_int_equal(file.num_tensors, 5);
    const char *names_in_order[5] = {"layer.weight", "layer.bias", "tokens", "scale", "empty"};
    for (int i = 0; i < 5; i++) {
        assert_string_equal(file.tensors[i].name, names_in_order[i]);
        assert_int_equal((uintptr_t)file.tensors[i].data % 4, 0);
    }
    assert_int_equal((uintptr_t)file.tensors[0].data % 64, 0);

    const float *data;
    assert_int_equal(st_get_f32(&file, "layer.weight", 2, (int64_t[]){2, 3}, &data), 0);
    assert_memory_equal(data, sample_weight, sizeof(sample_weight));
    assert_int_equal(st_get_f32(&file, "layer.bias", 1, (int64_t[]){3}, &data), 0);
    assert_memory_equal(data, sample_bias, sizeof(sample_bias));
    assert_int_equal(st_get_f32(&file, "scale", 0, NULL, &data), 0);
    assert_true(data[0] == sample_scalar);
    assert_int_equal(st_get_f32(&file, "empty", 2, (int64_t[]){0, 5}, &data), 0);

    const StTensor *tokens = st_find(&file, "tokens");
    assert_non_null(tokens);
    assert_int_equal(tokens->dtype, ST_I32);
    assert_int_equal(tokens->ndim, 1);
    assert_int_equal(tokens->shape[0], 4);
    assert_int_equal(tokens->numel, 4);
    assert_memory_equal(tokens->data, sample_tokens, sizeof(sample_tokens));
    assert_null(st_find(&file, "missing"));

    assert_int_equal(file.num_metadata, 2);
    assert_string_equal(file.metadata_keys[0], "d_model");
    assert_string_equal(st_metadata(&file, "d_model"), "64");
    assert_string_equal(st_metadata(&file, "format"), "pt");
    assert_null(st_metadata(&file, "missing"));
    st_free(&file);
    st_free(&file);   // freeing twice is harmless: st_free leaves the StFile empty

    unlink(path);
    rmdir(dir);
}

// Whatever the header length (so wherever the data section falls relative to malloc), tensors
// come back 64-byte aligned with the right values.
static void test_alignment_for_any_header_length(void **state) {
    (void)state;
    const char *json = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                       "\"b\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[8,12]}}";
    const float a_values[2] = {3.0f, -4.5f};
    const int32_t b_value = -17;
    for (int padding = 0; padding < 70; padding++) {
        char header[256];
        snprintf(header, sizeof(header), "%s%*s", json, padding, "");
        size_t size;
        char *buffer = build_file(header, 12, &size);
        size_t data_start = size - 12;
        memcpy(buffer + data_start, a_values, sizeof(a_values));
        memcpy(buffer + data_start + 8, &b_value, sizeof(b_value));
        StFile file;
        if (st_parse(&file, buffer, size) != 0) fail_msg("padding %d: %s", padding, pf_last_error());
        const StTensor *a = st_find(&file, "a");
        const StTensor *b = st_find(&file, "b");
        assert_int_equal((uintptr_t)a->data % 64, 0);
        assert_int_equal((uintptr_t)b->data % 4, 0);
        assert_memory_equal(a->data, a_values, sizeof(a_values));
        assert_memory_equal(b->data, &b_value, sizeof(b_value));
        // The realigned buffer is still a valid file with the same tensors.
        char *copy = mallocCheck(file.buffer_size);
        memcpy(copy, file.buffer, file.buffer_size);
        StFile reparsed;
        if (st_parse(&reparsed, copy, file.buffer_size) != 0) fail_msg("reparse: %s", pf_last_error());
        assert_memory_equal(st_find(&reparsed, "a")->data, a_values, sizeof(a_values));
        st_free(&reparsed);
        st_free(&file);
    }
}

static void test_writer_checks(void **state) {
    (void)state;
    char dir[256], path[300];
    test_scratch_dir(dir, sizeof(dir), "st-writer");
    snprintf(path, sizeof(path), "%s/bad.safetensors", dir);
    const float values[4] = {0};
    struct {
        const char *name;
        int ndim;
        int64_t shape[ST_MAX_DIMS + 1];
        const void *data;
        const char *expected;
    } cases[] = {
        {"neg", 2, {2, -2}, values, "negative or too large"},
        {"deep", ST_MAX_DIMS + 1, {1, 1, 1, 1, 1, 1, 1, 1, 1}, values, "dims"},
        {"__metadata__", 1, {1}, values, "reserved"},
        {"nodata", 1, {4}, NULL, "no data"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        StWriter writer;
        st_writer_init(&writer);
        st_writer_add(&writer, "fine", ST_F32, 1, (int64_t[]){4}, values);
        st_writer_add(&writer, cases[i].name, ST_F32, cases[i].ndim, cases[i].shape, cases[i].data);
        pf_fail("%s", "");
        assert_int_equal(st_writer_save(&writer, path), -1);
        assert_one_line_error(cases[i].expected);
        st_writer_free(&writer);
    }

    StWriter writer;
    st_writer_init(&writer);
    st_writer_add(&writer, "twice", ST_F32, 1, (int64_t[]){4}, values);
    st_writer_add(&writer, "twice", ST_F32, 1, (int64_t[]){4}, values);
    assert_int_equal(st_writer_save(&writer, path), -1);
    assert_one_line_error("'twice' added twice");
    st_writer_free(&writer);
    assert_int_equal(access(path, F_OK), -1);   // nothing written by the failed saves

    // Setting a metadata key again replaces its value; an empty writer still makes a valid file.
    st_writer_init(&writer);
    st_writer_metadata(&writer, "k", "first");
    st_writer_metadata(&writer, "k", "second");
    assert_int_equal(st_writer_save(&writer, path), 0);
    st_writer_free(&writer);
    StFile file;
    if (st_load(&file, path) != 0) fail_msg("%s", pf_last_error());
    assert_int_equal(file.num_tensors, 0);
    assert_int_equal(file.num_metadata, 1);
    assert_string_equal(st_metadata(&file, "k"), "second");
    st_free(&file);
    unlink(path);
    rmdir(dir);
}

// The authors' pretrained checkpoint (PyTorch state_dict names, all F32).
// A writer killed before its rename leaves `path.tmp.PID`; the next write of that path removes the
// temporaries of processes that are gone and leaves those of live ones (they may still be writing).
static void test_stale_temporaries_removed(void **state) {
    (void)state;
    char dir[256], path[300], dead[340], alive[340], other[340];
    test_scratch_dir(dir, sizeof(dir), "st-stale");
    snprintf(path, sizeof(path), "%s/state.json", dir);
    snprintf(dead, sizeof(dead), "%s.tmp.%ld", path, 4194305L);  // above Linux's largest pid
    snprintf(alive, sizeof(alive), "%s.tmp.%ld", path, (long)getppid());
    snprintf(other, sizeof(other), "%s/metrics.json.tmp.%ld", dir, 4194305L);
    write_bytes(dead, "half", 4);
    write_bytes(alive, "busy", 4);
    write_bytes(other, "else", 4);
    write_bytes(path, "{}", 2);
    assert_false(pf_file_exists(dead));
    assert_true(pf_file_exists(alive));
    assert_true(pf_file_exists(other));  // another file's temporaries wait for their own write
    size_t size;
    char *data = read_bytes(path, &size);
    assert_int_equal(size, 2);
    free(data);
    unlink(alive);
    unlink(other);
    unlink(path);
    rmdir(dir);
}

static void test_authors_checkpoint(void **state) {
    (void)state;
    const char *reference_dir = getenv("PF_REFERENCE_DIR");
    char path[1024];
    snprintf(path, sizeof(path), "%s/authors_pretrained.safetensors",
             reference_dir && reference_dir[0] ? reference_dir : "../shared/reference");
    if (access(path, R_OK) != 0) {
        printf("skipping: %s not found (set PF_REFERENCE_DIR)\n", path);
        skip();
    }
    StFile file;
    if (st_load(&file, path) != 0) fail_msg("%s", pf_last_error());

    size_t total = 0;
    for (int i = 0; i < file.num_tensors; i++) {
        const StTensor *tensor = &file.tensors[i];
        assert_int_equal(tensor->dtype, ST_F32);
        const float *values = tensor->data;
        for (size_t j = 0; j < tensor->numel; j++)
            if (!isfinite(values[j])) fail_msg("tensor '%s' has a non-finite value at %zu", tensor->name, j);
        total += tensor->numel;
    }
    assert_int_equal(file.num_tensors, 3 + 11 * 12);
    assert_int_equal(total, 550433);

    const float *data;
    struct {
        const char *name;
        int ndim;
        int64_t shape[2];
    } top[] = {{"embedding.weight", 2, {17, 32}}, {"fc_out.weight", 2, {1, 64}}, {"fc_out.bias", 1, {1}}},
      per_layer[] = {
          {"self_attn.in_proj_weight", 2, {192, 64}}, {"self_attn.in_proj_bias", 1, {192}},
          {"self_attn.out_proj.weight", 2, {64, 64}}, {"self_attn.out_proj.bias", 1, {64}},
          {"linear1.weight", 2, {256, 64}},           {"linear1.bias", 1, {256}},
          {"linear2.weight", 2, {64, 256}},           {"linear2.bias", 1, {64}},
          {"norm1.weight", 1, {64}},                  {"norm1.bias", 1, {64}},
          {"norm2.weight", 1, {64}},                  {"norm2.bias", 1, {64}},
      };
    for (size_t i = 0; i < sizeof(top) / sizeof(top[0]); i++)
        if (st_get_f32(&file, top[i].name, top[i].ndim, top[i].shape, &data) != 0) fail_msg("%s", pf_last_error());
    for (int layer = 0; layer < 11; layer++) {
        for (size_t i = 0; i < sizeof(per_layer) / sizeof(per_layer[0]); i++) {
            char name[128];
            snprintf(name, sizeof(name), "transformer_encoder.layers.%d.%s", layer, per_layer[i].name);
            if (st_get_f32(&file, name, per_layer[i].ndim, per_layer[i].shape, &data) != 0)
                fail_msg("%s", pf_last_error());
        }
    }
    printf("%s: %d tensors, %zu floats, %d metadata entries\n", path, file.num_tensors, total, file.num_metadata);
    for (int i = 0; i < file.num_metadata; i++)
        printf("  metadata %s = %s\n", file.metadata_keys[i], file.metadata_values[i]);
    st_free(&file);
}

// ---------------------------------------------------------------------------------------------
// Broken files

static void test_truncated_files(void **state) {
    (void)state;
    char dir[256], path[300], cut_path[300];
    test_scratch_dir(dir, sizeof(dir), "st-truncated");
    snprintf(path, sizeof(path), "%s/sample.safetensors", dir);
    snprintf(cut_path, sizeof(cut_path), "%s/cut.safetensors", dir);
    write_sample_file(path);
    size_t size;
    char *bytes = read_bytes(path, &size);
    struct {
        size_t keep;
        const char *expected;
    } cases[] = {
        {0, "too short"},
        {4, "too short"},
        {8, "exceeds file size"},
        {size - 5, "out of range"},
        {size - 4, "out of range"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        write_bytes(cut_path, bytes, cases[i].keep);
        pf_fail("%s", "");
        StFile file;
        assert_int_equal(st_load(&file, cut_path), -1);
        assert_one_line_error(cases[i].expected);
        assert_non_null(strstr(pf_last_error(), cut_path));   // names the file
        assert_null(file.buffer);
    }
    // Extra bytes after the last tensor are rejected too (the format forbids holes).
    char *longer = mallocCheck(size + 4);
    memcpy(longer, bytes, size);
    memset(longer + size, 0, 4);
    write_bytes(cut_path, longer, size + 4);
    StFile file;
    assert_int_equal(st_load(&file, cut_path), -1);
    assert_one_line_error("belong to no tensor");
    free(longer);
    free(bytes);

    assert_int_equal(st_load(&file, "/nonexistent/x.safetensors"), -1);
    assert_one_line_error("/nonexistent/x.safetensors");
    unlink(path);
    unlink(cut_path);
    rmdir(dir);
}

static void test_bad_header_length(void **state) {
    (void)state;
    size_t size;
    char *buffer = build_file("{}", 0, &size);
    buffer[0] = 100;   // claims 100 header bytes, file has 2
    expect_parse_error_bytes(buffer, size, "header length 100 exceeds file size 10");

    buffer = build_file("{}", 0, &size);
    memset(buffer, 0xFF, 8);
    expect_parse_error_bytes(buffer, size, "absurd");

    buffer = build_file("{}", 0, &size);
    buffer[0] = 0;
    buffer[1] = 0;
    buffer[2] = 0;
    buffer[3] = 0x10;   // 256 MiB
    expect_parse_error_bytes(buffer, size, "absurd");

    buffer = build_file("{}", 0, &size);
    buffer[0] = 0;
    expect_parse_error_bytes(buffer, size, "header length is 0");
}

static void test_bad_json(void **state) {
    (void)state;
    expect_parse_error("{\"a\": {\"dtype\": \"F32\",", 0, "not valid JSON");
    expect_parse_error("hello", 0, "not valid JSON");
    expect_parse_error("[1,2,3]", 0, "not a JSON object");
    expect_parse_error("\"text\"", 0, "not a JSON object");
    expect_parse_error("{} x", 0, "bytes after its JSON");
    expect_parse_error("{}{}", 0, "bytes after its JSON");
    // A NUL inside the header must not end it early.
    size_t size;
    char *buffer = build_file("{}  ", 0, &size);
    buffer[8 + 2] = '\0';
    expect_parse_error_bytes(buffer, size, "bytes after its JSON");
    // Deep nesting is refused by cJSON's limit rather than recursing without bound.
    char deep[5001];
    memset(deep, '[', 5000);
    deep[5000] = '\0';
    expect_parse_error(deep, 0, "not valid JSON");
}

static void test_bad_entries(void **state) {
    (void)state;
    struct {
        const char *header;
        size_t data_size;
        const char *expected;
    } cases[] = {
        {"{\"x\":[1]}", 4, "tensor 'x': header entry is not an object"},
        {"{\"x\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "tensor 'x': missing dtype"},
        {"{\"x\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "tensor 'x': missing shape"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "tensor 'x': missing data_offsets"},
        {"{\"x\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "dtype is not a string"},
        {"{\"x\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8,
         "tensor 'x': dtype F64 not supported (F32 or I32 expected)"},
        {"{\"x\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4,
         "tensor 'x': dtype BF16 not supported (F32 or I32 expected)"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":1,\"data_offsets\":[0,4]}}", 4, "shape is not an array"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[2,-3],\"data_offsets\":[0,4]}}", 4,
         "tensor 'x': shape dim 1 is -3 (non-negative integer expected)"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4, "shape dim 0 is 1.5"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}", 8, "shape dim 0 is not a number"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
         "shape has 9 dims (at most 8 supported)"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,4]}}", 4, "too large"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, "two non-negative integers"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4, "two non-negative integers"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4.5]}}", 4, "two non-negative integers"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,1e300]}}", 4, "two non-negative integers"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 4,
         "tensor 'x': data_offsets [4,8] out of range (data section is 4 bytes)"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 8, "data_offsets [8,4] reversed"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,12]}}", 12,
         "tensor 'x': 12 bytes for shape [2,3] (24 expected)"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
         12, "tensors 'a' and 'b' overlap"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[6,10]}}",
         10, "data section bytes [4,6) belong to no tensor"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
         "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
         8, "tensor 'a' appears twice"},
        {"{\"__metadata__\":{\"k\":1},\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
         "__metadata__ value for 'k' is not a string"},
        {"{\"__metadata__\":[],\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
         "__metadata__ is not an object"},
        {"{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 0, "__metadata__ key 'k' appears twice"},
        {"{\"__metadata__\":{},\"__metadata__\":{}}", 0, "__metadata__ twice"},
        // Names with control characters are shown with '?' so the message stays on one line.
        {"{\"bad\\nname\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8, "tensor 'bad?name'"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        expect_parse_error(cases[i].header, cases[i].data_size, cases[i].expected);
    }

    // Empty tensors take no bytes, so they may sit anywhere in range without overlapping.
    size_t size;
    char *buffer = build_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                              "\"e\":{\"dtype\":\"I32\",\"shape\":[0,3],\"data_offsets\":[4,4]}}",
                              8, &size);
    StFile file;
    if (st_parse(&file, buffer, size) != 0) fail_msg("%s", pf_last_error());
    assert_int_equal(st_find(&file, "e")->numel, 0);
    st_free(&file);
}

static void test_get_f32_errors(void **state) {
    (void)state;
    size_t size;
    char *buffer = build_file("{\"fc_out.weight\":{\"dtype\":\"F32\",\"shape\":[1,32],\"data_offsets\":[0,128]},"
                              "\"tokens\":{\"dtype\":\"I32\",\"shape\":[4],\"data_offsets\":[128,144]}}",
                              144, &size);
    StFile file;
    if (st_parse(&file, buffer, size) != 0) fail_msg("%s", pf_last_error());
    const float *data = NULL;
    assert_int_equal(st_get_f32(&file, "fc_out.weight", 2, (int64_t[]){1, 64}, &data), -1);
    assert_one_line_error("tensor 'fc_out.weight' has shape [1,32], expected [1,64]");
    assert_int_equal(st_get_f32(&file, "fc_out.weight", 1, (int64_t[]){32}, &data), -1);
    assert_one_line_error("has shape [1,32], expected [32]");
    assert_int_equal(st_get_f32(&file, "fc_out.bias", 1, (int64_t[]){1}, &data), -1);
    assert_one_line_error("missing tensor 'fc_out.bias'");
    assert_int_equal(st_get_f32(&file, "tokens", 1, (int64_t[]){4}, &data), -1);
    assert_one_line_error("tensor 'tokens' has dtype I32, expected F32");
    assert_null(data);
    st_free(&file);
}

// Random byte changes in the header of a valid file: every result is either a clean load whose
// tensors lie inside the buffer, or a clean one-line error. The sanitizer build catches the rest.
static void test_header_fuzz(void **state) {
    (void)state;
    char dir[256], path[300];
    test_scratch_dir(dir, sizeof(dir), "st-fuzz");
    snprintf(path, sizeof(path), "%s/sample.safetensors", dir);
    write_sample_file(path);
    size_t size;
    char *original = read_bytes(path, &size);
    size_t header_end = 8;
    for (int i = 0; i < 8; i++) header_end += (size_t)(unsigned char)original[i] << (8 * i);

    const char interesting[] = "{}[]\":,-0123456789eE. \\";
    uint64_t rng = 0x9E3779B97F4A7C15ull;
    int loaded = 0, rejected = 0;
    for (int trial = 0; trial < 600; trial++) {
        char *mutated = mallocCheck(size);
        memcpy(mutated, original, size);
        int num_changes = 1 + trial % 4;
        for (int c = 0; c < num_changes; c++) {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            size_t at = (size_t)(rng % header_end);
            // Half random bit flips, half JSON punctuation that reshapes the structure.
            if ((rng >> 32) & 1)
                mutated[at] ^= (char)(1u << ((rng >> 40) % 8));
            else
                mutated[at] = interesting[(rng >> 40) % (sizeof(interesting) - 1)];
        }
        pf_fail("%s", "");
        StFile file;
        if (st_parse(&file, mutated, size) == 0) {
            for (int i = 0; i < file.num_tensors; i++) {
                const char *begin = file.tensors[i].data;
                assert_true(begin >= file.buffer);
                assert_true(begin + file.tensors[i].numel * 4 <= file.buffer + file.buffer_size);
            }
            st_free(&file);
            loaded++;
        } else {
            assert_one_line_error(NULL);
            rejected++;
        }
    }
    printf("header fuzz: %d loaded, %d rejected cleanly\n", loaded, rejected);
    assert_true(rejected > 0);
    free(original);
    unlink(path);
    rmdir(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_alignment_for_any_header_length),
        cmocka_unit_test(test_writer_checks),
        cmocka_unit_test(test_stale_temporaries_removed),
        cmocka_unit_test(test_authors_checkpoint),
        cmocka_unit_test(test_truncated_files),
        cmocka_unit_test(test_bad_header_length),
        cmocka_unit_test(test_bad_json),
        cmocka_unit_test(test_bad_entries),
        cmocka_unit_test(test_get_f32_errors),
        cmocka_unit_test(test_header_fuzz),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
