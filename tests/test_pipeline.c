// The experiment pipeline (`pathformer run`) and its report: phase-change detection on synthetic
// curves with known drop points, the training-log reader, the report API, experiment settings, the
// whole pipeline on the tiny preset (every artefact, metrics.json against the CSV logs and the
// evaluations, resume after a stop, single phases), and bad input (one-line errors, nothing lost).
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "experiment/experiment.h"
#include "experiment/losscurve.h"
#include "experiment/report.h"
#include "rng.h"
#include "safetensors.h"
#include "experiment/seeds.h"
#include "experiment/sweep.h"


static char scratch[512];

// ---------------------------------------------------------------------------------------------
// Helpers

#define RUN(...) TEST_RUN(NULL, __VA_ARGS__)

static void expect_success(TestResult r) {
    if (r.status != 0) fail_msg("exit status %d; stderr:\n%s", r.status, r.err);
    test_result_free(&r);
}

// A failure whose last line on stderr is "pathformer: ..." mentioning keyword. With whole_output,
// that line must be all the output (errors found before any work starts).
static void expect_error(TestResult r, const char *keyword, int whole_output) {
    if (r.status == 0) fail_msg("exit status 0 on bad input; stderr:\n%s", r.err);
    if (whole_output && r.out[0]) fail_msg("output on stdout besides the error:\n%s", r.out);
    size_t len = strlen(r.err);
    if (len == 0 || r.err[len - 1] != '\n') fail_msg("output does not end with a line:\n%s", r.err);
    r.err[len - 1] = '\0';
    char *last = strrchr(r.err, '\n');
    last = last ? last + 1 : r.err;
    if (whole_output && last != r.err) fail_msg("more than one line of output:\n%s", r.err);
    if (strncmp(last, "pathformer: ", 12) != 0) fail_msg("last line is not 'pathformer: ...':\n%s", r.err);
    if (!strstr(last, keyword)) fail_msg("error does not mention '%s': %s", keyword, last);
    test_result_free(&r);
}

static cJSON *read_json(const char *dir, const char *name) {
    char *text = test_read_file(dir, name);
    cJSON *json = cJSON_Parse(text);
    free(text);
    if (!json) fail_msg("%s/%s is not JSON", dir, name);
    return json;
}

static int exists(const char *dir, const char *name) {
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    struct stat st;
    return stat(path, &st) == 0 && st.st_size > 0;
}

static double number(const cJSON *object, const char *key) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(object, key);
    if (!cJSON_IsNumber(item)) fail_msg("'%s' is not a number", key);
    return item->valuedouble;
}

static void make_dir(char *out, size_t size, const char *name) {
    snprintf(out, size, "%s/%s", scratch, name);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

// ---------------------------------------------------------------------------------------------
// Phase-change detection

// A plateau at `high` that falls to `low` around `drop` (a steep logistic in log space), after a
// fall from `start` during the first steps, with multiplicative noise and some missing points.
static void synthetic_curve(double *loss, long n, long drop, double start, double high, double low, double noise,
                            uint64_t seed) {
    Rng rng = rng_stream(seed, 0, 0);
    for (long i = 0; i < n; i++) {
        double t = (double)(i - drop) / 6.0;
        double base = log(low) + (log(high) - log(low)) / (1.0 + exp(t));
        base += (log(start) - log(high)) * exp(-(double)i / 4.0);
        double jitter = noise * (2.0 * rng_uniform(&rng) - 1.0);
        loss[i] = rng_uniform(&rng) < 0.05 ? NAN : exp(base + jitter);
    }
}

static void test_phase_change_known_drops(void **state) {
    (void)state;
    enum { N = 2000 };
    double *loss = mallocCheck(sizeof(double) * N);
    const long drops[] = {150, 420, 777, 1500};
    for (int k = 0; k < 4; k++) {
        for (uint64_t seed = 1; seed <= 5; seed++) {
            synthetic_curve(loss, N, drops[k], 200.0, 10.0, 0.05, 0.5, seed);
            int window = phase_change_window(N);
            long found = phase_change_index(loss, N, window, 3.0);
            if (labs(found - drops[k]) > window / 2)
                fail_msg("drop at %ld (seed %llu) found at %ld (window %d)", drops[k], (unsigned long long)seed, found,
                         window);
        }
    }
    free(loss);
}

static void test_phase_change_none_or_largest(void **state) {
    (void)state;
    enum { N = 1000 };
    double *loss = mallocCheck(sizeof(double) * N);
    int window = phase_change_window(N);
    // noise and the fall from the initialization only: no phase change
    synthetic_curve(loss, N, 5 * N, 200.0, 10.0, 0.05, 0.8, 7);
    assert_int_equal(phase_change_index(loss, N, window, 3.0), -1);
    // a gentle steady decline (10x over the run) is not a phase change either
    for (long i = 0; i < N; i++) loss[i] = 10.0 * pow(0.1, (double)i / N);
    assert_int_equal(phase_change_index(loss, N, window, 3.0), -1);
    // two drops: the first that is large enough (4x at 300) is the phase change, not the larger
    // (100x at 700); a drop below the factor (2x at 300) is not
    for (long i = 0; i < N; i++) loss[i] = 40.0 / (i >= 300 ? 4.0 : 1.0) / (i >= 700 ? 100.0 : 1.0);
    assert_true(labs(phase_change_index(loss, N, window, 3.0) - 300) <= 1);
    for (long i = 0; i < N; i++) loss[i] = 40.0 / (i >= 300 ? 2.0 : 1.0) / (i >= 700 ? 100.0 : 1.0);
    assert_true(labs(phase_change_index(loss, N, window, 3.0) - 700) <= 1);
    // a label that never occurs: nothing to detect
    for (long i = 0; i < N; i++) loss[i] = NAN;
    assert_int_equal(phase_change_index(loss, N, window, 3.0), -1);
    // too short a curve
    assert_int_equal(phase_change_index(loss, 10, 5, 3.0), -1);
    free(loss);
}

// ---------------------------------------------------------------------------------------------
// Training-log reader

static void test_losslog_read(void **state) {
    (void)state;
    char path[600];
    snprintf(path, sizeof(path), "%s/log.csv", scratch);
    const char *csv = "step,lr,mse,mse_1,mse_2,mse_3,examples_per_s,elapsed_s\n"
                      "0,0.001,9.5,1,,3,100.0,0.5\n"
                      "1,0.0005,4.25,0.5,2,,200.0,1.0\n";
    assert_int_equal(pf_write_file_atomic(path, csv, strlen(csv)), 0);
    LossLog log;
    assert_int_equal(losslog_read(&log, path), 0);
    assert_int_equal(log.n, 2);
    assert_int_equal(log.max_label, 3);
    assert_int_equal(log.step[1], 1);
    assert_true(log.lr[1] == 0.0005);
    assert_true(log.mse[1] == 4.25);
    assert_true(losslog_label(&log, 0, 1) == 1.0);
    assert_true(isnan(losslog_label(&log, 0, 2)));
    assert_true(isnan(losslog_label(&log, 1, 3)));
    assert_true(log.elapsed_s[1] == 1.0);
    losslog_free(&log);

    const char *bad[] = {"step,lr,mse,mse_1,examples_per_s,elapsed_s\n0,1,x,1,1,1\n",
                         "step,lr,mse,mse_1,examples_per_s,elapsed_s\n0,1,2,1,1\n", "hello\n"};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(pf_write_file_atomic(path, bad[i], strlen(bad[i])), 0);
        assert_int_equal(losslog_read(&log, path), -1);
    }
    snprintf(path, sizeof(path), "%s/missing.csv", scratch);
    assert_int_equal(losslog_read(&log, path), -1);
}

