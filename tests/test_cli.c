// The command line end to end: runs the real binary (PF_BIN, default ./pathformer) with exact
// arguments (posix_spawn, no shell) and checks exit status, stdout and stderr. Bad input must give
// a non-zero exit and one line on stderr naming the problem; good input must give the promised files
// and outputs (gen, predict, train, resume bit-identity, Ctrl-C, unwritable outputs).
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "safetensors.h"

// ---------------------------------------------------------------------------------------------
// Running the binary (test_run and friends from testutil.h)

// Scratch root for every test's files; the fixture model is trained once into it.
static char scratch_root[512];
static char fixture_dir[600];
static char fixture_model[700];

#define RUN TEST_RUN

static void expect_success(const TestResult *result) {
    if (result->status != 0) fail_msg("exit status %d; stderr:\n%s", result->status, result->err);
}

// A failure: non-zero exit, and stderr exactly one line "pathformer: ..." that mentions `keyword`.
static void expect_one_line_error(const TestResult *result, const char *keyword) {
    const char *err = result->err;  // test_finish has already failed the test on a sanitizer report
    if (result->status == 0) fail_msg("exit status 0 on bad input; stderr: %s", err);
    size_t len = strlen(err);
    if (strncmp(err, "pathformer: ", 12) != 0 || len == 0 || err[len - 1] != '\n' || strchr(err, '\n') != err + len - 1)
        fail_msg("stderr is not one line starting 'pathformer: ':\n%s", err);
    if (!strstr(err, keyword)) fail_msg("error does not mention '%s': %s", keyword, err);
}

// RUN_ERROR(stdin_text, keyword, args...) runs and expects a one-line error mentioning keyword.
#define RUN_ERROR(stdin_text, keyword, ...)                                                                            \
    do {                                                                                                               \
        TestResult result_ = RUN(stdin_text, __VA_ARGS__);                                                             \
        expect_one_line_error(&result_, keyword);                                                                      \
        test_result_free(&result_);                                                                                    \
    } while (0)

// ---------------------------------------------------------------------------------------------
// Files and folders

// strndup with the allocation checked.
static char *copy_text(const char *text, size_t len) {
    char *copy = mallocCheck(len + 1);
    memcpy(copy, text, len);
    copy[len] = '\0';
    return copy;
}

static void path_in(char *out, size_t size, const char *dir, const char *name) {
    snprintf(out, size, "%s/%s", dir, name);
}

// A fresh folder `name` under the scratch root.
static void make_dir(char *out, size_t size, const char *name) {
    path_in(out, size, scratch_root, name);
    if (mkdir(out, 0755) != 0) fail_msg("cannot create %s: %s", out, strerror(errno));
}

static void write_text(const char *path, const void *data, size_t size) {
    if (pf_write_file_atomic(path, data, size) != 0) fail_msg("%s", pf_last_error());
}

static int count_lines(const char *text) {
    int lines = 0;
    for (const char *p = text; (p = strchr(p, '\n')); p++) lines++;
    return lines;
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw) {
    (void)st, (void)type, (void)ftw;
    return remove(path);
}

static void remove_tree(const char *path) { nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS); }

// Every file of a run folder with its bytes, to show that a refused command changed nothing.
enum { MAX_SNAPSHOT_FILES = 40 };
typedef struct {
    int count;
    char *names[MAX_SNAPSHOT_FILES];
    char *data[MAX_SNAPSHOT_FILES];
    size_t sizes[MAX_SNAPSHOT_FILES];
} Snapshot;

static int compare_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void snapshot_take(Snapshot *snap, const char *dir) {
    memset(snap, 0, sizeof(*snap));
    DIR *d = opendir(dir);
    if (!d) fail_msg("cannot open %s: %s", dir, strerror(errno));
    for (struct dirent *entry; (entry = readdir(d));) {
        if (entry->d_name[0] == '.') continue;
        if (snap->count == MAX_SNAPSHOT_FILES) fail_msg("%s holds too many files", dir);
        snap->names[snap->count++] = copy_text(entry->d_name, strlen(entry->d_name));
    }
    closedir(d);
    qsort(snap->names, (size_t)snap->count, sizeof(char *), compare_names);
    for (int i = 0; i < snap->count; i++) {
        char path[1024];
        path_in(path, sizeof(path), dir, snap->names[i]);
        snap->data[i] = pf_read_file(path, &snap->sizes[i]);
        if (!snap->data[i]) fail_msg("%s", pf_last_error());
    }
}

static void snapshot_free(Snapshot *snap) {
    for (int i = 0; i < snap->count; i++) {
        free(snap->names[i]);
        free(snap->data[i]);
    }
}

// The folder must hold exactly the files of `before`, byte for byte.
static void expect_unchanged(const Snapshot *before, const char *dir) {
    Snapshot after;
    snapshot_take(&after, dir);
    if (after.count != before->count) fail_msg("%s had %d files, now %d", dir, before->count, after.count);
    for (int i = 0; i < after.count; i++) {
        if (strcmp(after.names[i], before->names[i]) != 0)
            fail_msg("%s: file %s became %s", dir, before->names[i], after.names[i]);
        if (after.sizes[i] != before->sizes[i] || memcmp(after.data[i], before->data[i], after.sizes[i]) != 0)
            fail_msg("%s/%s changed", dir, after.names[i]);
    }
    snapshot_free(&after);
}

static void expect_same_file(const char *path_a, const char *path_b) {
    size_t size_a, size_b;
    char *a = pf_read_file(path_a, &size_a), *b = pf_read_file(path_b, &size_b);
    if (!a || !b) fail_msg("%s", pf_last_error());
    if (size_a != size_b || memcmp(a, b, size_a) != 0) fail_msg("%s and %s differ", path_a, path_b);
    free(a);
    free(b);
}

// A copy of the checkpoint `from` without tensor `drop`, and with tensor `halve`'s first dimension
// halved (a well-formed file the model must refuse).
static void write_modified_checkpoint(const char *from, const char *to, const char *drop, const char *halve) {
    StFile file;
    if (st_load(&file, from) != 0) fail_msg("%s", pf_last_error());
    StWriter writer;
    st_writer_init(&writer);
    for (int i = 0; i < file.num_metadata; i++)
        st_writer_metadata(&writer, file.metadata_keys[i], file.metadata_values[i]);
    int found = 0;
    for (int i = 0; i < file.num_tensors; i++) {
        const StTensor *tensor = &file.tensors[i];
        int64_t shape[ST_MAX_DIMS];
        memcpy(shape, tensor->shape, sizeof(shape));
        if (drop && strcmp(tensor->name, drop) == 0) {
            found = 1;
            continue;
        }
        if (halve && strcmp(tensor->name, halve) == 0) {
            found = 1;
            shape[0] /= 2;
        }
        st_writer_add(&writer, tensor->name, tensor->dtype, tensor->ndim, shape, tensor->data);
    }
    if (!found) fail_msg("%s has no tensor %s", from, drop ? drop : halve);
    if (st_writer_save(&writer, to) != 0) fail_msg("%s", pf_last_error());
    st_writer_free(&writer);
    st_free(&file);
}

// A safetensors image: 8-byte little-endian length `claimed_length`, the header, then data_size zeros.
static void write_raw_checkpoint(const char *path, uint64_t claimed_length, const char *header, size_t data_size) {
    size_t header_len = strlen(header), size = 8 + header_len + data_size;
    char *bytes = callocCheck(size, 1);
    for (int i = 0; i < 8; i++) bytes[i] = (char)(claimed_length >> (8 * i));
    memcpy(bytes + 8, header, header_len);
    write_text(path, bytes, size);
    free(bytes);
}

// ---------------------------------------------------------------------------------------------
// JSON Lines and CSV

// Parses every line of `text` as JSON into items (at most capacity); returns the count.
static int parse_lines(const char *text, cJSON **items, int capacity) {
    int count = 0;
    for (const char *p = text; *p;) {
        const char *end = strchr(p, '\n');
        if (!end) fail_msg("last line has no newline: %s", p);
        if (count == capacity) fail_msg("more than %d lines", capacity);
        char *line = copy_text(p, (size_t)(end - p));
        items[count] = cJSON_Parse(line);
        if (!items[count]) fail_msg("line %d is not JSON: %s", count + 1, line);
        free(line);
        count++;
        p = end + 1;
    }
    return count;
}

