// Interpretability (src/interp): the capture forward gives the model's own predictions and proper
// attention, and an ablation changes only the layers from its own on; knocking out a component
// whose output is already zero changes the MSE by exactly nothing, and every other one moves it; inspect's JSON is the model's
// prediction with whole attention distributions over the real tokens; a ridge probe recovers a planted linear fact and its shuffled control cannot; on the
// hand-built BFS transformer, whose algorithm is known, "vertex u is within k hops of vertex 1" is
// decodable (>= 0.99) exactly from the state where the construction has computed it, and the state
// before holds no more than k - 1 hops do; a random model's final states stay at chance; and the
// commands write their promised files and give one-line errors on bad input.
#include "testutil.h"

#include <cjson/cJSON.h>

#include "batch.h"
#include "bfs/bfs.h"
#include "interp/ablate.h"
#include "interp/capture.h"
#include "interp/inside.h"
#include "interp/inspect.h"
#include "interp/probe.h"
#include "interp/probe_bfs.h"
#include "model.h"
#include "rng.h"

// ---------------------------------------------------------------------------------------------
// The capture forward

static void small_model(Model *model, int capacity, uint64_t seed) {
    ModelConfig mc = model_config_default();
    mc.n_layers = 3;
    mc.d_model = 32;
    mc.d_ff = 64;
    model_create(model, &mc, capacity, 0);
    model_init(model, seed, 0);
}

static void fill_batch(Batch *b, int B, const char *set_name, uint64_t seed) {
    DataConfig dc = data_config_default();
    DataSet set;
    assert_int_equal(dataset_lookup(&set, set_name, &dc), 0);
    batch_alloc(b, B, data_config_seq_len(&dc));
    batch_fill(b, &set, &dc, seed, 0, 0);
}

static void test_capture_matches_model_forward(void **state) {
    int B = 64;
    Model model;
    small_model(&model, B, 3);
    Batch batch;
    fill_batch(&batch, B, "pretrain", 5);
    model_infer(&model, batch.tokens, NULL, B);
    Capture cap;
    capture_create(&cap, &model.config, B);
    capture_forward(&cap, &model, batch.tokens, B, NULL, 0, 0);
    double max_diff = 0.0;
    for (int b = 0; b < B; b++) max_diff = fmax(max_diff, fabs((double)cap.pred[b] - model.pred[b]));
    printf("  capture vs model_infer: max |pred diff| %.3e over %d examples\n", max_diff, B);
    // the packed forward merges repeated pairs and sums in another order: float rounding only
    assert_true(max_diff < 1e-4);
    // every real query's attention is a distribution over the real keys, none on padding
    int T = cap.T;
    for (int l = 0; l < cap.L; l++)
        for (int b = 0; b < B; b++)
            for (int h = 0; h < cap.NH; h++) {
                const float *row = capture_attention(&cap, l, h, b, T - 1);
                double sum = 0.0;
                for (int s = 0; s < T; s++) {
                    if (cap.pad[(size_t)b * T + s]) assert_true(row[s] == 0.0f);
                    sum += row[s];
                }
                assert_true(fabs(sum - 1.0) < 1e-5);
            }
    capture_free(&cap);
    batch_free(&batch);
    model_free(&model);
}