// ---------------------------------------------------------------------------------------------
// Report API

static void test_report_api(void **state) {
    (void)state;
    char dir[600];
    make_dir(dir, sizeof(dir), "report-api");
    Report *report = report_create("A <title>");
    report_add_section(report, "Section & more");
    report_add_text(report, "text with </script> inside");
    const char *header[] = {"a", "b"}, *cells[] = {"1", "<2>"};
    report_add_table(report, 2, header, 1, cells);
    cJSON *spec = cJSON_Parse("{\"mark\":\"bar\",\"data\":{\"values\":[{\"x\":1,\"y\":\"</script>\"}]},"
                              "\"encoding\":{\"x\":{\"field\":\"x\",\"type\":\"ordinal\"}}}");
    assert_int_equal(report_add_vegalite(report, "bars", "caption", spec), 0);
    assert_int_equal(report_add_vegalite(report, "bars", "again", spec), -1);        // duplicate name
    assert_int_equal(report_add_vegalite(report, "no/slash", "caption", spec), -1);  // file-unsafe name
    cJSON_Delete(spec);
    char spec_path[700];
    snprintf(spec_path, sizeof(spec_path), "%s/other.vl.json", scratch);
    const char *other = "{\"mark\":\"point\",\"data\":{\"values\":[{\"x\":1}]},"
                        "\"encoding\":{\"x\":{\"field\":\"x\",\"type\":\"quantitative\"}}}";
    assert_int_equal(pf_write_file_atomic(spec_path, other, strlen(other)), 0);
    assert_int_equal(report_add_vegalite_file(report, "other", "from a file", spec_path), 0);
    assert_int_equal(report_add_vegalite_file(report, "missing", "no file", "/nonexistent.vl.json"), -1);
    assert_int_equal(report_write(report, dir), 0);
    report_free(report);

    char *html = test_read_file(dir, "report.html");
    assert_non_null(strstr(html, "<h1>A &lt;title&gt;</h1>"));
    assert_non_null(strstr(html, "<h2>Section &amp; more</h2>"));
    assert_non_null(strstr(html, "<td>&lt;2&gt;</td>"));
    assert_non_null(strstr(html, "vegaEmbed"));
    // every script element closes where it should: the only "</script" are the closing tags
    long opened = 0, closed = 0;
    for (const char *p = html; (p = strstr(p, "<script")); p++) opened++;
    for (const char *p = html; (p = strstr(p, "</script")); p++) closed++;
    assert_int_equal(opened, closed);
    free(html);
    assert_true(exists(dir, "figures/bars.vl.json"));
    assert_true(exists(dir, "figures/other.vl.json"));
}

// ---------------------------------------------------------------------------------------------
// Experiment settings