static void free_items(cJSON **items, int count) {
    for (int i = 0; i < count; i++) cJSON_Delete(items[i]);
}

static int int_field(const cJSON *item, const char *key) {
    const cJSON *field = cJSON_GetObjectItemCaseSensitive(item, key);
    if (!cJSON_IsNumber(field)) fail_msg("\"%s\" is missing or not a number", key);
    return field->valueint;
}

// The CSV without its timing columns (examples_per_s and elapsed_s, the last two of each row).
static char *csv_without_timing(const char *csv) {
    char *copy = copy_text(csv, strlen(csv)), *out = callocCheck(strlen(csv) + 1, 1);
    char *save = NULL;
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        for (int i = 0; i < 2; i++) {
            char *comma = strrchr(line, ',');
            if (!comma) fail_msg("CSV row without timing columns: %s", line);
            *comma = '\0';
        }
        strcat(out, line);
        strcat(out, "\n");
    }
    free(copy);
    return out;
}

// Data rows must be numbered 0, 1, 2, ... with no gap or repeat; returns how many there are.
static int csv_data_rows(const char *path) {
    size_t size;
    char *csv = pf_read_file(path, &size);
    if (!csv) return 0;
    int lines = count_lines(csv);
    free(csv);
    return lines > 0 ? lines - 1 : 0;
}

static int expect_consecutive_steps(const char *csv) {
    const char *row = strchr(csv, '\n');
    if (strncmp(csv, "step,", 5) != 0 || !row) fail_msg("train.csv has no header: %.80s", csv);
    int rows = 0;
    for (row++; *row; rows++) {
        char *end;
        long step = strtol(row, &end, 10);
        if (end == row || *end != ',' || step != rows) fail_msg("train.csv row %d is step %.20s", rows, row);
        const char *next = strchr(row, '\n');
        if (!next) fail_msg("train.csv ends in a partial row");
        row = next + 1;
    }
    return rows;
}

// ---------------------------------------------------------------------------------------------
// Fixture: one tiny model, trained once through the CLI

static int group_setup(void **state) {
    (void)state;
    test_scratch_dir(scratch_root, sizeof(scratch_root), "cli");
    path_in(fixture_dir, sizeof(fixture_dir), scratch_root, "fixture");
    path_in(fixture_model, sizeof(fixture_model), fixture_dir, "model.safetensors");
    TestResult result = RUN(NULL, "train", "--preset", "tiny", "--out", fixture_dir);
    expect_success(&result);
    test_result_free(&result);
    return 0;
}