static void test_ablation_changes_only_what_follows(void **state) {
    int B = 32;
    Model model;
    small_model(&model, B, 4);
    Batch batch;
    fill_batch(&batch, B, "pretrain", 6);
    Capture cap;
    capture_create(&cap, &model.config, B);
    capture_reset_means(&cap);
    capture_forward(&cap, &model, batch.tokens, B, NULL, 0, 1);
    assert_int_equal(capture_finish_means(&cap), 0);
    float *base = malloc(B * sizeof(float));
    memcpy(base, cap.pred, B * sizeof(float));
    size_t plane = (size_t)B * cap.T * cap.C;
    float *layer1 = malloc(plane * sizeof(float));
    memcpy(layer1, cap.states + plane, plane * sizeof(float));
    // a no-op ablation from layer 1 reproduces the whole forward bit for bit
    Ablation none = {ABLATE_NONE, 0, 0};
    capture_forward(&cap, &model, batch.tokens, B, &none, 1, 0);
    assert_memory_equal(cap.pred, base, B * sizeof(float));
    for (int mode = ABLATE_ZERO; mode <= ABLATE_MEAN; mode++) {
        for (int head = -1; head < cap.NH; head++) {
            Ablation a = {(AblationMode)mode, 1, head};
            capture_forward(&cap, &model, batch.tokens, B, &a, 1, 0);
            // layer 1's input is untouched, its output and the predictions move
            assert_memory_equal(cap.states + plane, layer1, plane * sizeof(float));
            double change = 0.0;
            for (int b = 0; b < B; b++) change += fabs((double)cap.pred[b] - base[b]);
            assert_true(change > 1e-6 * B);
            // starting over from the tokens gives the same numbers
            float *from_layer = malloc(B * sizeof(float));
            memcpy(from_layer, cap.pred, B * sizeof(float));
            capture_forward(&cap, &model, batch.tokens, B, &a, 0, 0);
            assert_memory_equal(cap.pred, from_layer, B * sizeof(float));
            free(from_layer);
        }
    }
    free(layer1);
    free(base);
    capture_free(&cap);
    batch_free(&batch);
    model_free(&model);
}

static void test_inspect_example_is_the_model(void **state) {
    Model model;
    small_model(&model, 1, 8);
    DataConfig dc = data_config_default();
    DataSet set;
    assert_int_equal(dataset_lookup(&set, "onpath-large-target", &dc), 0);
    Example ex;
    dataset_sample_keyed(&ex, &set, &dc, 3, 0, 5);
    cJSON *json = inspect_example(&model, &ex, &dc);
    Batch b;
    batch_alloc(&b, 1, model.config.seq_len);
    batch_encode(&b, 0, &ex, &dc);
    model_infer(&model, b.tokens, NULL, 1);
    assert_true(fabs(cJSON_GetObjectItem(json, "prediction")->valuedouble - model.pred[0]) < 1e-4);
    int n = ex.graph.num_edges + 1;
    const cJSON *tokens = cJSON_GetObjectItem(json, "tokens");
    assert_int_equal(cJSON_GetArraySize(tokens), n);
    // the last token is the target pair (t, TARGET)
    const cJSON *last = cJSON_GetArrayItem(tokens, n - 1);
    assert_int_equal(cJSON_GetArrayItem(last, 0)->valueint, ex.target);
    assert_int_equal(cJSON_GetArrayItem(last, 1)->valueint, dc.max_v + 1);
    const cJSON *att = cJSON_GetObjectItem(json, "attention");
    assert_int_equal(cJSON_GetArraySize(att), model.config.n_layers);
    for (int l = 0; l < model.config.n_layers; l++) {
        const cJSON *layer = cJSON_GetArrayItem(att, l);
        assert_int_equal(cJSON_GetArraySize(layer), model.config.n_heads);
        for (int h = 0; h < model.config.n_heads; h++)
            for (int q = 0; q < n; q++) {
                // only real tokens are keys, so each row over them is a whole distribution
                const cJSON *row = cJSON_GetArrayItem(cJSON_GetArrayItem(layer, h), q);
                assert_int_equal(cJSON_GetArraySize(row), n);
                double sum = 0.0;
                for (int k = 0; k < n; k++) sum += cJSON_GetArrayItem(row, k)->valuedouble;
                assert_true(fabs(sum - 1.0) < 1e-5);
            }
    }
    const cJSON *norms = cJSON_GetObjectItem(json, "residual_norms");
    assert_int_equal(cJSON_GetArraySize(norms), model.config.n_layers + 1);
    // after a post-LayerNorm layer with unit gain and zero bias, every norm is sqrt(C)
    double norm = cJSON_GetArrayItem(cJSON_GetArrayItem(norms, 1), 0)->valuedouble;
    assert_true(fabs(norm - sqrt((double)model.config.d_model)) < 1e-3);
    cJSON *specs[3] = {inspect_graph_spec(json), inspect_attention_spec(json), inspect_norms_spec(json)};
    for (int i = 0; i < 3; i++) {
        assert_non_null(cJSON_GetObjectItem(specs[i], "$schema"));
        cJSON_Delete(specs[i]);
    }
    batch_free(&b);
    cJSON_Delete(json);
    model_free(&model);
}