static void test_experiment_config(void **state) {
    (void)state;
    ExperimentConfig cfg, back;
    assert_int_equal(experiment_preset(&cfg, "blog-as-written"), 0);
    assert_int_equal(experiment_finalize(&cfg), 0);
    // SPEC §4 as the blog describes it
    assert_string_equal(cfg.pretrain.lr_schedule, "5e-4@6400,1e-4@3200");
    assert_int_equal(cfg.pretrain.batch_size, 32768);
    assert_string_equal(cfg.tune.lr_schedule, "1e-5@100");
    assert_int_equal(cfg.tune.batch_size, 32768);
    assert_true(cfg.tune.weight_decay == 1e-5f);
    assert_true(cfg.pretrain.weight_decay == 0.0f);
    assert_int_equal(cfg.pretrain.model.n_layers, 11);
    assert_string_equal(cfg.tune.set, "tune");
    assert_string_equal(cfg.tune_optimizer, "new");
    // SPEC §4 as the authors' code ran it: the pre-training Adam goes on at its last rate, 50 steps
    assert_int_equal(experiment_preset(&cfg, "blog"), 0);
    assert_int_equal(experiment_finalize(&cfg), 0);
    assert_string_equal(cfg.pretrain.lr_schedule, "5e-4@6400,1e-4@3200");
    assert_string_equal(cfg.tune.lr_schedule, "1e-4@50");
    assert_int_equal(cfg.tune.batch_size, 32768);
    assert_true(cfg.tune.weight_decay == 0.0f);
    assert_string_equal(cfg.tune_optimizer, "continue");
    assert_int_equal(experiment_set(&cfg, "tune_optimizer=sometimes"), -1);
    assert_int_equal(experiment_set(&cfg, "tune.beta2=0.99"), 0);
    assert_int_equal(experiment_finalize(&cfg), -1);  // a continued Adam keeps its betas
    assert_non_null(strstr(pf_last_error(), "beta2"));
    assert_int_equal(experiment_set(&cfg, "tune_optimizer=new"), 0);
    assert_int_equal(experiment_finalize(&cfg), 0);

    assert_int_equal(experiment_preset(&cfg, "quick"), 0);
    assert_int_equal(experiment_set(&cfg, "d_model=32"), 0);
    assert_int_equal(experiment_set(&cfg, "tune.lr=2e-4@50"), 0);
    assert_int_equal(experiment_set(&cfg, "eval_examples=100"), 0);
    assert_int_equal(experiment_set(&cfg, "tune_optimizer=auto"), 0);
    assert_int_equal(experiment_finalize(&cfg), 0);
    assert_int_equal(cfg.tune.model.d_model, 32);  // the shared model shape
    assert_string_equal(cfg.tune.lr_schedule, "2e-4@50");
    assert_int_equal(cfg.eval_examples, 100);
    char *json = experiment_to_json(&cfg);
    assert_int_equal(experiment_from_json(&back, json), 0);
    assert_int_equal(experiment_finalize(&back), 0);
    char *json_back = experiment_to_json(&back);
    assert_string_equal(json, json_back);
    free(json);
    free(json_back);

    assert_int_equal(experiment_preset(&cfg, "nope"), -1);
    assert_non_null(strstr(pf_last_error(), "nope"));
    experiment_preset(&cfg, "tiny");
    assert_int_equal(experiment_set(&cfg, "bogus=1"), -1);
    assert_int_equal(experiment_set(&cfg, "tune.d_model=8"), -1);  // shared keys are not fine-tuning's own
    assert_int_equal(experiment_set(&cfg, "set=tune"), -1);
    assert_int_equal(experiment_set(&cfg, "eval_examples=0"), -1);
    assert_int_equal(experiment_set(&cfg, "noequals"), -1);
    assert_int_equal(experiment_set(&cfg, "tune.lr=fast"), -1);  // not a rate, nor a schedule
    assert_int_equal(experiment_set(&cfg, "tune.lr=1e-3@0"), 0);  // a schedule, checked as a whole
    assert_int_equal(experiment_finalize(&cfg), -1);
    // found by fuzzing (fuzz/regressions/settings): a count too large for a long is refused
    assert_int_equal(experiment_from_json(&back, "{\"preset\": \"tiny\", \"eval_examples\": 2.5e100, \"pretrain\": {}, "
                                                 "\"tune\": {}}"),
                     -1);
    assert_non_null(strstr(pf_last_error(), "eval_examples"));
    assert_int_equal(phase_lookup("tune"), PHASE_TUNE);
    assert_int_equal(phase_lookup("fly"), -1);
}

// ---------------------------------------------------------------------------------------------
// The pipeline end to end (tiny preset)

static int csv_rows(const char *dir, const char *name) {
    char *text = test_read_file(dir, name);
    int rows = -1;
    for (char *p = text; *p; p++) rows += *p == '\n';
    free(text);
    return rows;
}

// The last row's MSE (third column) of a train.csv.
static double csv_final_mse(const char *dir, const char *name) {
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    LossLog log;
    if (losslog_read(&log, path) != 0) fail_msg("%s", pf_last_error());
    double mse = log.mse[log.n - 1];
    losslog_free(&log);
    return mse;
}