static int group_teardown(void **state) {
    (void)state;
    remove_tree(scratch_root);
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Bad input

// PyTorch checkpoints come in: a .pth state_dict (torch.compile's "_orig_mod." names, or nested
// under "model_state_dict") converts to the very same tensors under plain names; a safetensors file
// with the compiled names loads directly; a pickled module is refused in one line.
static void test_import_pth(void **state) {
    (void)state;
    char dir[600], command[1400], path[700], out[700];
    make_dir(dir, sizeof(dir), "import");
    const char *python = getenv("PF_PYTHON");
    snprintf(command, sizeof(command), "cd tests && %s torch_pth.py %s", python && python[0] ? python : "/usr/bin/python3",
             dir);
    if (system(command) != 0) fail_msg("tests/torch_pth.py failed: %s", command);
    path_in(path, sizeof(path), dir, "plain.safetensors");
    StFile want;
    if (st_load(&want, path) != 0) fail_msg("%s", pf_last_error());
    const char *sources[] = {"compiled.pth", "wrapped.pth"};
    for (int k = 0; k < 2; k++) {
        path_in(path, sizeof(path), dir, sources[k]);
        snprintf(out, sizeof(out), "%s/imported-%d.safetensors", dir, k);
        TestResult result = RUN(NULL, "import", path, out);
        expect_success(&result);
        test_result_free(&result);
        StFile got;
        if (st_load(&got, out) != 0) fail_msg("%s", pf_last_error());
        assert_int_equal(got.num_tensors, want.num_tensors);
        for (int i = 0; i < want.num_tensors; i++) {
            const StTensor *t = st_find(&got, want.tensors[i].name);
            if (!t) fail_msg("%s lacks %s", out, want.tensors[i].name);
            assert_int_equal(t->numel, want.tensors[i].numel);
            assert_memory_equal(t->data, want.tensors[i].data, t->numel * sizeof(float));
        }
        st_free(&got);
    }
    st_free(&want);
    // the compiled names load as they are, and predict what the converted file predicts
    path_in(path, sizeof(path), dir, "compiled.safetensors");
    TestResult direct = RUN(NULL, "eval", "--checkpoint", path, "--set", "tune", "-n", "40", "--json", "/dev/null");
    expect_success(&direct);
    snprintf(out, sizeof(out), "%s/imported-0.safetensors", dir);
    TestResult converted = RUN(NULL, "eval", "--checkpoint", out, "--set", "tune", "-n", "40", "--json", "/dev/null");
    expect_success(&converted);
    // the same first line: examples, MSE and accuracy
    assert_true(strchr(direct.out, '\n') != NULL);
    size_t first_line = (size_t)(strchr(direct.out, '\n') - direct.out);
    assert_true(strncmp(direct.out, converted.out, first_line + 1) == 0);
    test_result_free(&direct);
    test_result_free(&converted);
    path_in(path, sizeof(path), dir, "pickled.pth");
    RUN_ERROR(NULL, "state_dict", "import", path, out);
    path_in(path, sizeof(path), dir, "missing.pth");
    RUN_ERROR(NULL, "no such file", "import", path, out);
    RUN_ERROR(NULL, "needs", "import", path);
}

static void test_bad_checkpoint_files(void **state) {
    (void)state;
    char dir[600], path[700];
    make_dir(dir, sizeof(dir), "bad-checkpoints");
    path_in(path, sizeof(path), dir, "missing.safetensors");
    RUN_ERROR(NULL, "No such file", "eval", "--checkpoint", path, "--set", "pretrain", "-n", "10");

    path_in(path, sizeof(path), dir, "empty");
    write_text(path, "", 0);
    RUN_ERROR(NULL, "too short", "eval", "--checkpoint", path, "--set", "pretrain", "-n", "10");
    path_in(path, sizeof(path), dir, "four-bytes");
    write_text(path, "\x10\0\0\0", 4);
    RUN_ERROR(NULL, "4 bytes", "eval", "--checkpoint", path, "--set", "pretrain", "-n", "10");

    struct {
        const char *name;
        uint64_t header_length;   // the length the file claims; 0: the header's true length
        const char *header;
        size_t data_size;
        const char *keyword;
    } cases[] = {
        {"long-header", 1000, "{}", 0, "exceeds file size"},
        {"not-json", 0, "hello", 0, "not valid JSON"},
        {"f64", 0, "{\"x\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8, "F64"},
        {"offsets", 0, "{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,400]}}", 4, "out of range"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        path_in(path, sizeof(path), dir, cases[i].name);
        uint64_t length = cases[i].header_length ? cases[i].header_length : strlen(cases[i].header);
        write_raw_checkpoint(path, length, cases[i].header, cases[i].data_size);
        RUN_ERROR(NULL, cases[i].keyword, "eval", "--checkpoint", path, "--set", "pretrain", "-n", "10");
    }

    // Well-formed files that do not fit the model they describe.
    path_in(path, sizeof(path), dir, "missing-tensor.safetensors");
    write_modified_checkpoint(fixture_model, path, "transformer_encoder.layers.1.linear2.weight", NULL);
    RUN_ERROR(NULL, "missing tensor 'transformer_encoder.layers.1.linear2.weight'", "eval", "--checkpoint", path,
              "--set", "pretrain", "-n", "10");
    RUN_ERROR("", "missing tensor", "predict", "--checkpoint", path);
    path_in(path, sizeof(path), dir, "wrong-shape.safetensors");
    write_modified_checkpoint(fixture_model, path, NULL, "transformer_encoder.layers.1.linear1.bias");
    RUN_ERROR(NULL, "has shape [16], expected [32]", "eval", "--checkpoint", path, "--set", "pretrain", "-n", "10");
}

static void test_bad_settings(void **state) {
    (void)state;
    RUN_ERROR(NULL, "unknown data set 'nope'", "gen", "--set", "nope", "-n", "5");
    RUN_ERROR(NULL, "unknown data set 'nope'", "eval", "--checkpoint", fixture_model, "--set", "nope");
    RUN_ERROR(NULL, "unknown preset 'nope'", "train", "--preset", "nope");
    RUN_ERROR(NULL, "unknown setting 'foo'", "train", "--preset", "tiny", "foo=1");
    RUN_ERROR(NULL, "unknown setting 'foo'", "gen", "--set", "pretrain", "-n", "5", "foo=1");
    RUN_ERROR(NULL, "not divisible", "train", "--preset", "tiny", "d_model=10", "n_heads=3");
    RUN_ERROR(NULL, "max_v", "gen", "--set", "pretrain", "-n", "5", "max_v=0");
    RUN_ERROR(NULL, "batch_size", "train", "--preset", "tiny", "batch_size=0");
    RUN_ERROR(NULL, "'abc'", "train", "--preset", "tiny", "lr=abc");
    RUN_ERROR(NULL, "not an integer", "train", "--preset", "tiny", "d_model=wide");
    RUN_ERROR(NULL, "not an integer", "gen", "--set", "pretrain", "-n", "many");
}

static void test_bad_command_line(void **state) {
    (void)state;
    RUN_ERROR(NULL, "unknown command 'frob'", "frob");
    RUN_ERROR(NULL, "--set NAME is required", "gen", "-n", "5");
    RUN_ERROR(NULL, "-n N is required", "gen", "--set", "pretrain");
    RUN_ERROR(NULL, "--set needs a value", "gen", "--set");
    RUN_ERROR(NULL, "unknown option '--bogus'", "gen", "--set", "pretrain", "-n", "5", "--bogus");
    RUN_ERROR(NULL, "--checkpoint FILE is required", "eval", "--set", "pretrain");
    RUN_ERROR(NULL, "--set NAME is required", "eval", "--checkpoint", fixture_model);
    RUN_ERROR("", "--checkpoint FILE is required", "predict");
    RUN_ERROR(NULL, "--resume needs --out", "train", "--resume");
    RUN_ERROR(NULL, "unknown option '--bogus'", "train", "--preset", "tiny", "--bogus");
}

// A setting the command does not use is refused in one line naming the commands that use it, and
// nothing is written: eval and predict take the model and the token layout from the checkpoint.
static void test_unused_settings_refused(void **state) {
    (void)state;
    char dir[600];
    make_dir(dir, sizeof(dir), "unused");
    RUN_ERROR(NULL, "not used by eval; give --seed", "eval", "--checkpoint", fixture_model, "--set", "tune", "seed=5");
    RUN_ERROR(NULL, "the checkpoint fixes it", "eval", "--checkpoint", fixture_model, "--set", "tune", "d_model=99");
    RUN_ERROR(NULL, "setting of gen, train, run and sweep", "eval", "--checkpoint", fixture_model, "--set", "tune",
              "edges_per_vertex=3");
    RUN_ERROR("", "'d_model' is not used by predict", "predict", "--checkpoint", fixture_model, "d_model=32");
    RUN_ERROR("", "'min_v' is not used by predict", "predict", "--checkpoint", fixture_model, "min_v=4");
    RUN_ERROR(NULL, "'lr' is not used by gen", "gen", "--set", "tune", "-n", "2", "lr=1e-3");
    RUN_ERROR(NULL, "setting of run's fine-tuning", "train", "--preset", "tiny", "--out", dir, "tune.lr=1e-3");
    RUN_ERROR(NULL, "'init_from' is not used by run", "run", "--preset", "tiny", "--out", dir, "init_from=x");
    Snapshot before;
    snapshot_take(&before, fixture_dir);
    RUN_ERROR(NULL, "--preset is not used with --resume", "train", "--out", fixture_dir, "--resume", "--preset", "quick");
    expect_unchanged(&before, fixture_dir);
    snapshot_free(&before);
    // a data setting eval does use changes its examples
    TestResult plain = RUN(NULL, "eval", "--checkpoint", fixture_model, "--set", "tune", "-n", "64");
    TestResult small = RUN(NULL, "eval", "--checkpoint", fixture_model, "--set", "tune", "-n", "64", "max_tune_v=4");
    expect_success(&plain);
    expect_success(&small);
    assert_string_not_equal(plain.out, small.out);
    test_result_free(&plain);
    test_result_free(&small);
}

// steps=N sets a run's length (its schedule cut, or its last rate held); lr=X alone is a constant
// rate over that length; a resume may lengthen the run.
static void test_steps_and_constant_rate(void **state) {
    (void)state;
    char dir[600], run_dir[700], path[800];
    make_dir(dir, sizeof(dir), "steps");
    path_in(run_dir, sizeof(run_dir), dir, "cut");
    TestResult cut = RUN(NULL, "train", "--preset", "tiny", "--out", run_dir, "steps=3");
    expect_success(&cut);
    test_result_free(&cut);
    path_in(path, sizeof(path), run_dir, "train.csv");
    assert_int_equal(csv_data_rows(path), 3);
    TestResult longer = RUN(NULL, "train", "--out", run_dir, "--resume", "steps=5");
    expect_success(&longer);
    assert_non_null(strstr(longer.err, "steps 3 -> 5"));
    test_result_free(&longer);
    assert_int_equal(csv_data_rows(path), 5);

    path_in(run_dir, sizeof(run_dir), dir, "constant");
    TestResult constant = RUN(NULL, "train", "--preset", "tiny", "--out", run_dir, "lr=0.002", "steps=14");
    expect_success(&constant);
    test_result_free(&constant);
    path_in(path, sizeof(path), run_dir, "train.csv");
    char *csv = test_read_file(NULL, path);
    assert_int_equal(expect_consecutive_steps(csv), 14);
    int rows = 0;
    for (const char *line = strchr(csv, '\n'); line && line[1]; line = strchr(line + 1, '\n'), rows++) {
        const char *lr = strchr(line + 1, ',') + 1;
        if (strncmp(lr, "0.002,", 6) != 0) fail_msg("row %d: lr is not 0.002: %.40s", rows, line + 1);
    }
    assert_int_equal(rows, 14);
    free(csv);
    RUN_ERROR(NULL, "not a rate", "train", "--preset", "tiny", "--out", run_dir, "lr=fast");
    RUN_ERROR(NULL, "steps must be non-negative", "train", "--preset", "tiny", "--out", run_dir, "steps=-1");
}

// keys shows what each command starts from under a preset; train's and run's --help print the one
// presets table, so quick means the same length under both.
static void test_keys_and_presets(void **state) {
    (void)state;
    TestResult keys = RUN(NULL, "keys", "--preset", "tiny");
    expect_success(&keys);
    assert_non_null(strstr(keys.out, "\"1e-3@6,5e-4@4\""));  // tiny's pre-training schedule
    assert_non_null(strstr(keys.out, "tune.lr"));
    assert_non_null(strstr(keys.out, "predict: no settings"));
    test_result_free(&keys);
    TestResult quick = RUN(NULL, "keys", "train");
    expect_success(&quick);
    assert_non_null(strstr(quick.out, "3e-4@2000,1e-4@400"));
    assert_null(strstr(quick.out, "tune.lr"));
    test_result_free(&quick);
    RUN_ERROR(NULL, "takes no settings", "keys", "import");
    TestResult train_help = RUN(NULL, "train", "--help");
    TestResult run_help = RUN(NULL, "run", "--help");
    expect_success(&train_help);
    expect_success(&run_help);
    const char *table_train = strstr(train_help.out, "presets (");
    const char *table_run = strstr(run_help.out, "presets (");
    assert_non_null(table_train);
    assert_non_null(table_run);
    size_t len = strstr(table_train, "(blog-pretrain") - table_train;
    assert_true(strncmp(table_train, table_run, len) == 0);
    assert_non_null(strstr(table_train, "pre-training 2400 steps of 256"));
    test_result_free(&train_help);
    test_result_free(&run_help);
}

// One grammar: --name=value is --name value (-n=2 too); --seed and --threads are train's and run's
// settings; --config - reads the settings from standard input; --quiet leaves errors only; every
// command's --help prints its usage and the shared grammar on stdout.
static void test_one_option_grammar(void **state) {
    (void)state;
    TestResult spaced = RUN(NULL, "gen", "--set", "tune", "-n", "3", "--seed", "4", "-o", "-");
    TestResult joined = RUN(NULL, "gen", "--set=tune", "-n=3", "--seed=4", "--out=-");
    expect_success(&spaced);
    expect_success(&joined);
    assert_int_equal(count_lines(spaced.out), 3);
    assert_string_equal(spaced.out, joined.out);
    test_result_free(&spaced);
    test_result_free(&joined);

    char dir[600], run_dir[700], path[800];
    make_dir(dir, sizeof(dir), "grammar");
    path_in(run_dir, sizeof(run_dir), dir, "seeded");
    TestResult train = RUN("{\"batch_size\": 32, \"lr\": \"0.002@3\"}", "train", "--preset=tiny", "--config", "-",
                           "--seed", "7", "--threads=1", "--out", run_dir, "--quiet");
    expect_success(&train);
    assert_string_equal(train.err, "");  // --quiet: nothing but errors
    test_result_free(&train);
    path_in(path, sizeof(path), run_dir, "config.json");
    char *config = test_read_file(NULL, path);
    assert_non_null(strstr(config, "\"seed\":\t\"7\""));
    assert_non_null(strstr(config, "\"batch_size\":\t32"));
    assert_non_null(strstr(config, "\"lr\":\t\"0.002@3\""));
    free(config);
    RUN_ERROR(NULL, "unknown setting 'bogus'", "train", "--preset", "tiny", "--out", run_dir, "-q", "bogus=1");
    RUN_ERROR("[1]", "not a JSON object of settings", "run", "--preset", "tiny", "--out", run_dir, "--config=-");
    RUN_ERROR(NULL, "--seed: 'x'", "run", "--preset", "tiny", "--out", run_dir, "--seed", "x");

    const char *commands[] = {"gen", "eval", "predict", "train", "run", "sweep", "import", "keys", "bfs"};
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        for (int short_form = 0; short_form < 2; short_form++) {
            TestResult help = RUN(NULL, commands[i], short_form ? "-h" : "--help");
            expect_success(&help);
            if (strncmp(help.out, "usage: pathformer ", 18) != 0 || !strstr(help.out, "--name=value"))
                fail_msg("%s --help:\n%s", commands[i], help.out);
            test_result_free(&help);
        }
    }
}

// Malformed JSON Lines: the error names the line (blank lines count) and the problem.
static void test_predict_bad_lines(void **state) {
    (void)state;
    struct {
        const char *line;
        const char *keyword;
    } cases[] = {
        {"hello", "not valid JSON"},
        {"{\"target\": 2}", "\"edges\""},
        {"{\"edges\": [[0,2]], \"target\": 2}", "vertex 0 out of range 1..15"},
        {"{\"edges\": [[1,16]], \"target\": 2}", "vertex 16 out of range 1..15"},
        {"{\"edges\": [[1,2]], \"target\": 99}", "vertex 99"},
        {"{\"edges\": [[1,2,3]], \"target\": 2}", "pair"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char input[256];
        snprintf(input, sizeof(input), "{\"edges\": [[1,2]], \"target\": 2}\n\n%s\n", cases[i].line);
        TestResult result = RUN(input, "predict", "--checkpoint", fixture_model);
        expect_one_line_error(&result, "input line 3: ");
        expect_one_line_error(&result, cases[i].keyword);
        test_result_free(&result);
    }
    char missing[700];
    path_in(missing, sizeof(missing), scratch_root, "no-such-input.jsonl");
    RUN_ERROR(NULL, "cannot open", "predict", "--checkpoint", fixture_model, "-i", missing);
}

// ---------------------------------------------------------------------------------------------
// gen and predict

static void test_gen(void **state) {
    (void)state;
    enum { N = 200 };
    TestResult one = RUN(NULL, "gen", "--set", "tune", "-n", "200", "--seed", "3", "--threads", "1");
    expect_success(&one);
    assert_string_equal(one.err, "");
    cJSON *items[N];
    assert_int_equal(parse_lines(one.out, items, N), N);
    for (int i = 0; i < N; i++) {
        const cJSON *edges = cJSON_GetObjectItemCaseSensitive(items[i], "edges");
        if (!cJSON_IsArray(edges) || cJSON_GetArraySize(edges) == 0) fail_msg("line %d: no edges", i + 1);
        for (const cJSON *edge = edges->child; edge; edge = edge->next) {
            assert_int_equal(cJSON_GetArraySize(edge), 2);
            for (const cJSON *v = edge->child; v; v = v->next) assert_in_range(v->valueint, 1, 15);
        }
        assert_in_range(int_field(items[i], "target"), 1, 15);
        assert_in_range(int_field(items[i], "distance"), 1, 15);
    }
    free_items(items, N);

    // the examples depend on the seed only, not on how many threads draw them
    TestResult two = RUN(NULL, "gen", "--set", "tune", "-n", "200", "--seed", "3", "--threads", "2");
    expect_success(&two);
    assert_string_equal(two.out, one.out);
    TestResult other = RUN(NULL, "gen", "--set", "tune", "-n", "200", "--seed", "4");
    expect_success(&other);
    assert_int_equal(count_lines(other.out), N);
    assert_true(strcmp(other.out, one.out) != 0);

    TestResult histogram = RUN(NULL, "gen", "--set", "tune", "-n", "200", "--seed", "3", "--histogram");
    expect_success(&histogram);
    assert_string_equal(histogram.out, one.out);
    if (!strstr(histogram.err, "label histogram of 200 'tune' examples") || !strstr(histogram.err, "unreachable"))
        fail_msg("no histogram on stderr:\n%s", histogram.err);
    test_result_free(&one);
    test_result_free(&two);
    test_result_free(&other);
    test_result_free(&histogram);
}

// Predictions for more examples than one inference batch (256), in input order.
static void test_predict_round_trip(void **state) {
    (void)state;
    enum { N = 300 };
    TestResult gen = RUN(NULL, "gen", "--set", "pretrain", "-n", "300", "--seed", "9");
    expect_success(&gen);
    TestResult predict = RUN(gen.out, "predict", "--checkpoint", fixture_model);
    expect_success(&predict);
    assert_string_equal(predict.err, "");
    cJSON *inputs[N], *outputs[N];
    assert_int_equal(parse_lines(gen.out, inputs, N), N);
    assert_int_equal(parse_lines(predict.out, outputs, N), N);
    for (int i = 0; i < N; i++) {
        const cJSON *prediction = cJSON_GetObjectItemCaseSensitive(outputs[i], "prediction");
        if (!cJSON_IsNumber(prediction) || !isfinite(prediction->valuedouble))
            fail_msg("line %d: no prediction", i + 1);
        assert_int_equal(int_field(outputs[i], "target"), int_field(inputs[i], "target"));
        assert_int_equal(int_field(outputs[i], "distance"), int_field(inputs[i], "distance"));
    }
    free_items(inputs, N);
    free_items(outputs, N);

    // the same through files
    char dir[600], in_path[700], out_path[700];
    make_dir(dir, sizeof(dir), "predict");
    path_in(in_path, sizeof(in_path), dir, "in.jsonl");
    path_in(out_path, sizeof(out_path), dir, "out.jsonl");
    write_text(in_path, gen.out, strlen(gen.out));
    TestResult files = RUN(NULL, "predict", "--checkpoint", fixture_model, "-i", in_path, "-o", out_path);
    expect_success(&files);
    char *written = test_read_file(NULL, out_path);
    assert_string_equal(written, predict.out);
    free(written);
    test_result_free(&files);
    test_result_free(&gen);
    test_result_free(&predict);
}

// Reads one line from fd (a pipe) into line; fails the test when none comes within `seconds` (a
// bound for a stuck filter, far above the milliseconds an answer takes).
static void read_line_from_pipe(int fd, char *line, size_t size, int seconds) {
    size_t used = 0;
    while (used + 1 < size) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, seconds * 1000) != 1) fail_msg("no answer within %d s (read so far: '%.*s')", seconds, (int)used, line);
        ssize_t n = read(fd, line + used, 1);
        if (n != 1) fail_msg("the filter closed its output early ('%.*s')", (int)used, line);
        if (line[used] == '\n') break;
        used++;
    }
    line[used] = '\0';
}