// Knocking out a component whose output is already zero changes nothing, bit for bit; the intact
// row is the model's own MSE; real components matter.
static void test_ablation_of_silent_components_is_free(void **state) {
    Model model;
    small_model(&model, 8, 12);
    int C = model.config.d_model, hs = C / model.config.n_heads;
    // layer 1's feed-forward outputs 0; layer 2's head 0 feeds nothing through the output projection
    LayerParams w1 = model_layer(&model, 1, 0).w, w2 = model_layer(&model, 2, 0).w;
    memset(w1.linear2_w, 0, (size_t)C * model.config.d_ff * sizeof(float));
    memset(w1.linear2_b, 0, (size_t)C * sizeof(float));
    for (int o = 0; o < C; o++) memset(w2.out_proj_w + (size_t)o * C, 0, (size_t)hs * sizeof(float));
    DataConfig dc = data_config_default();
    AblationTable t;
    long count = 100;
    assert_int_equal(ablate_run(&t, &model, "pretrain", &dc, 2, count, 1 << ABLATE_ZERO | 1 << ABLATE_MEAN, 32), 0);
    assert_int_equal(t.num_rows, 1 + model.config.n_layers * (model.config.n_heads + 1) * 2);
    // the intact row against model_infer
    Batch b;
    DataSet set;
    dataset_lookup(&set, "pretrain", &dc);
    batch_alloc(&b, (int)count, model.config.seq_len);
    batch_fill(&b, &set, &dc, 2, 0, 0);
    Model big;
    model_create(&big, &model.config, (int)count, 0);
    memcpy(big.params_memory, model.params_memory, model.num_parameters * sizeof(float));
    double sse = model_infer(&big, b.tokens, b.labels, (int)count);
    printf("  intact MSE %.6f (model_infer %.6f)\n", ablate_mse(&t, 0), sse / count);
    assert_true(fabs(ablate_mse(&t, 0) - sse / count) < 1e-4 * (1.0 + sse / count));
    int silent = 0, moved = 0;
    for (int r = 1; r < t.num_rows; r++) {
        const AblationRow *row = &t.rows[r];
        double delta = ablate_mse(&t, r) - ablate_mse(&t, 0);
        if ((row->layer == 1 && row->head < 0) || (row->layer == 2 && row->head == 0)) {
            assert_true(delta == 0.0);
            silent++;
        } else {
            moved += delta != 0.0;
        }
    }
    assert_int_equal(silent, 4);
    assert_int_equal(moved, t.num_rows - 1 - 4);
    cJSON *specs[2] = {ablate_bar_spec(&t, "x"), ablate_label_spec(&t, "y")};
    for (int i = 0; i < 2; i++) cJSON_Delete(specs[i]);
    ablate_table_free(&t);
    batch_free(&b);
    model_free(&big);
    model_free(&model);
}

// ---------------------------------------------------------------------------------------------
// Ridge probes on planted facts

