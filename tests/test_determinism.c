// The same bits everywhere (README: Reproducibility). A short training run gives byte-identical
// checkpoints (model.safetensors, optimizer.safetensors) and train.csv rows (every column but the
// two timings, examples_per_s and elapsed_s) with 1, 2, 3, 4 and 8 threads and with every variant of
// the kernels this CPU runs; once on shapes the kernels take (heads of 16) and once on shapes they
// hand to the reference loops (heads of 20, width 40). And the golden run: the SHA-256 of its files is
// the one written below, on every machine and instruction set. A deliberate change of the numbers
// (a new summation order, a new initialization) updates the GOLDEN_ constants in the same commit,
// and the commit says why; drift never passes unnoticed.
#include "testutil.h"

#include <ftw.h>

#include "config.h"
#include "ops/ops.h"
#include "train.h"

// The golden run's files, as SHA-256 in hex (test_golden_run prints what it got).
static const char *const GOLDEN_MODEL = "01bc9c3858f25ef9da0c90f3cd9c3c0bc531047eacf7efea4d553dca34ba67e1";
static const char *const GOLDEN_OPTIMIZER = "ba2454621ba3caa77e33f4bc8dd2b114cc0ff322c9059d645988d9cda89066fc";
static const char *const GOLDEN_LOG = "d76f63c8d9f4382148acdb5e1745d9fb14d53b5d986c8305672ce9e7fd0a4d6e";

// ---------------------------------------------------------------------------------------------
// SHA-256 (FIPS 180-4), for the golden hashes

typedef struct {
    uint32_t h[8];
    uint8_t block[64];
    size_t used;
    uint64_t bytes;
} Sha256;

static uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

static void sha256_block(Sha256 *s, const uint8_t *p) {
    static const uint32_t K[64] = {
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = s->h[0], b = s->h[1], c = s->h[2], d = s->h[3], e = s->h[4], f = s->h[5], g = s->h[6], h = s->h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
        uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        h = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    s->h[0] += a, s->h[1] += b, s->h[2] += c, s->h[3] += d, s->h[4] += e, s->h[5] += f, s->h[6] += g, s->h[7] += h;
}

static void sha256_init(Sha256 *s) {
    static const uint32_t H0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(s->h, H0, sizeof(H0));
    s->used = 0;
    s->bytes = 0;
}

static void sha256_update(Sha256 *s, const void *data, size_t n) {
    const uint8_t *p = data;
    s->bytes += n;
    while (n > 0) {
        size_t take = 64 - s->used < n ? 64 - s->used : n;
        memcpy(s->block + s->used, p, take);
        s->used += take;
        p += take;
        n -= take;
        if (s->used == 64) {
            sha256_block(s, s->block);
            s->used = 0;
        }
    }
}

// The digest as 64 hex digits into hex (65 bytes).
static void sha256_hex(Sha256 *s, char *hex) {
    uint64_t bits = s->bytes * 8;
    uint8_t pad = 0x80, zero = 0, length[8];
    sha256_update(s, &pad, 1);
    while (s->used != 56) sha256_update(s, &zero, 1);
    for (int i = 0; i < 8; i++) length[i] = (uint8_t)(bits >> (56 - 8 * i));
    sha256_update(s, length, 8);
    for (int i = 0; i < 8; i++) snprintf(hex + 8 * i, 9, "%08x", s->h[i]);
}

static void sha256_of(const void *data, size_t n, char *hex) {
    Sha256 s;
    sha256_init(&s);
    sha256_update(&s, data, n);
    sha256_hex(&s, hex);
}

// ---------------------------------------------------------------------------------------------
// Runs and their files

typedef struct {
    char *model, *optimizer, *log;  // the two checkpoint files, and train.csv without its timings
    size_t model_size, optimizer_size;
} RunFiles;

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

// train.csv with the last two columns (examples_per_s, elapsed_s) of every line cut off.
static char *log_without_times(const char *dir) {
    char *text = test_read_file(dir, "train.csv");
    char *out = mallocCheck(strlen(text) + 1), *o = out;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        char *cut = strrchr(line, ',');
        if (cut) *cut = '\0';
        cut = strrchr(line, ',');
        if (cut) *cut = '\0';
        o += sprintf(o, "%s\n", line);
    }
    free(text);
    return out;
}

