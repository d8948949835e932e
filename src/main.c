// The command line: gen, train, eval, predict.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>

#include "batch.h"
#include "cli.h"
#include "common.h"
#include "config.h"
#include "eval.h"
#include "experiment/experiment.h"
#include "graph.h"
#include "interop.h"
#include "experiment/seeds.h"
#include "experiment/sweep.h"
#include "model.h"
#include "ops/ops.h"
#include "train.h"
#include "bfs/bfs_cli.h"

// What `pathformer --version` prints: the version and what this binary was built with.
static void print_version(void) {
    printf("pathformer %s\n", PF_VERSION);
#if defined(__clang__)
    printf("compiler: clang %s\n", __clang_version__);
#elif defined(__GNUC__)
    printf("compiler: gcc %s\n", __VERSION__);
#endif
    printf("kernels: %s (this CPU runs: %s; PF_KERNELS=NAME chooses); matmul backend: %s\n", ops_kernels_variant(),
           ops_kernel_variants(), ops_backend());
#ifdef PF_HAVE_BLAS
    printf("BLAS: OpenBLAS\n");
#else
    printf("BLAS: none\n");
#endif
#ifdef _OPENMP
    printf("OpenMP: %d\n", _OPENMP);
#else
    printf("OpenMP: none\n");
#endif
    printf("MPI: none\n");
}

static const char *USAGE =
    "usage: pathformer COMMAND [options]\n"
    "  gen      --set NAME -n N [--seed S] [--step K] [-o FILE] [--histogram] [key=value ...]\n"
    "           write N examples of a named data set as JSON Lines\n"
    "  train    [--preset NAME] [--config FILE.json] [--out DIR] [--resume] [--stop-after N] [key=value ...]\n"
    "           train a model into a run folder (presets: quick, blog-pretrain, blog-tune, tiny)\n"
    "  run      [--preset NAME] [--from CHECKPOINT] [--out DIR] [--resume] [--phase NAME] [--stop-after N]\n"
    "           [key=value ...]\n"
    "           the whole experiment and its report (presets: quick, blog, blog-as-written, tiny; run --help)\n"
    "  eval     --checkpoint FILE --set NAME [-n N] [--seed S] [--json FILE|-] [--threads T] [--batch B]\n"
    "           [key=value ...]\n"
    "           MSE, accuracy and per-label MSE, plus the output histogram as JSON\n"
    "  predict  --checkpoint FILE [-i FILE] [-o FILE] [--threads T] [key=value ...]\n"
    "           read graphs as JSON Lines {\"edges\": [[1,2],...], \"target\": t}, write predictions\n"
    "  sweep    [--preset NAME] [--seeds 1,2,3] [--examples N | --seconds S] [--list FILE] [--out DIR]\n"
    "           [--resume] [key=value ...]   training runs over a grid of settings and seeds, compared\n"
    "  import   IN.pth OUT.safetensors [--n-heads H]\n"
    "           convert a PyTorch state_dict of the model (e.g. the original notebook's model.pth)\n"
    "  bfs      eval|sweep-n|robust|noise [options]   the hand-built BFS transformer (bfs --help)\n"
    "  keys     list every setting with its default\n"
    "  --version  the version and what the binary was built with\n"
    "data sets: pretrain, tune, onpath-small-target, onpath-large-target, any-small,\n"
    "           any-large-small-target, any-large-large-target\n";

static FILE *open_output(const char *path) {
    if (!path || strcmp(path, "-") == 0) return stdout;
    FILE *f = fopen(path, "w");
    if (!f) die("cannot write %s: %s", path, strerror(errno));
    return f;
}

static void close_output(FILE *f, const char *path) {
    if (fflush(f) != 0 || ferror(f)) die("cannot write %s: %s", path ? path : "standard output", strerror(errno));
    if (f != stdout && fclose(f) != 0) die("cannot write %s: %s", path, strerror(errno));
}