// predict is a filter: with the writer still holding the pipe open, each line is answered before
// the next is written; every input key comes back; --skip-bad answers the good lines around a bad
// one and names it on stderr; strict mode answers the lines before a bad one, then fails naming it.
static void test_predict_streams(void **state) {
    (void)state;
    int to_child[2], from_child[2], errors = test_temp_file();
    assert_int_equal(pipe(to_child), 0);
    assert_int_equal(pipe(from_child), 0);
    const char *argv[] = {test_binary_path(), "predict", "--checkpoint", fixture_model, "--skip-bad", NULL};
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, to_child[0], STDIN_FILENO);
    posix_spawn_file_actions_adddup2(&actions, from_child[1], STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&actions, errors, STDERR_FILENO);
    posix_spawn_file_actions_addclose(&actions, to_child[1]);
    posix_spawn_file_actions_addclose(&actions, from_child[0]);
    pid_t pid;
    assert_int_equal(posix_spawn(&pid, argv[0], &actions, NULL, (char *const *)argv, environ), 0);
    posix_spawn_file_actions_destroy(&actions);
    close(to_child[0]);
    close(from_child[1]);
    const char *inputs[] = {"{\"id\": \"first\", \"edges\": [[1,2]], \"target\": 2}\n",
                            "not json\n",
                            "{\"edges\": [[1,3],[3,2]], \"target\": 2, \"id\": 7, \"note\": {\"x\": [1]}}\n"};
    const char *expected[] = {"{\"id\":\"first\",\"edges\":[[1,2]],\"target\":2,\"distance\":1,\"prediction\":",
                              NULL,
                              "{\"edges\":[[1,3],[3,2]],\"target\":2,\"id\":7,\"note\":{\"x\":[1]},\"distance\":2,"
                              "\"prediction\":"};
    for (int i = 0; i < 3; i++) {
        assert_true(write(to_child[1], inputs[i], strlen(inputs[i])) == (ssize_t)strlen(inputs[i]));
        if (!expected[i]) continue;
        char line[1024];
        read_line_from_pipe(from_child[0], line, sizeof(line), 60);
        if (strncmp(line, expected[i], strlen(expected[i])) != 0) fail_msg("answer %d: %s", i + 1, line);
    }
    close(to_child[1]);
    char rest[64];
    assert_int_equal(read(from_child[0], rest, sizeof(rest)), 0);  // nothing more
    close(from_child[0]);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    char *err = test_read_fd(errors);
    close(errors);
    if (count_lines(err) != 1 || !strstr(err, "input line 2: not valid JSON"))
        fail_msg("stderr of --skip-bad: %s", err);
    free(err);

    // strict: the good line before a bad one is answered, then one error line
    TestResult strict = RUN("{\"edges\": [[1,2]], \"target\": 2}\nnope\n{\"edges\": [[1,2]], \"target\": 2}\n", "predict",
                            "--checkpoint", fixture_model);
    expect_one_line_error(&strict, "input line 2");
    assert_int_equal(count_lines(strict.out), 1);
    test_result_free(&strict);
    RUN_ERROR("{\"edges\": [[1,2]], \"target\": 2}\n", "cannot write", "predict", "--checkpoint", fixture_model, "-o",
              "/dev/full");
}