static void test_probe_recovers_planted_fact(void **state) {
    long n = 20000;
    int D = 6, layers = 2;
    ProbeData data;
    probe_data_init(&data, layers, D);
    int g = probe_add_group(&data, "tokens", n);
    int fy = probe_add_fact(&data, "linear", g, 0), fb = probe_add_fact(&data, "sign", g, 1);
    Rng rng = rng_stream(11, 0, 0);
    for (long r = 0; r < n; r++) {
        data.groups[g].example[r] = r / 2;  // two tokens per example
        float *x0 = data.groups[g].states + (size_t)r * D, *x1 = data.groups[g].states + ((size_t)n + r) * D;
        for (int i = 0; i < D; i++) {
            x0[i] = (float)rng_normal(&rng);  // layer 0: noise only
            x1[i] = (float)rng_normal(&rng);
        }
        // layer 1 holds the fact: y = 2 x1[0] - x1[3] + 0.5
        data.facts[fy].labels[r] = 2.0f * x1[0] - x1[3] + 0.5f;
        data.facts[fb].labels[r] = x1[2] > 0.3f;
    }
    ProbeTable t;
    assert_int_equal(probe_run(&t, &data, 1e-6, 1), 0);
    ProbeCell *c1 = probe_cell(&t, 1, fy), *c0 = probe_cell(&t, 0, fy), *b1 = probe_cell(&t, 1, fb);
    ProbeCell *b0 = probe_cell(&t, 0, fb);
    printf("  linear fact: R^2 %.4f at layer 1, %.4f at layer 0, shuffled %.4f\n", c1->score, c0->score, c1->shuffled);
    printf("  binary fact: accuracy %.4f at layer 1, %.4f at layer 0 (chance %.4f), shuffled %.4f\n", b1->score,
           b0->score, b1->chance, b1->shuffled);
    assert_true(c1->score > 0.9999);
    assert_true(fabs(c0->score) < 0.02 && fabs(c1->shuffled) < 0.02);
    // the fitted weights of the 5 other features carry sampling noise (~1/sqrt(16,000) each), which
    // blurs the cut for points next to it: about 1% of them
    assert_true(b1->score > 0.98);
    assert_true(fabs(b0->score - b1->chance) < 0.03 && fabs(b1->shuffled - b1->chance) < 0.03);
    // the split is by example: both tokens of an example are on the same side
    assert_int_equal(t.train[fy] + t.test[fy], n);
    assert_int_equal(t.test[fy], 2 * (n / 2 / 5));
    probe_table_free(&t);
    probe_data_free(&data);
}

// ---------------------------------------------------------------------------------------------
// Validation on the BFS transformer

// The probe table of the BFS model on N vertices (constructed, or with N(0,1) weights); data kept.
static void bfs_table(ProbeTable *t, ProbeData *data, int n, long count, int random_weights) {
    BfsConfig cfg = {n, 0, BFS_DEFAULT_SCALE, 0};
    BfsModel model;
    bfs_model_create(&model, &cfg, 256, 1);
    bfs_construct(&model);
    if (random_weights) probe_bfs_randomize(&model, 9);
    assert_int_equal(probe_collect_bfs(data, &model, 1, count), 0);
    assert_int_equal(probe_run(t, data, 1e-3, 1), 0);
    bfs_model_free(&model);
}

// The accuracy of answering within_k with within_{k-1}: all that a state knowing k - 1 hops has.
static double previous_hop_accuracy(const ProbeData *data, int k) {
    char name[32];
    const ProbeFact *now = NULL, *before = NULL;
    for (int f = 0; f < data->num_facts; f++) {
        snprintf(name, sizeof(name), "within_%d", k);
        if (strcmp(data->facts[f].name, name) == 0) now = &data->facts[f];
        snprintf(name, sizeof(name), "within_%d", k - 1);
        if (strcmp(data->facts[f].name, name) == 0) before = &data->facts[f];
    }
    assert_non_null(now);
    assert_non_null(before);
    long n = data->groups[now->group].n, same = 0;
    for (long r = 0; r < n; r++) same += now->labels[r] == before->labels[r];
    return (double)same / n;
}

static void test_bfs_probe_finds_hops_where_computed(void **state) {
    int N = 8;
    long count = test_under_sanitizer() ? 600 : 3000;
    ProbeTable t;
    ProbeData data;
    bfs_table(&t, &data, N, count, 0);
    for (int k = 1; k < N; k++) {
        char name[32];
        snprintf(name, sizeof(name), "within_%d", k);
        int f = probe_fact_index(&t, name);
        assert_true(f >= 0);
        // the construction: entering layer l, token u's reach is the set within l + 1 hops of u, so
        // within_k is computed by the state entering layer k - 1 (state 0 is the input)
        int computed = k - 1;
        const ProbeCell *at = probe_cell(&t, computed, f);
        printf("  %s: state %d %.4f (chance %.4f, shuffled %.4f)", name, computed, at->score, at->chance, at->shuffled);
        assert_true(at->score >= 0.99);
        if (computed == 0) {
            printf("\n");
            continue;
        }
        // before it, the probe reads no more than the k - 1 hops the state holds (2 points of
        // slack: a probe fitted on 4/5 of 3,000 graphs scores the other fifth)
        double before = probe_cell(&t, computed - 1, f)->score, rule = previous_hop_accuracy(&data, k);
        printf("; state %d %.4f, within_%d as within_%d %.4f\n", computed - 1, before, k - 1, k, rule);
        assert_true(before <= rule + 0.02);
        // and where k - 1 hops leave more than 3% of the answers open, the bar is not met before
        if (rule < 0.97) assert_true(before < 0.99);
    }
    probe_table_free(&t);
    probe_data_free(&data);
}