// A new folder runs/NAME-DATE-TIME for a run given no --out, made here so that two runs started in
// the same second get two folders (the second gets -2, and so on: mkdir is atomic).
static const char *new_run_dir(char *out, size_t size, const char *name) {
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    if (pf_mkdir_p("runs") != 0) die_error();
    for (int n = 1; n < 1000; n++) {
        char suffix[16] = "";
        if (n > 1) snprintf(suffix, sizeof(suffix), "-%d", n);
        snprintf(out, size, "runs/%s-%04d%02d%02d-%02d%02d%02d%s", name, tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                 tm.tm_hour, tm.tm_min, tm.tm_sec, suffix);
        if (mkdir(out, 0755) == 0) return out;
        if (errno != EEXIST) die("cannot create %s: %s", out, strerror(errno));
    }
    die("cannot find a free folder name for runs/%s", name);
}

// --help / -h of a command: the command's lines of the usage, on stdout, exit 0.
static int print_command_help(const char *command) {
    char key[32];
    snprintf(key, sizeof(key), "  %s ", command);
    const char *line = strstr(USAGE, key);
    if (!line) return 0;
    const char *end = strstr(line + 1, "\n  ");  // the next command's line
    while (end && end[3] == ' ') end = strstr(end + 1, "\n  ");
    printf("usage: pathformer %.*s\n", (int)((end ? end : line + strlen(line)) - line - 2), line + 2);
    return 0;
}

static int is_help(const char *arg) { return strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0; }

static int cmd_gen(int argc, char **argv) {
    RunConfig cfg;
    config_preset(&cfg, "blog-pretrain");
    const char *set_name = NULL, *out_path = NULL;
    long count = -1;
    uint64_t seed = 1, step = 0;
    int histogram = 0, threads = 0;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--set") == 0) set_name = need_value(argc, argv, &i);
        else if (strcmp(argv[i], "-n") == 0) count = parse_long("-n", need_value(argc, argv, &i), 0, 1L << 40);
        else if (strcmp(argv[i], "--seed") == 0) seed = parse_u64("--seed", need_value(argc, argv, &i));
        else if (strcmp(argv[i], "--step") == 0) step = parse_u64("--step", need_value(argc, argv, &i));
        else if (strcmp(argv[i], "-o") == 0) out_path = need_value(argc, argv, &i);
        else if (strcmp(argv[i], "--threads") == 0)
            threads = (int)parse_long("--threads", need_value(argc, argv, &i), 0, 1024);
        else if (strcmp(argv[i], "--histogram") == 0) histogram = 1;
        else if (strchr(argv[i], '=') && argv[i][0] != '-') {
            if (config_set(&cfg, argv[i]) != 0) die_error();
        } else if (is_help(argv[i])) {
            return print_command_help("gen");
        } else die("gen: unknown option '%s'", argv[i]);
    }
    if (!set_name) die("gen: --set NAME is required");
    if (count < 0) die("gen: -n N is required");
    if (data_config_validate(&cfg.data) != 0) die_error();
    DataSet set;
    if (dataset_lookup(&set, set_name, &cfg.data) != 0) die_error();
    ops_set_threads(threads);

    FILE *out = open_output(out_path);
    enum { CHUNK = 4096 };
    Example *examples = mallocCheck(sizeof(Example) * CHUNK);
    long label_count[PF_MAX_VERTICES + 1] = {0};
    for (long first = 0; first < count; first += CHUNK) {
        int n = (int)(count - first < CHUNK ? count - first : CHUNK);
#pragma omp parallel for schedule(static)
        for (int i = 0; i < n; i++)
            dataset_sample_keyed(&examples[i], &set, &cfg.data, seed, step, (uint64_t)(first + i));
        for (int i = 0; i < n; i++) {
            example_write_jsonl(out, &examples[i]);
            label_count[examples[i].label]++;
        }
    }
    free(examples);
    close_output(out, out_path);
    if (histogram) {
        fprintf(stderr, "label histogram of %ld '%s' examples:\n", count, set_name);
        for (int label = 0; label <= cfg.data.max_v; label++) {
            if (!label_count[label]) continue;
            double fraction = count ? (double)label_count[label] / count : 0.0;
            int bar = (int)(fraction * 60 + 0.5);
            fprintf(stderr, "  %3d%s %8ld  %6.3f  %.*s\n", label, label == cfg.data.max_v ? "*" : " ",
                    label_count[label], fraction, bar,
                    "############################################################");
        }
        fprintf(stderr, "  (* = unreachable)\n");
    }
    return 0;
}