// ---------------------------------------------------------------------------------------------
// train

static void test_train_run_folder(void **state) {
    (void)state;
    const char *files[] = {"config.json", "train.csv", "model.safetensors", "optimizer.safetensors", "summary.json",
                           "eval_pretrain.json"};
    char path[800];
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        path_in(path, sizeof(path), fixture_dir, files[i]);
        if (access(path, R_OK) != 0) fail_msg("train wrote no %s", path);
    }
    path_in(path, sizeof(path), fixture_dir, "train.csv");
    char *csv = test_read_file(NULL, path);
    assert_int_equal(expect_consecutive_steps(csv), 10);
    free(csv);

    // a fresh run into a folder that holds one is refused and touches nothing
    Snapshot before;
    snapshot_take(&before, fixture_dir);
    RUN_ERROR(NULL, "already holds a run", "train", "--preset", "tiny", "--out", fixture_dir);
    expect_unchanged(&before, fixture_dir);
    snapshot_free(&before);
}

// Nothing is written before the settings and their files are checked: a train whose init_from is
// missing, a run --resume or --phase report on a folder with no run, leave no folder, and a plain
// retry works; a resume of a finished run changes nothing and says so.
static void test_failed_start_and_finished_resume(void **state) {
    (void)state;
    char dir[600], run_dir[700];
    make_dir(dir, sizeof(dir), "retry");
    path_in(run_dir, sizeof(run_dir), dir, "run");
    RUN_ERROR(NULL, "/missing/model.safetensors", "train", "--preset", "tiny", "--out", run_dir,
              "init_from=/missing/model.safetensors");
    assert_false(pf_file_exists(run_dir));
    RUN_ERROR(NULL, "holds no run to resume", "run", "--resume", "--out", run_dir);
    assert_false(pf_file_exists(run_dir));
    RUN_ERROR(NULL, "needs phase 'pretrain' finished first", "run", "--phase", "report", "--out", run_dir);
    assert_false(pf_file_exists(run_dir));
    TestResult retry = RUN(NULL, "train", "--preset", "tiny", "--out", run_dir, "-q");
    expect_success(&retry);
    test_result_free(&retry);

    Snapshot before;
    snapshot_take(&before, run_dir);
    TestResult again = RUN(NULL, "train", "--out", run_dir, "--resume");
    expect_success(&again);
    if (!strstr(again.err, "the run is finished (10 of 10 steps); nothing to do")) fail_msg("stderr: %s", again.err);
    test_result_free(&again);
    expect_unchanged(&before, run_dir);
    snapshot_free(&before);
}

// A run stopped after 4 steps and resumed ends bit-identical to one that never stopped.
static void test_resume_bit_identical(void **state) {
    (void)state;
    char dir_a[600], dir_b[600], path_a[700], path_b[700];
    path_in(dir_a, sizeof(dir_a), scratch_root, "resume-a");
    path_in(dir_b, sizeof(dir_b), scratch_root, "resume-b");
    TestResult a = RUN(NULL, "train", "--preset", "tiny", "--out", dir_a);
    expect_success(&a);
    TestResult b1 = RUN(NULL, "train", "--preset", "tiny", "--out", dir_b, "--stop-after", "4");
    expect_success(&b1);
    if (!strstr(b1.err, "stopped after 4 steps")) fail_msg("no stop message:\n%s", b1.err);
    path_in(path_b, sizeof(path_b), dir_b, "train.csv");
    char *csv_b = test_read_file(NULL, path_b);
    assert_int_equal(expect_consecutive_steps(csv_b), 4);
    free(csv_b);
    TestResult b2 = RUN(NULL, "train", "--out", dir_b, "--resume");
    expect_success(&b2);

    path_in(path_a, sizeof(path_a), dir_a, "train.csv");
    char *csv_a = test_read_file(NULL, path_a);
    csv_b = test_read_file(NULL, path_b);
    assert_int_equal(expect_consecutive_steps(csv_b), 10);
    char *losses_a = csv_without_timing(csv_a), *losses_b = csv_without_timing(csv_b);
    assert_string_equal(losses_b, losses_a);
    path_in(path_a, sizeof(path_a), dir_a, "model.safetensors");
    path_in(path_b, sizeof(path_b), dir_b, "model.safetensors");
    expect_same_file(path_a, path_b);

    // resuming with a different setting is refused and touches nothing
    Snapshot before;
    snapshot_take(&before, dir_b);
    RUN_ERROR(NULL, "different config", "train", "--out", dir_b, "--resume", "seed=5");
    expect_unchanged(&before, dir_b);
    snapshot_free(&before);
    free(csv_a);
    free(csv_b);
    free(losses_a);
    free(losses_b);
    test_result_free(&a);
    test_result_free(&b1);
    test_result_free(&b2);
}