static void test_bfs_random_model_stays_at_chance(void **state) {
    int N = 8;
    ProbeTable t;
    ProbeData data;
    bfs_table(&t, &data, N, 3000, 1);  // fewer answer tokens leave R^2 noise near 0.1
    // the final state of a random model: the input is washed out and nothing is computed
    for (int f = 0; f < t.num_facts; f++) {
        const ProbeCell *c = probe_cell(&t, N, f);
        printf("  random model, final state, %s: %.4f (chance %.4f)\n", t.names[f], c->score, c->chance);
        if (t.binary[f])
            assert_true(fabs(c->score - c->chance) < 0.03);
        else
            assert_true(c->score < 0.1);
    }
    probe_table_free(&t);
    probe_data_free(&data);
}

// ---------------------------------------------------------------------------------------------
// The command line

#define RUN(...) TEST_RUN(NULL, __VA_ARGS__)

static void expect_error(const char *keyword, TestResult result) {
    const char *err = result.err;
    size_t len = strlen(err);
    if (result.status == 0) fail_msg("exit status 0 on bad input; stderr: %s", err);
    if (strncmp(err, "pathformer: ", 12) != 0 || len == 0 || err[len - 1] != '\n' || strchr(err, '\n') != err + len - 1)
        fail_msg("stderr is not one line starting 'pathformer: ':\n%s", err);
    if (!strstr(err, keyword)) fail_msg("error does not mention '%s': %s", keyword, err);
    test_result_free(&result);
}

static void expect_ok(TestResult result) {
    if (result.status != 0) fail_msg("exit status %d; stderr: %s", result.status, result.err);
    test_result_free(&result);
}

// A small random checkpoint (3 layers, d 32) in dir/small.safetensors.
static void write_small_checkpoint(const char *dir, char *path, size_t size) {
    Model model;
    small_model(&model, 8, 21);
    snprintf(path, size, "%s/small.safetensors", dir);
    assert_int_equal(model_save(&model, path, 0, NULL, NULL), 0);
    model_free(&model);
}

static void check_probe_files(const char *out, int layers, int facts) {
    char *csv = test_read_file(out, "probe.csv");
    int lines = 0;
    for (const char *c = csv; *c; c++) lines += *c == '\n';
    assert_int_equal(lines, 1 + layers * facts);
    free(csv);
    char *text = test_read_file(out, "probe.json");
    cJSON *json = cJSON_Parse(text);
    assert_non_null(json);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(json, "facts")), facts);
    assert_int_equal(cJSON_GetObjectItem(json, "layers")->valueint, layers);
    cJSON_Delete(json);
    free(text);
    free(test_read_file(out, "probe.vl.json"));
    char *html = test_read_file(out, "report.html");
    assert_non_null(strstr(html, "Linear probes"));
    free(html);
}