// The per-label charts of pre-training and fine-tuning give each label the same colour (one fixed
// domain 1..15), a histogram's axis shows every label, and step axes tick at whole steps.
static void check_figure_details(const char *dir) {
    const char *label_charts[] = {"figures/pretrain-label-loss.vl.json", "figures/tune-label-loss.vl.json"};
    char *domains[2];
    for (int i = 0; i < 2; i++) {
        cJSON *spec = read_json(dir, label_charts[i]);
        const cJSON *layer = cJSON_GetArrayItem(cJSON_GetObjectItem(spec, "layer"), 0);
        const cJSON *enc = cJSON_GetObjectItem(layer, "encoding");
        const cJSON *domain = cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(enc, "color"), "scale"),
                                                  "domain");
        assert_int_equal(cJSON_GetArraySize(domain), 15);
        domains[i] = cJSON_PrintUnformatted(domain);
        const cJSON *axis = cJSON_GetObjectItem(cJSON_GetObjectItem(enc, "x"), "axis");
        assert_int_equal((int)cJSON_GetNumberValue(cJSON_GetObjectItem(axis, "tickMinStep")), 1);
        cJSON_Delete(spec);
    }
    assert_string_equal(domains[0], domains[1]);
    free(domains[0]);
    free(domains[1]);
    cJSON *hist = read_json(dir, "figures/hist-tuned-any-small.vl.json");
    const cJSON *layer = cJSON_GetArrayItem(cJSON_GetObjectItem(hist, "layer"), 0);
    const cJSON *x = cJSON_GetObjectItem(cJSON_GetObjectItem(layer, "encoding"), "x");
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(cJSON_GetObjectItem(x, "scale"), "domain")), 15);
    cJSON_Delete(hist);
}

static void check_run_folder(const char *dir) {
    const char *files[] = {"experiment.json", "state.json", "metrics.json", "report.html",
                           "pretrain/config.json", "pretrain/train.csv", "pretrain/model.safetensors",
                           "pretrain/optimizer.safetensors", "pretrain/summary.json", "tune/config.json",
                           "tune/train.csv", "tune/model.safetensors", "tune/optimizer.safetensors",
                           "tune/summary.json", "figures/pretrain-loss.vl.json", "figures/pretrain-label-loss.vl.json",
                           "figures/tune-loss.vl.json", "figures/label-distributions.vl.json"};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
        if (!exists(dir, files[i])) fail_msg("%s/%s is missing or empty", dir, files[i]);
    check_figure_details(dir);
    int have_node = system("node --version >/dev/null 2>&1") == 0;
    for (int i = 0; i < NUM_EVALS; i++) {
        char name[256];
        snprintf(name, sizeof(name), "eval/%s.json", EVALS[i].name);
        if (!exists(dir, name)) fail_msg("%s/%s is missing", dir, name);
        snprintf(name, sizeof(name), "figures/hist-%s.vl.json", EVALS[i].name);
        if (!exists(dir, name)) fail_msg("%s/%s is missing", dir, name);
        snprintf(name, sizeof(name), "figures/hist-%s.svg", EVALS[i].name);
        if (have_node && !exists(dir, name)) fail_msg("%s/%s is missing (node is there)", dir, name);
    }
    cJSON *state = read_json(dir, "state.json");
    for (int i = 0; i < NUM_PHASES; i++) {
        cJSON *phase = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(state, "phases"),
                                                        PHASE_NAMES[i]);
        if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(phase, "done")))
            fail_msg("phase %s not done", PHASE_NAMES[i]);
    }
    cJSON_Delete(state);

    // metrics.json against the CSV logs and the evaluation files
    cJSON *metrics = read_json(dir, "metrics.json");
    ExperimentConfig cfg;
    if (experiment_load(&cfg, dir) != 0) fail_msg("%s", pf_last_error());
    const char *phases[] = {"pretrain", "tune"};
    const RunConfig *configs[] = {&cfg.pretrain, &cfg.tune};
    for (int k = 0; k < 2; k++) {
        char csv[64];
        snprintf(csv, sizeof(csv), "%s/train.csv", phases[k]);
        cJSON *training = cJSON_GetObjectItemCaseSensitive(metrics, phases[k]);
        LrSchedule schedule;
        lr_schedule_parse(&schedule, configs[k]->lr_schedule);
        assert_int_equal((long)number(training, "steps"), csv_rows(dir, csv));
        assert_int_equal((long)number(training, "steps"), lr_schedule_total_steps(&schedule));
        assert_true(number(training, "examples") == number(training, "steps") * (double)configs[k]->batch_size);
        assert_true(fabs(number(training, "final_train_mse") - csv_final_mse(dir, csv)) <=
                    1e-9 * csv_final_mse(dir, csv));
        assert_true(number(training, "examples_per_second") > 0);
        // one entry per segment of the schedule
        assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(training, "lr_changes")),
                         schedule.num_segments);
    }
    cJSON *evaluations = cJSON_GetObjectItemCaseSensitive(metrics, "evaluations");
    assert_int_equal(cJSON_GetArraySize(evaluations), NUM_EVALS);
    for (int i = 0; i < NUM_EVALS; i++) {
        cJSON *item = cJSON_GetArrayItem(evaluations, i);
        char name[256];
        snprintf(name, sizeof(name), "eval/%s.json", EVALS[i].name);
        cJSON *eval = read_json(dir, name);
        assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(item, "set")), EVALS[i].set);
        assert_true(number(item, "mse") == number(eval, "mse"));
        assert_true(number(item, "accuracy") == number(eval, "accuracy"));
        assert_true(number(item, "examples") == (double)cfg.eval_examples);
        cJSON *published = cJSON_GetObjectItemCaseSensitive(item, "published_mse");
        if (isfinite(EVALS[i].published_mse))
            assert_true(number(item, "published_mse") == EVALS[i].published_mse);
        else
            assert_true(cJSON_IsNull(published));
        cJSON_Delete(eval);
    }
    assert_true(number(metrics, "wall_seconds") > 0);
    assert_true(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(metrics, "label_distributions")) > 0);
    // the report shows the metrics' numbers
    char *html = test_read_file(dir, "report.html");
    char mse_text[32];
    snprintf(mse_text, sizeof(mse_text), "<td>%.4g</td>", number(cJSON_GetArrayItem(evaluations, 2), "mse"));
    if (!strstr(html, mse_text)) fail_msg("report.html does not show the tuned MSE %s", mse_text);
    assert_non_null(strstr(html, "<td>0.01472</td>"));  // a published number beside it
    free(html);
    cJSON_Delete(metrics);
}