// Runs the binary with PF_FAULT_KILL_AT=kill_at (0: none), output discarded; returns the exit status,
// or -SIGNAL when it died of a signal. Without node on the PATH (without_node), a report skips its
// SVG export (two seconds of Node per report) and says so; everything else is written as usual.
static int run_with_fault_env(int kill_at, int without_node, const char *const *args) {
    int n = 0;
    while (environ[n]) n++;
    char **env = mallocCheck(sizeof(char *) * (size_t)(n + 3));
    char fault[64];
    snprintf(fault, sizeof(fault), "PF_FAULT_KILL_AT=%d", kill_at);
    int m = 0;
    for (int i = 0; i < n; i++) {
        if (strncmp(environ[i], "PF_FAULT_KILL_AT=", 17) == 0) continue;
        if (without_node && strncmp(environ[i], "PATH=", 5) == 0) continue;
        env[m++] = environ[i];
    }
    env[m++] = fault;
    if (without_node) env[m++] = "PATH=/nonexistent";
    env[m] = NULL;
    const char *argv[32];
    argv[0] = test_binary_path();
    int k = 1;
    for (; args[k - 1] && k < 31; k++) argv[k] = args[k - 1];
    argv[k] = NULL;
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
    pid_t pid;
    int rc = posix_spawn(&pid, argv[0], &actions, NULL, (char *const *)argv, env);
    posix_spawn_file_actions_destroy(&actions);
    free(env);
    if (rc != 0) fail_msg("cannot run %s: %s", argv[0], strerror(rc));
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) fail_msg("waitpid: %s", strerror(errno));
    return WIFSIGNALED(status) ? -WTERMSIG(status) : WEXITSTATUS(status);
}

static int run_with_fault(int kill_at, const char *const *args) { return run_with_fault_env(kill_at, 0, args); }

// SIGKILL at any instant, inside the checkpoint's writes and renames included (the fault points of
// PF_FAULT_KILL_AT), then --resume, again and again: the run ends byte-identical to one that was
// never interrupted, its log included (but the timing columns), and never refuses to resume.
static void test_kill_anywhere_resumes_identical(void **state) {
    (void)state;
    const char *schedule = test_under_sanitizer() ? "lr=1e-3@40" : "lr=1e-3@120";
    int want_kills = test_under_sanitizer() ? 40 : 200;
    char ref[600], dir[600], path_a[700], path_b[700];
    path_in(ref, sizeof(ref), scratch_root, "kill-reference");
    path_in(dir, sizeof(dir), scratch_root, "kill-target");
    const char *ref_args[] = {"train", "--preset", "tiny", schedule, "checkpoint_every=1", "seed=4", "--out", ref, NULL};
    assert_int_equal(run_with_fault(0, ref_args), 0);
    const char *first[] = {"train", "--preset", "tiny", schedule, "checkpoint_every=1", "seed=4", "--out", dir, NULL};
    const char *again[] = {"train", "--out", dir, "--resume", NULL};
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    int kills = 0, sessions = 0, started = 0;
    char config[700];
    path_in(config, sizeof(config), dir, "config.json");  // there once a start got past its checks
    for (;;) {
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        int kill_at = 1 + (int)((rng >> 33) % 14);  // a step passes about 10 fault points
        int rc = run_with_fault(kills < want_kills ? kill_at : 0, started ? again : first);
        sessions++;
        if (rc == -SIGKILL) {
            kills++;
            started = pf_file_exists(config);
            continue;
        }
        if (rc != 0) fail_msg("session %d (after %d kills) exited with %d", sessions, kills, rc);
        path_in(path_a, sizeof(path_a), dir, "summary.json");
        if (pf_file_exists(path_a)) break;
        if (kills >= want_kills) fail_msg("no kill left and the run did not finish");
        started = 1;
    }
    printf("  %d kills in %d sessions\n", kills, sessions);
    assert_true(kills >= want_kills);
    const char *same[] = {"model.safetensors", "optimizer.safetensors"};
    for (int i = 0; i < 2; i++) {
        path_in(path_a, sizeof(path_a), ref, same[i]);
        path_in(path_b, sizeof(path_b), dir, same[i]);
        expect_same_file(path_a, path_b);
    }
    path_in(path_a, sizeof(path_a), ref, "train.csv");
    path_in(path_b, sizeof(path_b), dir, "train.csv");
    char *csv_a = test_read_file(NULL, path_a), *csv_b = test_read_file(NULL, path_b);
    char *losses_a = csv_without_timing(csv_a), *losses_b = csv_without_timing(csv_b);
    assert_string_equal(losses_b, losses_a);
    free(csv_a);
    free(csv_b);
    free(losses_a);
    free(losses_b);
}

// Removes, at every depth, the members whose names hold `word` (the timings of metrics.json).
static void json_drop_members_with(cJSON *item, const char *word) {
    for (cJSON *child = item->child, *next; child; child = next) {
        next = child->next;
        if (child->string && strstr(child->string, word))
            cJSON_Delete(cJSON_DetachItemViaPointer(item, child));
        else
            json_drop_members_with(child, word);
    }
}

// metrics.json as text without its timings, its paths naming `dir` renamed to `as_dir`.
static char *metrics_without_timings(const char *dir, const char *as_dir) {
    char path[700];
    path_in(path, sizeof(path), dir, "metrics.json");
    char *text = test_read_file(NULL, path);
    cJSON *root = cJSON_Parse(text);
    if (!root) fail_msg("%s is not JSON", path);
    json_drop_members_with(root, "second");
    char *out = cJSON_Print(root);
    cJSON_Delete(root);
    free(text);
    assert_int_equal(strlen(dir), strlen(as_dir));
    for (char *at; (at = strstr(out, dir));) memcpy(at, as_dir, strlen(as_dir));  // the config's paths
    return out;
}

// Every file of `a` in `b`, byte for byte, and no other (hidden files, the locks, aside).
static void expect_same_folder(const char *a, const char *b) {
    Snapshot want;
    snapshot_take(&want, a);
    expect_unchanged(&want, b);
    snapshot_free(&want);
}

// The same for `pathformer run`: SIGKILL at random fault points across its phases (pre-training,
// the evaluations, fine-tuning, the report), `run --resume` after each, over and over. Every
// experiment ends with the checkpoints, optimizer states, evaluations, figures' data, logs (less
// their timing columns) and metrics (less their timings) of one that was never interrupted.
static void test_run_killed_anywhere_resumes_identical(void **state) {
    (void)state;
    int want_kills = test_under_sanitizer() ? 40 : 200;
    char ref[600], dir[600], path_a[700], path_b[700];
    path_in(ref, sizeof(ref), scratch_root, "run-kill-ref");
    const char *ref_args[] = {"run", "--preset", "tiny", "seed=6", "--out", ref, NULL};
    assert_int_equal(run_with_fault_env(0, 1, ref_args), 0);
    uint64_t rng = 0x2545f4914f6cdd1dull;
    int kills = 0, sessions = 0, experiments = 0;
    while (kills < want_kills) {
        char name[32];
        snprintf(name, sizeof(name), "run-kill-%03d", experiments++);
        path_in(dir, sizeof(dir), scratch_root, name);
        const char *first[] = {"run", "--preset", "tiny", "seed=6", "--out", dir, NULL};
        const char *again[] = {"run", "--out", dir, "--resume", NULL};
        char experiment_json[700];
        path_in(experiment_json, sizeof(experiment_json), dir, "experiment.json");
        for (int started = 0;;) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            int kill_at = 1 + (int)((rng >> 33) % 150);  // a whole tiny run passes 100 to 200 fault points
            int rc = run_with_fault_env(kill_at, 1, started ? again : first);
            sessions++;
            started = pf_file_exists(experiment_json);
            if (rc == -SIGKILL) {
                kills++;
                continue;
            }
            if (rc != 0) fail_msg("%s: session %d (after %d kills) exited with %d", dir, sessions, kills, rc);
            break;
        }
        const char *subs[] = {"eval", "figures"};
        for (int i = 0; i < 2; i++) {
            path_in(path_a, sizeof(path_a), ref, subs[i]);
            path_in(path_b, sizeof(path_b), dir, subs[i]);
            expect_same_folder(path_a, path_b);
        }
        const char *phases[] = {"pretrain", "tune"};
        const char *same[] = {"model.safetensors", "optimizer.safetensors"};
        for (int p = 0; p < 2; p++) {
            for (int i = 0; i < 2; i++) {
                snprintf(path_a, sizeof(path_a), "%s/%s/%s", ref, phases[p], same[i]);
                snprintf(path_b, sizeof(path_b), "%s/%s/%s", dir, phases[p], same[i]);
                expect_same_file(path_a, path_b);
            }
            snprintf(path_a, sizeof(path_a), "%s/%s/train.csv", ref, phases[p]);
            snprintf(path_b, sizeof(path_b), "%s/%s/train.csv", dir, phases[p]);
            char *csv_a = test_read_file(NULL, path_a), *csv_b = test_read_file(NULL, path_b);
            char *losses_a = csv_without_timing(csv_a), *losses_b = csv_without_timing(csv_b);
            assert_string_equal(losses_b, losses_a);
            free(csv_a);
            free(csv_b);
            free(losses_a);
            free(losses_b);
        }
        char *metrics_a = metrics_without_timings(ref, ref), *metrics_b = metrics_without_timings(dir, ref);
        assert_string_equal(metrics_b, metrics_a);
        free(metrics_a);
        free(metrics_b);
        path_in(path_b, sizeof(path_b), dir, "report.html");
        assert_true(pf_file_exists(path_b));
    }
    printf("  %d kills in %d sessions over %d experiments\n", kills, sessions, experiments);
}