static void test_cli_probe(void **state) {
    char dir[512], out[600], ckpt[700];
    test_scratch_dir(dir, sizeof(dir), "probe");
    snprintf(out, sizeof(out), "%s/bfs", dir);
    TestResult r = RUN("probe", "--bfs", "4", "-n", "60", "--out", out);
    if (r.status != 0) fail_msg("probe --bfs failed: %s", r.err);
    assert_non_null(strstr(r.out, "within_3"));
    test_result_free(&r);
    check_probe_files(out, 5, 1 + 4 + 1);  // dist_u, within_1..4, dist_t over states 0..4
    write_small_checkpoint(dir, ckpt, sizeof(ckpt));
    snprintf(out, sizeof(out), "%s/ckpt", dir);
    expect_ok(RUN("probe", "--checkpoint", ckpt, "--set", "tune", "-n", "40", "--out", out));
    check_probe_files(out, 4, 2 + 3 + 1);  // dist_u, dist_v, within_1..3, dist_t over states 0..3
    r = RUN("probe", "--help");
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "usage: pathformer probe"));
    test_result_free(&r);
    expect_error("exactly one of", RUN("probe", "-n", "40"));
    expect_error("exactly one of", RUN("probe", "--bfs", "4", "--checkpoint", ckpt));
    expect_error("unknown option", RUN("probe", "--bfs", "4", "--bogus"));
    expect_error("-n", RUN("probe", "--bfs", "4", "-n", "2"));
    expect_error("--bfs", RUN("probe", "--bfs", "99"));
    expect_error("nope", RUN("probe", "--checkpoint", ckpt, "--set", "nope", "--out", out));
    expect_error("missing.safetensors", RUN("probe", "--checkpoint", "missing.safetensors"));
}

static void test_cli_inspect(void **state) {
    char dir[512], out[600], ckpt[700];
    test_scratch_dir(dir, sizeof(dir), "inspect");
    write_small_checkpoint(dir, ckpt, sizeof(ckpt));
    snprintf(out, sizeof(out), "%s/stdin", dir);
    TestResult r = TEST_RUN("\n{\"edges\": [[1,3],[3,4],[2,4]], \"target\": 4}\n", "inspect", "--checkpoint", ckpt,
                            "--out", out);
    if (r.status != 0) fail_msg("inspect failed: %s", r.err);
    assert_non_null(strstr(r.out, "dist(1, 4) = 2"));
    test_result_free(&r);
    char *text = test_read_file(out, "inspect.json");
    cJSON *json = cJSON_Parse(text);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(json, "tokens")), 4);
    assert_int_equal(cJSON_GetObjectItem(json, "vertices")->valueint, 4);  // the largest id named
    cJSON_Delete(json);
    free(text);
    char *html = test_read_file(out, "report.html");
    assert_non_null(strstr(html, "One graph inside the model"));
    free(html);
    free(test_read_file(out, "figures/graph.vl.json"));
    snprintf(out, sizeof(out), "%s/set", dir);
    expect_ok(RUN("inspect", "--checkpoint", ckpt, "--set", "tune", "--seed", "4", "--index", "2", "--out", out));
    free(test_read_file(out, "inspect.json"));
    expect_error("--checkpoint", RUN("inspect", "--set", "tune"));
    expect_error("not both", RUN("inspect", "--checkpoint", ckpt, "--set", "tune", "-i", "x.jsonl"));
    expect_error("--set NAME", RUN("inspect", "--checkpoint", ckpt, "--seed", "3"));
    expect_error("no graph", TEST_RUN("", "inspect", "--checkpoint", ckpt, "--out", out));
    expect_error("out of range", TEST_RUN("{\"edges\": [[1,99]], \"target\": 2}", "inspect", "--checkpoint", ckpt,
                                          "--out", out));
    expect_error("unknown option", RUN("inspect", "--checkpoint", ckpt, "--layer", "3"));
    expect_error("cannot read", RUN("inspect", "--checkpoint", ckpt, "-i", "/nonexistent/g.jsonl"));
}

static void test_cli_ablate(void **state) {
    char dir[512], out[600], ckpt[700];
    test_scratch_dir(dir, sizeof(dir), "ablate");
    write_small_checkpoint(dir, ckpt, sizeof(ckpt));
    snprintf(out, sizeof(out), "%s/out", dir);
    TestResult r = RUN("ablate", "--checkpoint", ckpt, "-n", "24", "--modes", "zero", "--out", out);
    if (r.status != 0) fail_msg("ablate failed: %s", r.err);
    assert_non_null(strstr(r.out, "L2 FFN"));
    test_result_free(&r);
    char *csv = test_read_file(out, "ablate.csv");
    int lines = 0;
    for (const char *c = csv; *c; c++) lines += *c == '\n';
    assert_int_equal(lines, 1 + 1 + 3 * 3);  // header, intact, 3 layers x (2 heads + FFN), one mode
    free(csv);
    free(test_read_file(out, "ablate.json"));
    free(test_read_file(out, "figures/ablate.vl.json"));
    char *html = test_read_file(out, "report.html");
    assert_non_null(strstr(html, "Ablations"));
    free(html);
    r = RUN("ablate", "--help");
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "usage: pathformer ablate"));
    test_result_free(&r);
    expect_error("--checkpoint", RUN("ablate", "-n", "4"));
    expect_error("unknown mode 'half'", RUN("ablate", "--checkpoint", ckpt, "--modes", "zero,half"));
    expect_error("-n", RUN("ablate", "--checkpoint", ckpt, "-n", "0"));
    expect_error("unknown option", RUN("ablate", "--checkpoint", ckpt, "--head", "1"));
    expect_error("nope", RUN("ablate", "--checkpoint", ckpt, "--set", "nope", "--out", out));
}