static void test_pipeline_end_to_end(void **state) {
    (void)state;
    char dir[600];
    make_dir(dir, sizeof(dir), "run-full");
    expect_success(RUN("run", "--preset", "tiny", "--out", dir));
    check_run_folder(dir);
    // a finished run resumes to nothing and keeps its results
    char *before = test_read_file(dir, "eval/tuned-tune.json");
    expect_success(RUN("run", "--out", dir, "--resume"));
    char *after = test_read_file(dir, "eval/tuned-tune.json");
    assert_string_equal(before, after);
    free(before);
    free(after);
}

static const char *authors_checkpoint(char *buf, size_t size) {
    const char *dir = getenv("PF_REFERENCE_DIR");
    snprintf(buf, size, "%s/authors_pretrained.safetensors", dir && dir[0] ? dir : "../shared/reference");
    return buf;
}

// `run --from` the authors' checkpoint, at a small size: no pre-training, every other artefact,
// their weights evaluated right, a new Adam as the stand-in for their optimizer state (which the
// file lacks), and their fine-tuning curve in the report; continue is refused without that state.
static void test_pipeline_from_authors(void **state) {
    (void)state;
    char dir[600], authors[1024];
    authors_checkpoint(authors, sizeof(authors));
    make_dir(dir, sizeof(dir), "run-from-authors");
    expect_error(RUN("run", "--from", authors, "--out", dir, "tune_optimizer=continue"), "no optimizer state", 1);
    assert_false(exists(dir, "experiment.json"));
    expect_success(RUN("run", "--from", authors, "--out", dir, "tune.batch_size=64", "tune.lr=1e-4@3",
                       "eval_examples=96"));
    const char *files[] = {"experiment.json", "state.json", "metrics.json", "report.html",
                           "pretrain/model.safetensors", "tune/config.json", "tune/train.csv",
                           "tune/model.safetensors", "tune/optimizer.safetensors", "tune/summary.json",
                           "figures/tune-loss.vl.json", "figures/tune-vs-authors.vl.json",
                           "figures/label-distributions.vl.json"};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
        if (!exists(dir, files[i])) fail_msg("%s/%s is missing or empty", dir, files[i]);
    for (int i = 0; i < NUM_EVALS; i++) {
        char name[256];
        snprintf(name, sizeof(name), "eval/%s.json", EVALS[i].name);
        if (!exists(dir, name)) fail_msg("%s/%s is missing", dir, name);
    }
    assert_false(exists(dir, "pretrain/train.csv"));
    assert_false(exists(dir, "pretrain/optimizer.safetensors"));
    assert_int_equal(csv_rows(dir, "tune/train.csv"), 3);
    cJSON *metrics = read_json(dir, "metrics.json");
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(metrics, "preset")), "blog");
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(metrics, "tune_optimizer")), "new");
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(metrics, "pretrained_from")), authors);
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(metrics, "pretrain")));
    // the authors' weights, evaluated here: SPEC §6 gives about 0.002 on pretrain, 0.56 on tune
    cJSON *evaluations = cJSON_GetObjectItemCaseSensitive(metrics, "evaluations");
    assert_true(number(cJSON_GetArrayItem(evaluations, 0), "mse") < 0.05);
    assert_true(number(cJSON_GetArrayItem(evaluations, 1), "mse") < 1.5);
    cJSON_Delete(metrics);
    char *html = test_read_file(dir, "report.html");
    assert_non_null(strstr(html, "authors' log"));
    assert_non_null(strstr(html, "stand-in"));
    free(html);
}

// `run --from` a pathformer run's pre-trained checkpoint continues its Adam: the fine-tuning's
// optimizer counts the pre-training's updates and its own.
static void test_pipeline_from_own_run_continues(void **state) {
    (void)state;
    char source[600], dir[600], from[700];
    make_dir(source, sizeof(source), "run-source");
    make_dir(dir, sizeof(dir), "run-continued");
    expect_success(RUN("run", "--preset", "tiny", "--out", source, "--phase", "pretrain"));
    snprintf(from, sizeof(from), "%s/pretrain/model.safetensors", source);
    expect_success(RUN("run", "--preset", "tiny", "--from", from, "--out", dir, "tune_optimizer=continue"));
    assert_true(exists(dir, "pretrain/optimizer.safetensors"));
    cJSON *metrics = read_json(dir, "metrics.json");
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(metrics, "tune_optimizer")),
                        "continue");
    cJSON_Delete(metrics);
    ExperimentConfig cfg;
    if (experiment_load(&cfg, dir) != 0) fail_msg("%s", pf_last_error());
    LrSchedule pre, tune;
    lr_schedule_parse(&pre, cfg.pretrain.lr_schedule);
    lr_schedule_parse(&tune, cfg.tune.lr_schedule);
    char path[800];
    snprintf(path, sizeof(path), "%s/tune/optimizer.safetensors", dir);
    StFile file;
    if (st_load(&file, path) != 0) fail_msg("%s", pf_last_error());
    char expected[32];
    snprintf(expected, sizeof(expected), "%ld", lr_schedule_total_steps(&pre) + lr_schedule_total_steps(&tune));
    assert_string_equal(st_metadata(&file, "adam_step"), expected);
    st_free(&file);
    // the same weights with a new Adam end elsewhere
    char fresh[600];
    make_dir(fresh, sizeof(fresh), "run-new-adam");
    expect_success(RUN("run", "--preset", "tiny", "--from", from, "--out", fresh, "tune_optimizer=new"));
    char *a = test_read_file(dir, "eval/tuned-tune.json"), *b = test_read_file(fresh, "eval/tuned-tune.json");
    assert_true(strcmp(a, b) != 0);
    free(a);
    free(b);
}