// A run whose loss or gradient stops being finite ends with one line naming the step and keeps its
// last good checkpoint; --resume with a lower rate continues from it (saying what changed), and a
// resume that would change the data or the model is still refused.
static void test_divergence_then_lower_rate(void **state) {
    (void)state;
    char dir[600], path[700];
    path_in(dir, sizeof(dir), scratch_root, "diverge");
    TestResult diverged = RUN(NULL, "train", "--preset", "tiny", "lr=1e-3@4,1e30@6", "checkpoint_every=2", "--out", dir);
    assert_int_not_equal(diverged.status, 0);
    const char *last = strstr(diverged.err, "pathformer: training diverged at step 5");  // after the progress lines
    if (!last || strchr(last, '\n') != last + strlen(last) - 1) fail_msg("no last line on the divergence:\n%s", diverged.err);
    test_result_free(&diverged);
    path_in(path, sizeof(path), dir, "model.safetensors");
    StFile file;
    if (st_load(&file, path) != 0) fail_msg("%s", pf_last_error());
    assert_string_equal(st_metadata(&file, "step"), "4");  // the last good checkpoint
    for (int i = 0; i < file.num_tensors; i++) {
        const float *v = file.tensors[i].data;
        for (size_t k = 0; k < file.tensors[i].numel; k++) assert_true(isfinite(v[k]));
    }
    st_free(&file);
    RUN_ERROR(NULL, "seed", "train", "--out", dir, "--resume", "seed=9");
    TestResult result = RUN(NULL, "train", "--out", dir, "--resume", "lr=1e-3@4,1e-4@6");
    expect_success(&result);
    if (!strstr(result.err, "resuming with changed settings: lr")) fail_msg("no word of the change:\n%s", result.err);
    test_result_free(&result);
    path_in(path, sizeof(path), dir, "summary.json");
    assert_true(pf_file_exists(path));
}

// No file unless asked: eval prints its table and writes the histogram only with --json (- is
// standard output); a write error, to standard output too, is an error; --version says what the
// binary is.
static void test_eval_outputs_and_version(void **state) {
    (void)state;
    char dir[600], path[700];
    make_dir(dir, sizeof(dir), "eval-outputs");
    TestResult plain = RUN(NULL, "eval", "--checkpoint", fixture_model, "--set", "tune", "-n", "32");
    expect_success(&plain);
    assert_null(strstr(plain.err, "histogram written"));
    assert_false(pf_file_exists("eval_tune.json"));
    test_result_free(&plain);
    TestResult to_stdout = RUN(NULL, "eval", "--checkpoint", fixture_model, "--set", "tune", "-n", "32", "--json", "-");
    expect_success(&to_stdout);
    assert_non_null(strstr(to_stdout.out, "\"histogram\""));
    assert_false(pf_file_exists("-"));
    test_result_free(&to_stdout);
    path_in(path, sizeof(path), dir, "h.json");
    TestResult to_file = RUN(NULL, "eval", "--checkpoint", fixture_model, "--set", "tune", "-n", "32", "--json", path);
    expect_success(&to_file);
    assert_true(pf_file_exists(path));
    test_result_free(&to_file);
    RUN_ERROR(NULL, "cannot", "eval", "--checkpoint", fixture_model, "--set", "tune", "-n", "32", "--json", "/dev/full");
    TestResult version = RUN(NULL, "--version");
    expect_success(&version);
    assert_true(strncmp(version.out, "pathformer " PF_VERSION "\n", strlen("pathformer " PF_VERSION "\n")) == 0);
    assert_non_null(strstr(version.out, "matmul backend"));
    test_result_free(&version);
    const char *commands[] = {"gen", "eval", "predict", "train", "run", "sweep", "import"};
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        TestResult help = RUN(NULL, commands[i], "--help");
        expect_success(&help);
        if (strncmp(help.out, "usage: pathformer ", 18) != 0) fail_msg("%s --help:\n%s", commands[i], help.out);
        test_result_free(&help);
    }
}

// Runs `pathformer args...` with its standard output on /dev/full; returns its stderr (the caller
// frees) and the exit status in *status.
static char *run_into_full_disk(const char *const *args, int *status) {
    int errors = test_temp_file(), full = open("/dev/full", O_WRONLY);
    assert_true(full >= 0);
    int argc = 0;
    while (args[argc]) argc++;
    const char *argv[16];
    assert_true(argc < 15);
    argv[0] = test_binary_path();
    for (int i = 0; i < argc; i++) argv[i + 1] = args[i];
    argv[argc + 1] = NULL;
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&actions, full, STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&actions, errors, STDERR_FILENO);
    pid_t pid;
    assert_int_equal(posix_spawn(&pid, argv[0], &actions, NULL, (char *const *)argv, environ), 0);
    posix_spawn_file_actions_destroy(&actions);
    close(full);
    int wait_status;
    assert_int_equal(waitpid(pid, &wait_status, 0), pid);
    assert_true(WIFEXITED(wait_status));
    *status = WEXITSTATUS(wait_status);
    char *err = test_read_fd(errors);
    close(errors);
    return err;
}