static char *read_whole(const char *dir, const char *name, size_t *size) {
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    char *data = pf_read_file(path, size);
    if (!data) fail_msg("%s", pf_last_error());
    return data;
}

// Trains the settings (a NULL-terminated list over the tiny preset) with `threads` threads on the
// kernel variant named, and reads back its files.
static RunFiles train_files(const char *const *settings, int threads, const char *variant) {
    if (ops_set_kernels_variant(variant) != 0) fail_msg("kernel variant %s is not available", variant);
    RunConfig cfg;
    assert_int_equal(config_preset(&cfg, "tiny"), 0);
    for (int i = 0; settings[i]; i++)
        if (config_set(&cfg, settings[i]) != 0) fail_msg("%s", pf_last_error());
    cfg.threads = threads;
    assert_int_equal(config_finalize(&cfg), 0);
    char scratch[512], run_dir[600];
    test_scratch_dir(scratch, sizeof(scratch), "determinism");
    snprintf(run_dir, sizeof(run_dir), "%s/run", scratch);
    if (train_run(&cfg, run_dir, 0, 0) != 0) fail_msg("%s", pf_last_error());
    RunFiles files;
    files.model = read_whole(run_dir, "model.safetensors", &files.model_size);
    files.optimizer = read_whole(run_dir, "optimizer.safetensors", &files.optimizer_size);
    files.log = log_without_times(run_dir);
    nftw(scratch, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return files;
}

static void run_files_free(RunFiles *f) {
    free(f->model);
    free(f->optimizer);
    free(f->log);
}

static void expect_same_files(const RunFiles *want, const RunFiles *got, const char *what) {
    if (want->model_size != got->model_size || memcmp(want->model, got->model, want->model_size) != 0)
        fail_msg("%s: model.safetensors differs from the first run's", what);
    if (want->optimizer_size != got->optimizer_size ||
        memcmp(want->optimizer, got->optimizer, want->optimizer_size) != 0)
        fail_msg("%s: optimizer.safetensors differs from the first run's", what);
    if (strcmp(want->log, got->log) != 0) fail_msg("%s: train.csv differs from the first run's", what);
}

// The variants this CPU runs (ops_kernel_variants: names separated by spaces), at most 8.
static int runnable_variants(char names[8][16]) {
    char list[128];
    snprintf(list, sizeof(list), "%s", ops_kernel_variants());
    int n = 0;
    for (char *name = strtok(list, " "); name && n < 8; name = strtok(NULL, " ")) snprintf(names[n++], 16, "%s", name);
    return n;
}

// Every thread count on every variant, against the first variant's run on one thread.
static void expect_same_everywhere(const char *const *settings, const char *what) {
    char variants[8][16];
    int num_variants = runnable_variants(variants);
    const char *initial = ops_kernels_variant();
    static const int THREADS[] = {1, 2, 3, 4, 8};
    // under the sanitizers (ten times slower) 1 and 3 threads: one worker, and three that share
    // 10 micro-batches unevenly; under qemu-user one thread (its emulated threads stall libgomp's
    // ordered loop for minutes on a 2-core machine), the thread counts being covered natively
    size_t num_threads = test_emulated() ? 1 : test_under_sanitizer() ? 3 : sizeof(THREADS) / sizeof(THREADS[0]);
    RunFiles first = train_files(settings, 1, variants[0]);
    for (int v = 0; v < num_variants; v++)
        for (size_t t = 0; t < num_threads; t++) {
            if (test_under_sanitizer() && THREADS[t] == 2) continue;
            if (v == 0 && t == 0) continue;
            RunFiles files = train_files(settings, THREADS[t], variants[v]);
            char label[128];
            snprintf(label, sizeof(label), "%s, kernels %s, %d threads", what, variants[v], THREADS[t]);
            expect_same_files(&first, &files, label);
            run_files_free(&files);
        }
    printf("%s: the same bytes on kernels %s, each on %s threads\n", what, ops_kernel_variants(),
           test_emulated() ? "1" : test_under_sanitizer() ? "1 and 3" : "1, 2, 3, 4 and 8");
    run_files_free(&first);
    assert_int_equal(ops_set_kernels_variant(initial), 0);
}

// The golden run: 4 steps of a 2-layer width-32 model (heads of 16, the kernels' shapes), 300
// examples a step in 10 micro-batches of 32 (a partial tree), a cosine schedule, repeats weighted.
static const char *const GOLDEN_SETTINGS[] = {"d_model=32",         "n_layers=2",       "n_heads=2",
                                              "d_ff=64",            "batch_size=300",   "micro_batch=32",
                                              "lr=1e-3..1e-4@4:cos", "seed=7",          "eval_examples=0",
                                              "checkpoint_every=0", NULL};

static void test_same_bits_on_every_thread_count_and_variant(void **state) {
    (void)state;
    expect_same_everywhere(GOLDEN_SETTINGS, "kernels' shapes");
}

// Width 40 with heads of 20: the attention and the layernorm run the reference loops.
static void test_same_bits_on_reference_shapes(void **state) {
    (void)state;
    const char *const settings[] = {"d_model=40",     "n_layers=2",     "n_heads=2", "d_ff=72",
                                    "batch_size=200", "micro_batch=50", "lr=1e-3@3", "seed=11",
                                    "eval_examples=0", "checkpoint_every=0", NULL};
    expect_same_everywhere(settings, "reference shapes");
}

static void test_golden_run(void **state) {
    (void)state;
    RunFiles files = train_files(GOLDEN_SETTINGS, test_emulated() ? 1 : 2, ops_kernels_variant());
    char model[65], optimizer[65], log[65];
    sha256_of(files.model, files.model_size, model);
    sha256_of(files.optimizer, files.optimizer_size, optimizer);
    sha256_of(files.log, strlen(files.log), log);
    printf("golden run (kernels %s): model %s\n                          optimizer %s\n                          "
           "train.csv %s\n",
           ops_kernels_variant(), model, optimizer, log);
    fflush(stdout);
    int same = strcmp(model, GOLDEN_MODEL) == 0 && strcmp(optimizer, GOLDEN_OPTIMIZER) == 0 && strcmp(log, GOLDEN_LOG) == 0;
    run_files_free(&files);
    if (!same)
        fail_msg("the golden run's files changed: a deliberate change of the numbers updates GOLDEN_MODEL, "
                 "GOLDEN_OPTIMIZER and GOLDEN_LOG in tests/test_determinism.c (printed above)");
}

// The SHA-256 itself, on FIPS 180-4's examples.
static void test_sha256_known_answers(void **state) {
    (void)state;
    char hex[65];
    sha256_of("abc", 3, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    sha256_of("", 0, hex);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    const char *two_blocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    sha256_of(two_blocks, strlen(two_blocks), hex);
    assert_string_equal(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

// An argument runs only the tests whose names match it (cmocka's filter: * and ? wildcards);
// scripts/variant_tests.sh runs the golden run alone on an emulated CPU.
int main(int argc, char **argv) {
    if (argc > 1) cmocka_set_test_filter(argv[1]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sha256_known_answers),
        cmocka_unit_test(test_same_bits_on_every_thread_count_and_variant),
        cmocka_unit_test(test_same_bits_on_reference_shapes),
        cmocka_unit_test(test_golden_run),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