// The interval arithmetic on known values, and `run --seeds` on the tiny preset: a folder per seed,
// each the very run `--preset tiny seed=S` gives, and the summary's numbers from their metrics.
static void test_pipeline_seeds(void **state) {
    (void)state;
    double values[] = {1.0, 2.0, 3.0};
    Interval r = interval95(values, 3);
    assert_true(fabs(r.mean - 2.0) < 1e-15 && fabs(r.sd - 1.0) < 1e-15);
    assert_true(fabs(r.half_width - 4.303 / sqrt(3.0)) < 1e-12);  // t(0.975, 2) = 4.303
    r = interval95(values, 1);
    assert_true(r.mean == 1.0 && isnan(r.half_width));
    assert_true(t975(1) == 12.706 && t975(10) == 2.228 && t975(1000) == 1.96);

    char dir[600], single[600];
    make_dir(dir, sizeof(dir), "run-seeds");
    make_dir(single, sizeof(single), "run-seed-2");
    expect_success(RUN("run", "--preset", "tiny", "--seeds", "1,2", "--out", dir, "--stop-after", "3"));
    assert_false(exists(dir, "metrics.json"));  // stopped inside seed 1's pre-training
    expect_error(RUN("run", "--out", dir, "--seeds", "1,3", "--resume"), "other seeds", 1);
    expect_success(RUN("run", "--out", dir, "--resume"));
    expect_success(RUN("run", "--preset", "tiny", "--out", single, "seed=2"));
    char *a = test_read_file(dir, "seed-2/eval/tuned-tune.json"), *b = test_read_file(single, "eval/tuned-tune.json");
    assert_string_equal(a, b);
    free(a);
    free(b);
    cJSON *metrics = read_json(dir, "metrics.json");
    cJSON *tuned = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(metrics, "numbers"), 2);
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(tuned, "name")), "tuned-tune");
    double per_seed[2];
    for (int k = 0; k < 2; k++) {
        char name[64];
        snprintf(name, sizeof(name), "seed-%d/eval/tuned-tune.json", k + 1);
        cJSON *eval = read_json(dir, name);
        per_seed[k] = number(eval, "mse");
        cJSON_Delete(eval);
        assert_true(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(tuned, "values"), k)->valuedouble ==
                    per_seed[k]);
    }
    Interval want = interval95(per_seed, 2);
    assert_true(fabs(number(tuned, "mean") - want.mean) <= 1e-12 * want.mean);
    assert_true(fabs(number(tuned, "half_width") - want.half_width) <= 1e-12 * want.half_width);
    assert_true(cJSON_IsBool(cJSON_GetObjectItemCaseSensitive(tuned, "published_inside_interval")));
    cJSON_Delete(metrics);
    assert_true(exists(dir, "report.html"));
    expect_error(RUN("run", "--preset", "tiny", "--seeds", "1,1", "--out", dir), "twice", 1);
}

// A run stopped inside pre-training, then one phase at a time, then resumed (once with another
// thread count), ends where an uninterrupted run ends, and finished phases are not redone.
static void test_pipeline_stop_phase_resume(void **state) {
    (void)state;
    char full[600], dir[600];
    make_dir(full, sizeof(full), "run-reference");
    make_dir(dir, sizeof(dir), "run-pieces");
    expect_success(RUN("run", "--preset", "tiny", "--out", full, "seed=5"));
    expect_success(RUN("run", "--preset", "tiny", "--out", dir, "seed=5", "--stop-after", "3"));
    assert_false(exists(dir, "pretrain/summary.json"));
    assert_int_equal(csv_rows(dir, "pretrain/train.csv"), 3);
    expect_error(RUN("run", "--out", dir, "--phase", "tune"), "needs phase 'pretrain'", 1);
    expect_success(RUN("run", "--out", dir, "--phase", "pretrain"));
    assert_true(exists(dir, "pretrain/summary.json"));
    expect_error(RUN("run", "--out", dir, "--phase", "pretrain"), "finished", 1);
    char *model_before = test_read_file(dir, "pretrain/train.csv");
    // stops inside fine-tuning; on another thread count, which changes no bit (test_determinism)
    expect_success(RUN("run", "--out", dir, "--resume", "threads=2", "--stop-after", "2"));
    assert_false(exists(dir, "tune/summary.json"));
    expect_success(RUN("run", "--out", dir, "--resume"));
    char *model_after = test_read_file(dir, "pretrain/train.csv");
    assert_string_equal(model_before, model_after);  // pre-training was not redone
    free(model_before);
    free(model_after);
    check_run_folder(dir);
    for (int i = 0; i < NUM_EVALS; i++) {
        char name[256];
        snprintf(name, sizeof(name), "eval/%s.json", EVALS[i].name);
        char *a = test_read_file(full, name), *b = test_read_file(dir, name);
        if (strcmp(a, b) != 0) fail_msg("%s differs between the interrupted and the uninterrupted run", name);
        free(a);
        free(b);
    }
    // the report phase alone rewrites the report, with the figures other code left in extra/
    char extra[700];
    snprintf(extra, sizeof(extra), "%s/extra", dir);
    assert_int_equal(pf_mkdir_p(extra), 0);
    snprintf(extra, sizeof(extra), "%s/extra/demo.vl.json", dir);
    const char *spec = "{\"mark\":\"point\",\"data\":{\"values\":[{\"x\":1}]},"
                       "\"encoding\":{\"x\":{\"field\":\"x\",\"type\":\"quantitative\"}}}";
    assert_int_equal(pf_write_file_atomic(extra, spec, strlen(spec)), 0);
    expect_success(RUN("run", "--out", dir, "--phase", "report"));
    assert_true(exists(dir, "figures/extra-demo.vl.json"));
    char *html = test_read_file(dir, "report.html");
    assert_non_null(strstr(html, "More figures"));
    assert_non_null(strstr(html, "data-name=\"extra-demo\""));
    free(html);

    // without Node: one line says the SVG export was skipped, and the HTML is still written
    char *path = getenv("PATH") ? strdup(getenv("PATH")) : NULL;
    char report_path[700];
    snprintf(report_path, sizeof(report_path), "%s/report.html", dir);
    assert_int_equal(unlink(report_path), 0);
    setenv("PATH", "/nonexistent", 1);
    TestResult r = RUN("run", "--out", dir, "--phase", "report");
    if (path) setenv("PATH", path, 1);
    free(path);
    if (r.status != 0 || !strstr(r.err, "node not found")) fail_msg("status %d, output:\n%s", r.status, r.err);
    test_result_free(&r);
    assert_true(exists(dir, "report.html"));
}