// `inside` on a run folder with two small checkpoints: the manifest lists the probe comparison,
// both ablations and the example graphs, each file there and a Vega-Lite spec.
static void test_cli_inside(void **state) {
    char dir[512], sub[700], ckpt[800];
    test_scratch_dir(dir, sizeof(dir), "inside");
    const char *models[2] = {"pretrain", "tune"};
    for (int i = 0; i < 2; i++) {
        snprintf(sub, sizeof(sub), "%s/%s", dir, models[i]);
        assert_int_equal(mkdir(sub, 0755), 0);
        Model model;
        small_model(&model, 8, 30 + (uint64_t)i);
        snprintf(ckpt, sizeof(ckpt), "%s/model.safetensors", sub);
        assert_int_equal(model_save(&model, ckpt, 0, NULL, NULL), 0);
        model_free(&model);
    }
    TestResult r = RUN("inside", "--run", dir, "--probe-n", "40", "--ablate-n", "16", "--graphs", "2");
    if (r.status != 0) fail_msg("inside failed: %s", r.err);
    test_result_free(&r);
    snprintf(sub, sizeof(sub), "%s/inside", dir);
    char *text = test_read_file(sub, "inside.json");
    cJSON *manifest = cJSON_Parse(text);
    assert_non_null(manifest);
    assert_string_equal(cJSON_GetObjectItem(manifest, "title")->valuestring, "Inside the model");
    const cJSON *figures = cJSON_GetObjectItem(manifest, "figures");
    assert_int_equal(cJSON_GetArraySize(figures), 1 + 2 + 2);  // probes, two ablations, two graphs
    const cJSON *f;
    cJSON_ArrayForEach(f, figures) {
        char *spec_text = test_read_file(sub, cJSON_GetObjectItem(f, "file")->valuestring);
        cJSON *spec = cJSON_Parse(spec_text);
        assert_non_null(cJSON_GetObjectItem(spec, "$schema"));
        cJSON_Delete(spec);
        free(spec_text);
    }
    // the probe comparison: pre-trained, fine-tuned, and their difference
    char *probes = test_read_file(sub, "probes.vl.json");
    cJSON *spec = cJSON_Parse(probes);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(spec, "hconcat")), 3);
    cJSON_Delete(spec);
    free(probes);
    cJSON_Delete(manifest);
    free(text);
    expect_error("--run", RUN("inside"));
    expect_error("no pre-trained model", RUN("inside", "--run", sub));
    expect_error("unknown option", RUN("inside", "--run", dir, "--layers", "2"));
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_capture_matches_model_forward),
    cmocka_unit_test(test_ablation_changes_only_what_follows),
    cmocka_unit_test(test_inspect_example_is_the_model),
    cmocka_unit_test(test_ablation_of_silent_components_is_free),
    cmocka_unit_test(test_probe_recovers_planted_fact),
    cmocka_unit_test(test_bfs_probe_finds_hops_where_computed),
    cmocka_unit_test(test_bfs_random_model_stays_at_chance),
    cmocka_unit_test(test_cli_probe),
    cmocka_unit_test(test_cli_inspect),
    cmocka_unit_test(test_cli_ablate),
    cmocka_unit_test(test_cli_inside),
};

int main(void) { return cmocka_run_group_tests(tests, NULL, NULL); }