static int cmd_train(int argc, char **argv) {
    RunConfig cfg;
    const char *preset = "quick", *config_path = NULL, *out_dir = NULL;
    int resume = 0;
    long stop_after = 0;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--preset") == 0) preset = need_value(argc, argv, &i);
        else if (strcmp(argv[i], "--stop-after") == 0)
            stop_after = parse_long("--stop-after", need_value(argc, argv, &i), 1, 1L << 40);
        else if (strcmp(argv[i], "--config") == 0) config_path = need_value(argc, argv, &i);
        else if (strcmp(argv[i], "--out") == 0) out_dir = need_value(argc, argv, &i);
        else if (strcmp(argv[i], "--resume") == 0) resume = 1;
        else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            config_preset(&cfg, preset);
            printf(
                "usage: pathformer train [--preset NAME] [--config FILE.json] [--out DIR] [--resume] [--stop-after N]\n"
                "       [key=value ...]\n"
                "settings (preset %s):\n",
                preset);
            config_print_keys(stdout, &cfg);
            return 0;
        } else if (argv[i][0] == '-' || !strchr(argv[i], '=')) {
            die("train: unknown option '%s'", argv[i]);
        }
    }
    if (resume && !out_dir) die("train: --resume needs --out DIR (the run folder to continue)");
    if (resume) {
        // the run's own config, with any overrides given (which must then match it)
        if (train_load_run_config(&cfg, out_dir) != 0) die_error();
    } else if (config_preset(&cfg, preset) != 0) {
        die_error();
    }
    if (config_path) {
        size_t size;
        char *text = pf_read_file(config_path, &size);
        if (!text) die_error();
        if (config_from_json(&cfg, text) != 0) die("%s: %s", config_path, pf_last_error());
        free(text);
    }
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--preset") == 0 || strcmp(argv[i], "--config") == 0 || strcmp(argv[i], "--out") == 0 ||
            strcmp(argv[i], "--stop-after") == 0)
            i++;
        else if (argv[i][0] != '-' && config_set(&cfg, argv[i]) != 0) die_error();
    }
    if (config_finalize(&cfg) != 0) die_error();
    char default_dir[256];
    if (!out_dir) out_dir = new_run_dir(default_dir, sizeof(default_dir), preset);
    int rc = train_run(&cfg, out_dir, resume, stop_after);
    if (rc < 0) die_error();
    return rc;
}

// Loads a checkpoint into an inference model for micro-batches of `capacity`; data settings come
// from `cfg` (max_v and edges_per_vertex follow from the checkpoint's vocabulary and length).
static void load_for_inference(Model *model, RunConfig *cfg, const char *path, int capacity) {
    if (!path) die("--checkpoint FILE is required");
    StFile file;
    if (model_open_checkpoint(&file, path) != 0) die_error();
    ModelConfig mc = model_config_default();
    mc.seq_len = data_config_seq_len(&cfg->data);
    if (model_config_from_file(&mc, &file) != 0) die("%s: %s", path, pf_last_error());
    cfg->data.max_v = mc.vocab - 2;
    if (cfg->data.max_v < 1 || (mc.seq_len - 1) % cfg->data.max_v != 0)
        die("%s: vocabulary %d and sequence length %d do not fit any data settings", path, mc.vocab, mc.seq_len);
    cfg->data.edges_per_vertex = (mc.seq_len - 1) / cfg->data.max_v;
    if (cfg->data.max_tune_v > cfg->data.max_v) cfg->data.max_tune_v = cfg->data.max_v;
    if (data_config_validate(&cfg->data) != 0) die("%s: %s", path, pf_last_error());
    model_create(model, &mc, capacity, 0);
    if (model_load_params(model, &file) != 0) die("%s: %s", path, pf_last_error());
    st_free(&file);
}