// Every write to standard output is checked: a full disk is a one-line error and a non-zero exit,
// for a command's output, a help text and --version alike; bfs eval --json - is standard output.
static void test_stdout_write_errors(void **state) {
    (void)state;
    const char *const cases[][12] = {
        {"gen", "--set", "tune", "-n", "50", NULL},
        {"keys", NULL},
        {"train", "--help", NULL},
        {"--version", NULL},
        {"bfs", "eval", "-n", "64", NULL},
        {"eval", "--checkpoint", fixture_model, "--set", "tune", "-n", "32", NULL},
        {"keys", "--quiet", NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int status;
        char *err = run_into_full_disk(cases[i], &status);
        if (status == 0 || count_lines(err) != 1 || !strstr(err, "pathformer: cannot write standard output"))
            fail_msg("%s into /dev/full: status %d, stderr:\n%s", cases[i][0], status, err);
        free(err);
    }
    TestResult result = RUN(NULL, "bfs", "eval", "-n", "64", "--json", "-");
    expect_success(&result);
    assert_non_null(strstr(result.out, "\"max_error\""));
    test_result_free(&result);
    assert_false(pf_file_exists("-"));  // no file named '-' in the current folder
}

// Long work shows its progress on stderr, plain lines in a pipe (PF_PROGRESS_EVERY=0: every update,
// from the start, so that short work shows it too): bfs robust per step, eval per block.
static void test_progress_lines(void **state) {
    (void)state;
    char dir[600], out_dir[700];
    make_dir(dir, sizeof(dir), "progress");
    path_in(out_dir, sizeof(out_dir), dir, "robust");
    setenv("PF_PROGRESS_EVERY", "0", 1);
    TestResult robust = RUN(NULL, "bfs", "robust", "--steps", "4", "--seeds", "2", "--matrix", "reach_q", "-n", "64",
                            "--batch", "16", "--threads", "1", "--out", out_dir);
    TestResult eval = RUN(NULL, "eval", "--checkpoint", fixture_model, "--set", "tune", "-n", "100");
    unsetenv("PF_PROGRESS_EVERY");
    expect_success(&robust);
    expect_success(&eval);
    for (int step = 1; step <= 8; step++) {
        char line[96];
        snprintf(line, sizeof(line), "bfs robust: %d/8 steps (%.0f%%), ", step, 100.0 * step / 8);
        const char *at = strstr(robust.err, line);
        if (!at || (at != robust.err && at[-1] != '\n')) fail_msg("no line '%s' in:\n%s", line, robust.err);
    }
    assert_null(strstr(robust.err, "\r"));  // a pipe gets whole lines
    assert_non_null(strstr(eval.err, "eval on tune: 100/100 examples (100%)"));
    assert_non_null(strstr(eval.err, "ETA"));
    test_result_free(&robust);
    test_result_free(&eval);
}

// A second process on a run folder in use is refused at once, naming the holder's pid.
static void test_locked_folder(void **state) {
    (void)state;
    char dir[600], path[700];
    make_dir(dir, sizeof(dir), "locked");
    path_in(path, sizeof(path), dir, ".lock");
    int fd = open(path, O_RDWR | O_CREAT, 0644);
    assert_true(fd >= 0);
    assert_int_equal(flock(fd, LOCK_EX | LOCK_NB), 0);
    assert_true(write(fd, "4242\n", 5) == 5);
    RUN_ERROR(NULL, "pid 4242", "train", "--preset", "tiny", "--out", dir);
    RUN_ERROR(NULL, "in use", "run", "--preset", "tiny", "--out", dir);
    close(fd);
    TestResult result = RUN(NULL, "train", "--preset", "tiny", "--out", dir);
    expect_success(&result);
    test_result_free(&result);
}

// Ctrl-C stops after the current step with a loadable checkpoint; --resume continues from it.
static void test_interrupt_and_resume(void **state) {
    (void)state;
    char dir[600], csv_path[700], path[700];
    path_in(dir, sizeof(dir), scratch_root, "interrupt");
    path_in(csv_path, sizeof(csv_path), dir, "train.csv");
    // a schedule long enough to be still running when the signal comes
    TestChild child = test_spawn((const char *const[]){"train", "--preset", "tiny", "--out", dir, "lr=1e-4@100000",
                                                    "checkpoint_every=0", NULL},
                              NULL);
    double deadline = pf_now_seconds() + 30.0;
    while (csv_data_rows(csv_path) < 3) {
        siginfo_t info = {0};
        if (waitid(P_PID, (id_t)child.pid, &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid != 0) {
            TestResult early = test_finish(child);
            fail_msg("training ended before the signal (status %d):\n%s", early.status, early.err);
        }
        if (pf_now_seconds() > deadline) {
            kill(child.pid, SIGKILL);
            test_finish(child);
            fail_msg("no 3 rows in %s after 30 s", csv_path);
        }
        nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
    }
    kill(child.pid, SIGINT);
    TestResult interrupted = test_finish(child);
    if (interrupted.status != 130) fail_msg("exit status %d, expected 130:\n%s", interrupted.status, interrupted.err);
    if (!strstr(interrupted.err, "interrupted")) fail_msg("stderr does not say interrupted:\n%s", interrupted.err);

    StFile model, optimizer;
    path_in(path, sizeof(path), dir, "model.safetensors");
    if (st_load(&model, path) != 0) fail_msg("%s", pf_last_error());
    path_in(path, sizeof(path), dir, "optimizer.safetensors");
    if (st_load(&optimizer, path) != 0) fail_msg("%s", pf_last_error());
    const char *step_text = st_metadata(&model, "step");
    assert_non_null(step_text);
    assert_string_equal(st_metadata(&optimizer, "step"), step_text);
    int saved_step = atoi(step_text);
    st_free(&model);
    st_free(&optimizer);
    char *csv = test_read_file(NULL, csv_path);
    assert_int_equal(expect_consecutive_steps(csv), saved_step);
    free(csv);

    TestResult resumed = RUN(NULL, "train", "--out", dir, "--resume", "--stop-after", "2");
    expect_success(&resumed);
    csv = test_read_file(NULL, csv_path);
    assert_int_equal(expect_consecutive_steps(csv), saved_step + 2);
    free(csv);
    test_result_free(&interrupted);
    test_result_free(&resumed);
}

// Outputs that cannot be written because a file stands where a folder should be.
static void test_output_under_a_file(void **state) {
    (void)state;
    char dir[600], plain[700], path[800];
    make_dir(dir, sizeof(dir), "under-a-file");
    path_in(plain, sizeof(plain), dir, "plain-file");
    write_text(plain, "x", 1);
    path_in(path, sizeof(path), plain, "run");
    RUN_ERROR(NULL, "cannot create folder", "train", "--preset", "tiny", "--out", path);
    path_in(path, sizeof(path), plain, "out.jsonl");
    RUN_ERROR(NULL, "cannot write", "gen", "--set", "pretrain", "-n", "5", "-o", path);
}

static void test_read_only_folder(void **state) {
    (void)state;
    char dir[600], path[700];
    make_dir(dir, sizeof(dir), "read-only");
    if (chmod(dir, 0555) != 0) fail_msg("cannot chmod %s: %s", dir, strerror(errno));
    // root writes into read-only folders anyway; there is nothing to test then
    path_in(path, sizeof(path), dir, "probe");
    int probe = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (probe >= 0) {
        close(probe);
        unlink(path);
        chmod(dir, 0755);
        print_message("note: read-only folders are writable for this user (root?); skipping\n");
        skip();
    }
    RUN_ERROR(NULL, "Permission denied", "train", "--preset", "tiny", "--out", dir);
    path_in(path, sizeof(path), dir, "run");
    RUN_ERROR(NULL, "Permission denied", "train", "--preset", "tiny", "--out", path);
    path_in(path, sizeof(path), dir, "out.jsonl");
    RUN_ERROR(NULL, "Permission denied", "gen", "--set", "pretrain", "-n", "5", "-o", path);
    chmod(dir, 0755);
}

// An argument runs only the tests whose names match it (cmocka's filter: * and ? wildcards).
int main(int argc, char **argv) {
    if (argc > 1) cmocka_set_test_filter(argv[1]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_checkpoint_files),
        cmocka_unit_test(test_import_pth),
        cmocka_unit_test(test_bad_settings),
        cmocka_unit_test(test_bad_command_line),
        cmocka_unit_test(test_unused_settings_refused),
        cmocka_unit_test(test_steps_and_constant_rate),
        cmocka_unit_test(test_keys_and_presets),
        cmocka_unit_test(test_one_option_grammar),
        cmocka_unit_test(test_predict_bad_lines),
        cmocka_unit_test(test_gen),
        cmocka_unit_test(test_predict_round_trip),
        cmocka_unit_test(test_predict_streams),
        cmocka_unit_test(test_train_run_folder),
        cmocka_unit_test(test_resume_bit_identical),
        cmocka_unit_test(test_failed_start_and_finished_resume),
        cmocka_unit_test(test_interrupt_and_resume),
        cmocka_unit_test(test_kill_anywhere_resumes_identical),
        cmocka_unit_test(test_run_killed_anywhere_resumes_identical),
        cmocka_unit_test(test_locked_folder),
        cmocka_unit_test(test_eval_outputs_and_version),
        cmocka_unit_test(test_stdout_write_errors),
        cmocka_unit_test(test_progress_lines),
        cmocka_unit_test(test_divergence_then_lower_rate),
        cmocka_unit_test(test_output_under_a_file),
        cmocka_unit_test(test_read_only_folder),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