// ---------------------------------------------------------------------------------------------
// Bad input

static void test_bad_input(void **state) {
    (void)state;
    char dir[600], fresh[600];
    make_dir(dir, sizeof(dir), "run-bad");
    make_dir(fresh, sizeof(fresh), "run-never");
    expect_error(RUN("run", "--preset", "huge", "--out", fresh), "unknown preset 'huge'", 1);
    expect_error(RUN("run", "--preset", "tiny", "--out", fresh, "colour=red"), "unknown setting 'colour'", 1);
    expect_error(RUN("run", "--preset", "tiny", "--out", fresh, "tune.n_layers=3"), "tune.n_layers", 1);
    expect_error(RUN("run", "--preset", "tiny", "--out", fresh, "--phase", "fly"), "unknown phase 'fly'", 1);
    expect_error(RUN("run", "--preset", "tiny", "--out", fresh, "--bogus"), "--bogus", 1);
    expect_error(RUN("run", "--resume"), "--out", 1);
    expect_error(RUN("run", "--out", fresh, "--resume"), "no run to resume", 1);
    assert_false(exists(fresh, "experiment.json"));

    expect_success(RUN("run", "--preset", "tiny", "--out", dir));
    char *experiment = test_read_file(dir, "experiment.json"), *metrics = test_read_file(dir, "metrics.json");
    char *model = test_read_file(dir, "tune/model.safetensors");
    expect_error(RUN("run", "--preset", "tiny", "--out", dir), "already holds a run", 1);
    expect_error(RUN("run", "--out", dir, "--resume", "lr=1e-2@10"), "different config", 1);
    expect_error(RUN("run", "--out", dir, "--resume", "tune.batch_size=3"), "different config", 1);
    char *experiment_after = test_read_file(dir, "experiment.json"),
         *metrics_after = test_read_file(dir, "metrics.json");
    char *model_after = test_read_file(dir, "tune/model.safetensors");
    assert_string_equal(experiment, experiment_after);
    assert_string_equal(metrics, metrics_after);
    assert_int_equal(memcmp(model, model_after, 64), 0);
    free(experiment), free(metrics), free(model), free(experiment_after), free(metrics_after), free(model_after);

    // an output folder that cannot be made or written
    char file[600], below_file[700];
    snprintf(file, sizeof(file), "%s/a-file", scratch);
    assert_int_equal(pf_write_file_atomic(file, "x", 1), 0);
    snprintf(below_file, sizeof(below_file), "%s/run", file);
    expect_error(RUN("run", "--preset", "tiny", "--out", below_file), "cannot create folder", 1);
    expect_error(RUN("run", "--preset", "tiny", "--out", "/proc/self"), "cannot write", 1);
    if (geteuid() != 0) {  // root writes through permissions
        char locked[600];
        make_dir(locked, sizeof(locked), "locked");
        assert_int_equal(mkdir(locked, 0555), 0);
        expect_error(RUN("run", "--preset", "tiny", "--out", locked), "cannot write", 1);
    }
}

// A full disk, simulated by a file-size limit the child inherits: the run fails with one line at
// the first file that does not fit, what was written stays, and --resume finishes once there is room.
static void test_full_output_folder(void **state) {
    (void)state;
    char dir[600];
    make_dir(dir, sizeof(dir), "run-full-disk");
    struct rlimit old_limit, limit;
    getrlimit(RLIMIT_FSIZE, &old_limit);
    limit = old_limit;
    limit.rlim_cur = 200 * 1024;  // checkpoints and logs fit, the ~1 MB report does not
    void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
    setrlimit(RLIMIT_FSIZE, &limit);
    TestResult r = RUN("run", "--preset", "tiny", "--out", dir);
    setrlimit(RLIMIT_FSIZE, &old_limit);
    signal(SIGXFSZ, old_handler);
    expect_error(r, "report.html", 0);
    assert_true(exists(dir, "tune/model.safetensors"));
    assert_true(exists(dir, "eval/tuned-any-small.json"));
    assert_false(exists(dir, "report.html"));
    DIR *folder = opendir(dir);  // the failed write left no temporary file behind
    for (struct dirent *entry; (entry = readdir(folder));)
        if (strstr(entry->d_name, ".tmp.")) fail_msg("temporary file %s left in %s", entry->d_name, dir);
    closedir(folder);
    expect_success(RUN("run", "--out", dir, "--resume"));
    check_run_folder(dir);
}