static int cmd_eval(int argc, char **argv) {
    RunConfig cfg;
    config_preset(&cfg, "blog-pretrain");
    const char *checkpoint = NULL, *set_name = NULL, *json_path = NULL;
    long count = 16384;
    uint64_t seed = 1;
    int threads = 0, capacity = 64;  // examples per forward of one thread: measured fastest
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--checkpoint") == 0) checkpoint = need_value(argc, argv, &i);
        else if (strcmp(argv[i], "--set") == 0) set_name = need_value(argc, argv, &i);
        else if (strcmp(argv[i], "-n") == 0) count = parse_long("-n", need_value(argc, argv, &i), 1, 1L << 40);
        else if (strcmp(argv[i], "--seed") == 0) seed = parse_u64("--seed", need_value(argc, argv, &i));
        else if (strcmp(argv[i], "--json") == 0) json_path = need_value(argc, argv, &i);
        else if (strcmp(argv[i], "--threads") == 0)
            threads = (int)parse_long("--threads", need_value(argc, argv, &i), 0, 1024);
        else if (strcmp(argv[i], "--batch") == 0)
            capacity = (int)parse_long("--batch", need_value(argc, argv, &i), 1, 1 << 20);
        else if (strchr(argv[i], '=') && argv[i][0] != '-') {
            if (config_set(&cfg, argv[i]) != 0) die_error();
        } else if (is_help(argv[i])) {
            return print_command_help("eval");
        } else die("eval: unknown option '%s'", argv[i]);
    }
    if (!set_name) die("eval: --set NAME is required");
    DataSet set;
    if (dataset_lookup(&set, set_name, &cfg.data) != 0) die_error();
    ops_set_threads(threads);
    Model model;
    load_for_inference(&model, &cfg, checkpoint, capacity);
    EvalResult *result = mallocCheck(sizeof(EvalResult));
    double start = pf_now_seconds();
    if (eval_model(result, &model, set_name, &cfg.data, seed, count) != 0) die_error();
    double seconds = pf_now_seconds() - start;
    eval_print(result, stdout);
    printf("(%.0f examples/s)\n", count / seconds);
    // the histogram JSON only when asked for: a file, or - for standard output after the table
    if (json_path) {
        char *json = eval_to_json(result);
        if (strcmp(json_path, "-") == 0) {
            fputs(json, stdout);
            fputc('\n', stdout);
        } else if (pf_write_file_atomic(json_path, json, strlen(json)) != 0) {
            die_error();
        } else {
            fprintf(stderr, "histogram written to %s\n", json_path);
        }
        free(json);
    }
    close_output(stdout, NULL);
    free(result);
    model_free(&model);
    return 0;
}

static int cmd_predict(int argc, char **argv) {
    RunConfig cfg;
    config_preset(&cfg, "blog-pretrain");
    const char *checkpoint = NULL, *in_path = NULL, *out_path = NULL;
    int threads = 0;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--checkpoint") == 0) checkpoint = need_value(argc, argv, &i);
        else if (strcmp(argv[i], "-i") == 0) in_path = need_value(argc, argv, &i);
        else if (strcmp(argv[i], "-o") == 0) out_path = need_value(argc, argv, &i);
        else if (strcmp(argv[i], "--threads") == 0)
            threads = (int)parse_long("--threads", need_value(argc, argv, &i), 0, 1024);
        else if (strchr(argv[i], '=') && argv[i][0] != '-') {
            if (config_set(&cfg, argv[i]) != 0) die_error();
        } else if (is_help(argv[i])) {
            return print_command_help("predict");
        } else die("predict: unknown option '%s'", argv[i]);
    }
    ops_set_threads(threads);
    enum { CAPACITY = 256 };
    Model model;
    load_for_inference(&model, &cfg, checkpoint, CAPACITY);
    FILE *in = stdin;
    if (in_path && strcmp(in_path, "-") != 0 && !(in = fopen(in_path, "r")))
        die("cannot open %s: %s", in_path, strerror(errno));
    FILE *out = open_output(out_path);
    Batch batch;
    batch_alloc(&batch, CAPACITY, model.config.seq_len);
    Example example;
    char *line = NULL;
    size_t line_cap = 0;
    long line_number = 0;
    int B = 0;
    for (;;) {
        ssize_t len = getline(&line, &line_cap, in);
        if (len > 0) {
            line_number++;
            while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = '\0';
            if (len == 0) continue;  // blank lines are allowed
            if (example_parse_jsonl(&example, line, &cfg.data) != 0)
                die("%s line %ld: %s", in_path ? in_path : "input", line_number, pf_last_error());
            batch_encode(&batch, B++, &example, &cfg.data);
        }
        if (B == CAPACITY || (len < 0 && B > 0)) {
            model_infer(&model, batch.tokens, NULL, B);
            for (int b = 0; b < B; b++)
                fprintf(out, "{\"target\": %d, \"prediction\": %.6f, \"distance\": %d}\n", batch.targets[b],
                        model.pred[b], (int)batch.labels[b]);
            B = 0;
        }
        if (len < 0) break;
    }
    if (ferror(in)) die("cannot read %s: %s", in_path ? in_path : "standard input", strerror(errno));
    free(line);
    if (in != stdin) fclose(in);
    close_output(out, out_path);
    batch_free(&batch);
    model_free(&model);
    return 0;
}

