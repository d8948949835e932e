// The optimizer's schedule and clipping, and sweeps: every schedule shape gives its closed form at
// chosen steps (constant, linear warm-up and decay, half cosine, past the end); bad schedules are
// refused; clip_grad_norm gives the norm and scaling of torch.nn.utils.clip_grad_norm_ on known
// vectors (PyTorch itself is compared in test_parity); a sweep's grid and list expand as
// documented; a sweep whose run was cut short resumes to the very files of an uninterrupted sweep.
#include "testutil.h"

#include <ftw.h>

#include "adam.h"
#include "experiment/sweep.h"
#include "train.h"

static void expect_rate(const LrSchedule *s, long step, double want) {
    double got = lr_schedule_at(s, step);
    if (fabs(got - want) > 1e-12 * fmax(1.0, fabs(want))) fail_msg("step %ld: rate %.17g, want %.17g", step, got, want);
}

static void test_schedule_closed_forms(void **state) {
    (void)state;
    LrSchedule s;
    assert_int_equal(lr_schedule_parse(&s, "5e-4@6400,1e-4@3200"), 0);  // the blog's
    expect_rate(&s, 0, 5e-4);
    expect_rate(&s, 6399, 5e-4);
    expect_rate(&s, 6400, 1e-4);
    expect_rate(&s, 9599, 1e-4);
    expect_rate(&s, 20000, 1e-4);  // past the end: the last rate
    assert_int_equal(lr_schedule_total_steps(&s), 9600);

    // warm-up from 0 over 200 steps, then half a cosine from 1e-3 to 1e-5 over 800
    assert_int_equal(lr_schedule_parse(&s, "0..1e-3@200,1e-3..1e-5@800:cos"), 0);
    assert_int_equal(s.num_segments, 2);
    assert_int_equal(lr_schedule_segment_start(&s, 1), 200);
    expect_rate(&s, 0, 0.0);
    expect_rate(&s, 50, 1e-3 * 50 / 200);
    expect_rate(&s, 199, 1e-3 * 199 / 200);
    expect_rate(&s, 200, 1e-3);  // the cosine starts at its first rate
    expect_rate(&s, 600, 1e-5 + (1e-3 - 1e-5) * 0.5);  // half way: the mean of the ends
    expect_rate(&s, 200 + 800 / 3, 1e-5 + (1e-3 - 1e-5) * 0.5 * (1.0 + cos(M_PI * (double)(800 / 3) / 800)));
    expect_rate(&s, 999, 1e-5 + (1e-3 - 1e-5) * 0.5 * (1.0 + cos(M_PI * 799.0 / 800)));
    expect_rate(&s, 1000, 1e-5);  // past the end: where the last segment headed
    // found by fuzzing (fuzz/regressions/schedule): subnormal rates never come out negative
    assert_int_equal(lr_schedule_parse(&s, "0..2e-316@800:cos"), 0);
    for (long step = 0; step <= 800; step++) assert_true(lr_schedule_at(&s, step) >= 0.0);
    expect_rate(&s, 0, 0.0);
    // a linear decay, and rates that go up
    assert_int_equal(lr_schedule_parse(&s, "1e-3..0@10,2e-4..4e-4@4"), 0);
    expect_rate(&s, 3, 1e-3 * 7 / 10);
    expect_rate(&s, 12, 2e-4 + 2e-4 * 2 / 4);
    expect_rate(&s, 14, 4e-4);

    char text[256];
    assert_int_equal(lr_schedule_parse(&s, "0..0.001@200,0.001..1e-05@800:cos,5e-06@10"), 0);
    lr_schedule_format(&s, text, sizeof(text));
    assert_string_equal(text, "0..0.001@200,0.001..1e-05@800:cos,5e-06@10");

    const char *bad[] = {"", "1e-3", "1e-3@0", "1e-3@-5", "..1e-3@10", "0..@10", "1e-3@10:cos", "1e-3..2e-3@10:sin",
                         "1e-3@10,", "-1e-3@10", "1e-3..-1@10", "nan@10", "1e-3@10x", "0..1..2@5",
                         "1@6666665999999999991,1@6666665999999999991"};  // steps past LONG_MAX in total
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (lr_schedule_parse(&s, bad[i]) == 0) fail_msg("schedule '%s' was accepted", bad[i]);
}