static int setup(void **state) {
    (void)state;
    test_scratch_dir(scratch, sizeof(scratch), "pipeline");
    return 0;
}

static int teardown(void **state) {
    (void)state;
    nftw(scratch, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

// The files a resume reads back: good ones give their contents; a damaged one is refused with an
// error naming the file, never a crash or a half-read state.
static void test_run_folder_files_parsed_or_refused(void **state) {
    (void)state;
    int done[NUM_PHASES];
    double seconds[NUM_PHASES];
    assert_int_equal(experiment_parse_state(done, seconds,
                                            "{\"phases\": {\"pretrain\": {\"done\": true, \"seconds\": 12.5}, "
                                            "\"tune\": {\"done\": false}}}",
                                            "state.json"),
                     0);
    assert_true(done[PHASE_PRETRAIN]);
    assert_false(done[PHASE_TUNE]);
    assert_true(seconds[PHASE_PRETRAIN] == 12.5);
    const char *bad_states[] = {"", "[]", "{\"phases\": 3}", "{\"phases\": {\"tune\": {\"seconds\": -1}}}",
                                "{\"phases\": {\"tune\": {\"seconds\": 1e300}}}"};
    for (size_t i = 0; i < sizeof(bad_states) / sizeof(bad_states[0]); i++) {
        assert_int_equal(experiment_parse_state(done, seconds, bad_states[i], "state.json"), -1);
        assert_non_null(strstr(pf_last_error(), "state.json"));
    }
    uint64_t seeds[MAX_SEEDS];
    int n;
    assert_int_equal(experiment_parse_seeds(seeds, &n, "{\"seeds\": [\"1\", \"18446744073709551615\"]}", "seeds.json"), 0);
    assert_int_equal(n, 2);
    assert_true(seeds[1] == UINT64_MAX);
    const char *bad_seeds[] = {"{}", "{\"seeds\": []}", "{\"seeds\": [\"\"]}", "{\"seeds\": [\"-1\"]}",
                               "{\"seeds\": [\"18446744073709551616\"]}", "{\"seeds\": [\"2\", \"2\"]}",
                               "{\"seeds\": [\" 2\"]}", "{\"seeds\": [2]}"};
    for (size_t i = 0; i < sizeof(bad_seeds) / sizeof(bad_seeds[0]); i++) {
        if (experiment_parse_seeds(seeds, &n, bad_seeds[i], "seeds.json") != -1) fail_msg("accepted %s", bad_seeds[i]);
        assert_non_null(strstr(pf_last_error(), "seeds.json"));
    }
    SweepSpec *spec = mallocCheck(sizeof(SweepSpec));
    const char *good = "{\"preset\": \"tiny\", \"settings\": [\"lr=1e-3@4\"], \"budget_examples\": 100, "
                       "\"budget_seconds\": 0, \"eval_examples\": 64, \"runs\": [{\"name\": \"r01-s1\", \"seed\": \"1\", "
                       "\"settings\": [\"batch_size=8\"]}]}";
    assert_int_equal(sweep_parse_spec(spec, good), 0);
    assert_int_equal(spec->num_runs, 1);
    assert_string_equal(spec->runs[0].settings[0], "batch_size=8");
    const char *bad_sweeps[] = {
        "{",
        "{\"preset\": \"tiny\", \"runs\": [], \"eval_examples\": 0}",
        "{\"preset\": \"tiny\", \"eval_examples\": 64, \"runs\": [{\"name\": \"../x\", \"seed\": \"1\"}]}",
        "{\"preset\": \"tiny\", \"eval_examples\": 64, \"runs\": [{\"name\": \"a\", \"seed\": \"1\"}, "
        "{\"name\": \"a\", \"seed\": \"2\"}]}",
    };
    for (size_t i = 0; i < sizeof(bad_sweeps) / sizeof(bad_sweeps[0]); i++) {
        if (sweep_parse_spec(spec, bad_sweeps[i]) != -1) fail_msg("accepted %s", bad_sweeps[i]);
        assert_non_null(strstr(pf_last_error(), "sweep.json"));
    }
    free(spec);
}

// An argument runs only the tests whose names match it (cmocka's filter: * and ? wildcards).
int main(int argc, char **argv) {
    if (argc > 1) cmocka_set_test_filter(argv[1]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_phase_change_known_drops),
        cmocka_unit_test(test_phase_change_none_or_largest),
        cmocka_unit_test(test_losslog_read),
        cmocka_unit_test(test_report_api),
        cmocka_unit_test(test_experiment_config),
        cmocka_unit_test(test_pipeline_end_to_end),
        cmocka_unit_test(test_pipeline_stop_phase_resume),
        cmocka_unit_test(test_pipeline_from_authors),
        cmocka_unit_test(test_pipeline_seeds),
        cmocka_unit_test(test_pipeline_from_own_run_continues),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_run_folder_files_parsed_or_refused),
        cmocka_unit_test(test_full_output_folder),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