// "1,2,3" into seeds; returns the count or dies.
static int parse_seeds(const char *text, uint64_t *seeds, int capacity) {
    int n = 0;
    const char *p = text;
    while (*p) {
        char *end;
        errno = 0;
        if (*p == '-' || n == capacity) die("--seeds: '%s' is not a list of at most %d seeds (e.g. 1,2,3)", text, capacity);
        unsigned long long v = strtoull(p, &end, 10);
        if (end == p || errno || (*end != ',' && *end != '\0'))
            die("--seeds: '%s' is not a list of seeds (e.g. 1,2,3)", text);
        seeds[n++] = v;
        p = *end == ',' ? end + 1 : end;
    }
    if (n == 0) die("--seeds: empty list");
    return n;
}

static int cmd_run(int argc, char **argv) {
    ExperimentConfig cfg;
    ExperimentOptions options = {0, -1, 0};
    const char *preset = NULL, *out_dir = NULL, *from = NULL;
    uint64_t seeds[MAX_SEEDS];
    int help = 0, num_seeds = 0;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--preset") == 0) preset = need_value(argc, argv, &i);
        else if (strcmp(argv[i], "--seeds") == 0) num_seeds = parse_seeds(need_value(argc, argv, &i), seeds, MAX_SEEDS);
        else if (strcmp(argv[i], "--out") == 0) out_dir = need_value(argc, argv, &i);
        else if (strcmp(argv[i], "--from") == 0) from = need_value(argc, argv, &i);
        else if (strcmp(argv[i], "--resume") == 0) options.resume = 1;
        else if (strcmp(argv[i], "--phase") == 0) {
            if ((options.only_phase = phase_lookup(need_value(argc, argv, &i))) < 0) die_error();
        } else if (strcmp(argv[i], "--stop-after") == 0) {
            options.stop_after = parse_long("--stop-after", need_value(argc, argv, &i), 1, 1L << 40);
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) help = 1;
        else if (argv[i][0] == '-' || !strchr(argv[i], '=')) die("run: unknown option '%s'", argv[i]);
    }
    // from given weights, the published protocol is the natural default: their fine-tuning and tests
    if (!preset) preset = from ? "blog" : "quick";
    if (experiment_preset(&cfg, preset) != 0) die_error();
    if (help) {
        printf("usage: pathformer run [--preset NAME] [--from CHECKPOINT] [--seeds 1,2,3] [--out DIR] [--resume]\n"
               "       [--phase NAME] [--stop-after N] [key=value ...]\n"
               "pre-train, evaluate, fine-tune, evaluate on the five test sets, write DIR/report.html\n"
               "presets:\n");
        for (int i = 0; EXPERIMENT_PRESETS[i]; i++)
            printf("  %-16s %s\n", EXPERIMENT_PRESETS[i], experiment_preset_summary(EXPERIMENT_PRESETS[i]));
        printf("--seeds 1,2,3: the experiment once per seed (DIR/seed-S), then every number as the mean with a\n"
               "  95%% interval and the per-seed values beside the published one (DIR/metrics.json, report.html)\n");
        printf("--from CHECKPOINT: no pre-training; the experiment starts from these weights (a model.safetensors,\n"
               "  its optimizer state read from optimizer.safetensors beside it when there is one); preset blog\n"
               "  unless another is given\n"
               "phases (--phase runs one; --resume continues after the last finished one):\n"
               "  pretrain, eval-pretrained, tune, eval-tuned, report\n"
               "settings: key=value sets pre-training (data, model, seed, threads, micro_batch hold for\n"
               "fine-tuning too); tune.KEY=value sets fine-tuning's batch_size, lr, weight_decay, beta1,\n"
               "beta2, eps, checkpoint_every; tune_optimizer=continue|new|auto how fine-tuning gets its Adam\n"
               "(continue: the pre-training one goes on, as the authors' code ran it; new: a fresh one; auto:\n"
               "continue when there is a state to continue, else new); eval_examples=N the examples per\n"
               "evaluation (preset %s: %ld, fine-tuning lr %s, batch %ld, weight_decay %g, tune_optimizer %s).\n"
               "Pre-training settings:\n",
               preset, cfg.eval_examples, cfg.tune.lr_schedule, cfg.tune.batch_size, (double)cfg.tune.weight_decay,
               cfg.tune_optimizer);
        config_print_keys(stdout, &cfg.pretrain);
        return 0;
    }
    if (from && experiment_from_checkpoint(&cfg, from) != 0) die_error();
    if (options.resume && out_dir && num_seeds == 0) {
        // a folder of runs over seeds continues as one
        int found = experiment_load_seeds(&cfg, seeds, &num_seeds, out_dir);
        if (found < 0) die_error();
        if (found == 0) {
            if (options.only_phase >= 0) die("run: --phase works on one seed's folder (%s/seed-S)", out_dir);
            int rc = experiment_run_seeds(&cfg, seeds, num_seeds, out_dir, &options);
            if (rc < 0) die_error();
            return rc;
        }
        num_seeds = 0;
    }
    if ((options.resume || options.only_phase >= 0) && out_dir) {
        // the folder's own config when it holds one; overrides given must then match it
        char path[PF_PATH_MAX + 32];
        snprintf(path, sizeof(path), "%s/experiment.json", out_dir);
        FILE *f = fopen(path, "r");
        if (f) {
            fclose(f);
            if (experiment_load(&cfg, out_dir) != 0) die_error();
        }
    }
    if (options.resume && !out_dir) die("run: --resume needs --out DIR (the run folder to continue)");
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--preset") == 0 || strcmp(argv[i], "--out") == 0 || strcmp(argv[i], "--phase") == 0 ||
            strcmp(argv[i], "--stop-after") == 0 || strcmp(argv[i], "--from") == 0 || strcmp(argv[i], "--seeds") == 0)
            i++;
        else if (argv[i][0] != '-' && experiment_set(&cfg, argv[i]) != 0) die_error();
    }
    if (experiment_finalize(&cfg) != 0) die_error();
    char default_dir[256], name[96];
    if (!out_dir) {
        snprintf(name, sizeof(name), "run-%s%s%s", preset, from ? "-from" : "", num_seeds ? "-seeds" : "");
        out_dir = new_run_dir(default_dir, sizeof(default_dir), name);
    }
    if (num_seeds > 0) {
        if (options.only_phase >= 0) die("run: --phase works on one seed's folder (DIR/seed-S), not with --seeds");
        int rc = experiment_run_seeds(&cfg, seeds, num_seeds, out_dir, &options);
        if (rc < 0) die_error();
        return rc;
    }
    int rc = experiment_run(&cfg, out_dir, &options);
    if (rc < 0) die_error();
    return rc;
}