static void test_clip_grad_norm(void **state) {
    (void)state;
    float g[4] = {3.0f, 0.0f, -4.0f, 0.0f};  // norm 5
    double norm = clip_grad_norm(g, 4, 10.0);
    assert_true(norm == 5.0);
    assert_true(g[0] == 3.0f && g[2] == -4.0f);  // under the limit: untouched
    norm = clip_grad_norm(g, 4, 1.0);
    assert_true(norm == 5.0);
    float coef = (float)(1.0 / (5.0 + 1e-6));  // PyTorch: max_norm / (total_norm + 1e-6)
    assert_true(g[0] == 3.0f * coef && g[2] == -4.0f * coef && g[1] == 0.0f);
    double after = sqrt((double)g[0] * g[0] + (double)g[2] * g[2]);
    assert_true(after < 1.0 && after > 1.0 - 1e-6);
}

// ---------------------------------------------------------------------------------------------
// Sweeps

static void test_sweep_grid_and_list(void **state) {
    (void)state;
    static SweepSpec spec;
    const char *settings[] = {"batch_size=64", "lr=1e-3@4", "threads=1", "lr=3e-3@4", "beta2=0.99", "beta2=0.999"};
    uint64_t seeds[] = {1, 7};
    assert_int_equal(sweep_build(&spec, "tiny", 6, settings, NULL, seeds, 2), 0);
    assert_int_equal(spec.num_base, 2);  // batch_size and threads hold for every run
    assert_string_equal(spec.base[0], "batch_size=64");
    assert_string_equal(spec.base[1], "threads=1");
    assert_int_equal(spec.num_runs, 2 * 2 * 2);  // lr x beta2 x seeds, the first axis slowest
    assert_string_equal(spec.runs[0].name, "r01-s1");
    assert_string_equal(spec.runs[1].name, "r01-s7");
    assert_int_equal(spec.runs[1].seed, 7);
    assert_string_equal(spec.runs[0].settings[0], "lr=1e-3@4");
    assert_string_equal(spec.runs[0].settings[1], "beta2=0.99");
    assert_string_equal(spec.runs[2].settings[1], "beta2=0.999");
    assert_string_equal(spec.runs[4].settings[0], "lr=3e-3@4");
    assert_string_equal(spec.runs[7].name, "r04-s7");

    char dir[512], path[600];
    test_scratch_dir(dir, sizeof(dir), "sweep-list");
    snprintf(path, sizeof(path), "%s/list.jsonl", dir);
    const char *list = "{\"lr\": \"1e-3@4\", \"batch_size\": 32}\n\n{\"clip_grad_norm\": 0.5}\n";
    assert_int_equal(pf_write_file_atomic(path, list, strlen(list)), 0);
    assert_int_equal(sweep_build(&spec, "tiny", 1, (const char *[]){"threads=1"}, path, seeds, 1), 0);
    assert_int_equal(spec.num_runs, 2);
    assert_int_equal(spec.runs[0].num_settings, 2);
    assert_string_equal(spec.runs[0].settings[1], "batch_size=32");
    assert_string_equal(spec.runs[1].settings[0], "clip_grad_norm=0.5");
    // a list and a grid together, a bad line, a bad setting: refused
    assert_int_equal(sweep_build(&spec, "tiny", 2, (const char *[]){"lr=1@2", "lr=2@2"}, path, seeds, 1), -1);
    const char *bad = "{\"lr\": [1, 2]}\n";
    assert_int_equal(pf_write_file_atomic(path, bad, strlen(bad)), 0);
    assert_int_equal(sweep_build(&spec, "tiny", 0, NULL, path, seeds, 1), -1);
    assert_int_equal(sweep_build(&spec, "tiny", 1, (const char *[]){"noequals"}, NULL, seeds, 1), -1);
    snprintf(path, sizeof(path), "rm -rf %s", dir);
    assert_int_equal(system(path), 0);
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

// The columns of sweep.csv that do not depend on timing (all but train_seconds).
static char *csv_without_times(const char *dir) {
    char *text = test_read_file(dir, "sweep.csv");
    char *out = mallocCheck(strlen(text) + 1), *o = out;
    for (char *line = text; *line;) {
        char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        int column = 0, quoted = 0;
        for (size_t i = 0; i < len; i++) {
            if (line[i] == '"') quoted = !quoted;
            if (line[i] == ',' && !quoted) column++;
            if (column != 5 || (line[i] == ',' && !quoted)) *o++ = line[i];  // column 5 is train_seconds
        }
        *o++ = '\n';
        line += len + (end ? 1 : 0);
    }
    *o = '\0';
    free(text);
    return out;
}

// A sweep whose first run was cut short after a checkpoint (as a killed sweep leaves it) continues
// that run from its checkpoint and ends with the files of a sweep that ran straight through.
static void test_sweep_resume_identical(void **state) {
    (void)state;
    static SweepSpec spec;
    const char *settings[] = {"threads=1", "checkpoint_every=2", "lr=1e-3@6", "lr=2e-3@6"};
    uint64_t seeds[] = {3};
    assert_int_equal(sweep_build(&spec, "tiny", 4, settings, NULL, seeds, 1), 0);
    spec.budget_examples = 64 * 5;  // 5 of the 6 steps
    spec.eval_examples = 128;
    char straight[512], pieces[512], run_dir[700];
    test_scratch_dir(straight, sizeof(straight), "sweep-straight");
    test_scratch_dir(pieces, sizeof(pieces), "sweep-pieces");
    if (sweep_run(&spec, straight, 0) != 0) fail_msg("%s", pf_last_error());

    // the pieces: run 1 trained 2 steps and checkpointed, then the process died
    RunConfig cfg;
    assert_int_equal(config_preset(&cfg, "tiny"), 0);
    for (int i = 0; i < spec.num_base; i++) assert_int_equal(config_set(&cfg, spec.base[i]), 0);
    assert_int_equal(config_set(&cfg, spec.runs[0].settings[0]), 0);
    cfg.seed = 3;
    cfg.eval_examples = 0;
    assert_int_equal(config_finalize(&cfg), 0);
    snprintf(run_dir, sizeof(run_dir), "%s/runs/%s", pieces, spec.runs[0].name);
    assert_int_equal(train_run(&cfg, run_dir, 0, 2), 0);
    if (sweep_run(&spec, pieces, 0) != 0) fail_msg("%s", pf_last_error());
    assert_int_equal(sweep_run(&spec, pieces, 0), -1);  // a second start is refused
    assert_non_null(strstr(pf_last_error(), "--resume"));
    if (sweep_run(NULL, pieces, 1) != 0) fail_msg("resume of a finished sweep: %s", pf_last_error());

    char *a = csv_without_times(straight), *b = csv_without_times(pieces);
    assert_string_equal(a, b);
    free(a);
    free(b);
    for (int r = 0; r < spec.num_runs; r++) {
        char name[128];
        snprintf(name, sizeof(name), "runs/%s/model.safetensors", spec.runs[r].name);
        size_t size_a, size_b;
        char path_a[800], path_b[800];
        snprintf(path_a, sizeof(path_a), "%s/%s", straight, name);
        snprintf(path_b, sizeof(path_b), "%s/%s", pieces, name);
        char *ma = pf_read_file(path_a, &size_a), *mb = pf_read_file(path_b, &size_b);
        assert_non_null(ma);
        assert_non_null(mb);
        assert_int_equal(size_a, size_b);
        assert_memory_equal(ma, mb, size_a);
        free(ma);
        free(mb);
    }
    assert_int_equal(sweep_run(NULL, straight, 0), -1);  // no spec, no resume: refused, not crashed
    char *html = test_read_file(straight, "report.html");
    assert_non_null(strstr(html, "sweep-mse-examples"));
    free(html);
    nftw(straight, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    nftw(pieces, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schedule_closed_forms),
        cmocka_unit_test(test_clip_grad_norm),
        cmocka_unit_test(test_sweep_grid_and_list),
        cmocka_unit_test(test_sweep_resume_identical),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