static int cmd_sweep(int argc, char **argv) {
    const char *preset = "quick", *out_dir = NULL, *list = NULL;
    uint64_t seeds[32] = {1};
    int num_seeds = 1, resume = 0, num_settings = 0;
    const char *settings[64];
    static SweepSpec spec;
    spec.eval_examples = 16384;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--preset") == 0) preset = need_value(argc, argv, &i);
        else if (strcmp(argv[i], "--out") == 0) out_dir = need_value(argc, argv, &i);
        else if (strcmp(argv[i], "--list") == 0) list = need_value(argc, argv, &i);
        else if (strcmp(argv[i], "--resume") == 0) resume = 1;
        else if (strcmp(argv[i], "--seeds") == 0) num_seeds = parse_seeds(need_value(argc, argv, &i), seeds, 32);
        else if (strcmp(argv[i], "--examples") == 0)
            spec.budget_examples = parse_long("--examples", need_value(argc, argv, &i), 1, 1L << 50);
        else if (strcmp(argv[i], "--seconds") == 0)
            spec.budget_seconds = (double)parse_long("--seconds", need_value(argc, argv, &i), 1, 1L << 30);
        else if (strcmp(argv[i], "--eval-examples") == 0)
            spec.eval_examples = parse_long("--eval-examples", need_value(argc, argv, &i), 1, 1L << 30);
        else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("usage: pathformer sweep [--preset NAME] [--seeds 1,2,3] [--examples N] [--seconds S]\n"
                   "       [--eval-examples N] [--list FILE.jsonl] [--out DIR] [--resume] [key=value ...]\n"
                   "training runs that differ in settings and seed, each stopped at the same budget, evaluated\n"
                   "on fresh examples of its training set, and compared in DIR/sweep.csv, sweep.json and\n"
                   "report.html. A key given once holds for every run; a key given several times is an axis\n"
                   "of the grid (e.g. batch_size=256 batch_size=1024 lr=1e-3@4000 lr=3e-4@4000 is 4 runs per\n"
                   "seed); --list reads one JSON object of settings per line instead. The budget stops each\n"
                   "run after N examples or S seconds of training (else at the end of its schedule).\n"
                   "--resume continues the sweep DIR holds. Presets as train's (default quick).\n");
            return 0;
        } else if (argv[i][0] == '-' || !strchr(argv[i], '=')) {
            die("sweep: unknown option '%s'", argv[i]);
        } else {
            if (num_settings == 64) die("sweep: more than 64 settings");
            settings[num_settings++] = argv[i];
        }
    }
    if (resume && !out_dir) die("sweep: --resume needs --out DIR (the sweep to continue)");
    if (resume && (num_settings > 0 || list)) die("sweep: --resume takes the sweep's own settings; give no others");
    char default_dir[256];
    if (!out_dir) out_dir = new_run_dir(default_dir, sizeof(default_dir), "sweep");
    if (!resume && sweep_build(&spec, preset, num_settings, settings, list, seeds, num_seeds) != 0) die_error();
    int rc = sweep_run(resume ? NULL : &spec, out_dir, resume);
    if (rc < 0) die_error();
    return rc;
}

static int cmd_import(int argc, char **argv) {
    const char *paths[2] = {NULL, NULL};
    int num_paths = 0, n_heads = 0;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--n-heads") == 0) {
            n_heads = (int)parse_long("--n-heads", need_value(argc, argv, &i), 1, 1 << 16);
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("usage: pathformer import IN.pth OUT.safetensors [--n-heads H]\n"
                   "converts a PyTorch state_dict of the model (names as SPEC 3; a torch.compile '_orig_mod.'\n"
                   "prefix is dropped) into a checkpoint pathformer reads, with Debian's python3-torch\n"
                   "(scripts/pth_to_safetensors.py); --n-heads records the head count (default 2)\n");
            return 0;
        } else if (argv[i][0] == '-' || num_paths == 2) {
            die("import: unexpected argument '%s' (usage: pathformer import IN.pth OUT.safetensors)", argv[i]);
        } else {
            paths[num_paths++] = argv[i];
        }
    }
    if (num_paths != 2) die("import: needs IN.pth and OUT.safetensors");
    size_t parameters;
    int layers;
    if (interop_import_pth(paths[0], paths[1], n_heads, &parameters, &layers) != 0) die_error();
    fprintf(stderr, "%s: %d layers, %zu parameters, from %s\n", paths[1], layers, parameters, paths[0]);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(USAGE, argc < 2 ? stderr : stdout);
        return argc < 2 ? EXIT_FAILURE : 0;
    }
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0) {
        print_version();
        close_output(stdout, NULL);
        return 0;
    }
    const char *command = argv[1];
    argc -= 2;
    argv += 2;
    if (strcmp(command, "gen") == 0) return cmd_gen(argc, argv);
    if (strcmp(command, "train") == 0) return cmd_train(argc, argv);
    if (strcmp(command, "run") == 0) return cmd_run(argc, argv);
    if (strcmp(command, "import") == 0) return cmd_import(argc, argv);
    if (strcmp(command, "sweep") == 0) return cmd_sweep(argc, argv);
    if (strcmp(command, "eval") == 0) return cmd_eval(argc, argv);
    if (strcmp(command, "predict") == 0) return cmd_predict(argc, argv);
    if (strcmp(command, "bfs") == 0) return bfs_main(argc, argv);
    if (strcmp(command, "keys") == 0) {
        RunConfig cfg;
        config_preset(&cfg, "blog-pretrain");
        config_print_keys(stdout, &cfg);
        return 0;
    }
    die("unknown command '%s' (try: pathformer help)", command);
}
