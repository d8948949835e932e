// The command line: gen, train, eval, predict.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "batch.h"
#include "cli.h"
#include "common.h"
#include "config.h"
#include "dist.h"
#include "eval.h"
#include "experiment/experiment.h"
#include "graph.h"
#include "interop.h"
#include "experiment/seeds.h"
#include "experiment/sweep.h"
#include "model.h"
#include "ops/ops.h"
#include "predict.h"
#include "train.h"
#include "bfs/bfs_cli.h"
#include "interp/interp_cli.h"

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
    printf("MPI: %s\n", dist_library());
}

static const char *USAGE =
    "usage: pathformer COMMAND [options]\n"
    "  gen      --set NAME -n N [--seed S] [--step K] [-o|--out FILE|-] [--threads T] [--histogram]\n"
    "           [key=value ...]\n"
    "           write N examples of a named data set as JSON Lines (standard output by default)\n"
    "  train    [--preset NAME] [--phase pretrain|tune] [--config FILE.json|-] [--out DIR] [--resume]\n"
    "           [--stop-after N] [--seed S] [--threads T] [key=value ...]\n"
    "           train a model into a run folder (presets: quick, standard, blog, blog-as-written, tiny)\n"
    "  run      [--preset NAME] [--from CHECKPOINT] [--seeds 1,2,3] [--out DIR] [--resume] [--phase NAME]\n"
    "           [--stop-after N] [--config FILE.json|-] [--seed S] [--threads T] [key=value ...]\n"
    "           the whole experiment and its report (presets as train's; run --help)\n"
    "  eval     --checkpoint FILE --set NAME [-n N] [--seed S] [--json FILE|-] [--threads T] [--batch B]\n"
    "           [key=value ...]\n"
    "           MSE, accuracy and per-label MSE on N fresh examples; the output histogram as JSON with --json\n"
    "  predict  --checkpoint FILE [-i|--input FILE|-] [-o|--out FILE|-] [--skip-bad] [--threads T]\n"
    "           a filter: each JSON line {\"edges\": [[1,2],...], \"target\": t, ...} answered as soon as it\n"
    "           is read, with every key kept, \"distance\" (true, by BFS) and \"prediction\" set; lines that\n"
    "           arrive together run as one batch. Limits fixed by the checkpoint (published model: at\n"
    "           most 15 edges, vertices 1..15). A bad line stops it (lines before it answered);\n"
    "           --skip-bad: one stderr line per bad line, the rest answered\n"
    "  sweep    [--preset NAME] [--seeds 1,2,3 | --seed S] [--examples N | --seconds S] [--list FILE|-]\n"
    "           [--out DIR] [--resume] [--threads T] [key=value ...]\n"
    "           training runs over a grid of settings and seeds, compared\n"
    "  import   IN.pth OUT.safetensors [--n-heads H]\n"
    "           convert a PyTorch state_dict of the model (e.g. the original notebook's model.pth)\n"
    "  bfs      eval|sweep-n|robust|noise [options]   the hand-built BFS transformer (bfs --help)\n"
    "  probe    (--checkpoint FILE | --bfs N) [--set NAME] [-n N] [--seed S] [--ridge R] [--out DIR]\n"
    "           linear probes from every layer's token states to graph facts, with controls (probe --help)\n"
    "  inspect  --checkpoint FILE [-i FILE | --set NAME [--seed S] [--index I]] [--out DIR]\n"
    "           one graph's prediction, attention per layer and head, residual norms: JSON and a page\n"
    "  ablate   --checkpoint FILE [--set NAME] [-n N] [--seed S] [--modes zero,mean] [--out DIR]\n"
    "           each head and each feed-forward knocked out in turn: the change in MSE per label\n"
    "  inside   --run DIR [--probe-n N] [--ablate-n N] [--graphs K] [--seed S]\n"
    "           probes, ablations and example attention of a run's two models, for its report's\n"
    "           \"Inside the model\" section (inside --help)\n"
    "  keys     [COMMAND] [--preset NAME]   every setting each command takes, with its starting value\n"
    "  --version  the version and what the binary was built with\n"
    "data sets: pretrain, tune, onpath-small-target, onpath-large-target, any-small,\n"
    "           any-large-small-target, any-large-large-target\n"
    CLI_COMMON_OPTIONS;

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
    fputs(CLI_COMMON_OPTIONS, stdout);
    return 0;
}

static int is_help(const char *arg) { return strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0; }

// A JSON object of settings {"key": value, ...} from FILE (- for standard input), each applied in
// order as key=value through `apply`; dies naming the file on the first refused one.
static void apply_settings_file(const char *path, int (*apply)(void *target, const char *assignment), void *target) {
    size_t size;
    char *text = pf_read_input(path, &size);
    if (!text) die_error();
    cJSON *root = cJSON_Parse(text);
    free(text);
    if (!cJSON_IsObject(root)) die("%s: not a JSON object of settings {\"key\": value, ...}", path);
    for (cJSON *item = root->child; item; item = item->next) {
        char assignment[PF_PATH_MAX + 64];
        if (cJSON_IsString(item))
            snprintf(assignment, sizeof(assignment), "%s=%s", item->string, item->valuestring);
        else if (cJSON_IsNumber(item))
            snprintf(assignment, sizeof(assignment), "%s=%.17g", item->string, item->valuedouble);
        else
            die("%s: setting %s must be a number or a string", path, item->string);
        if (apply(target, assignment) != 0) die("%s: %s", path, pf_last_error());
    }
    cJSON_Delete(root);
}

static int apply_train_setting(void *cfg, const char *assignment) {
    return config_set_for(cfg, assignment, SETTING_ALL, "train");
}

static int apply_run_setting(void *cfg, const char *assignment) { return experiment_set(cfg, assignment); }

// --seed S and --threads T of train and run: their settings seed and threads.
static int common_setting(char *out, size_t size, const char *option, const char *value) {
    if (strcmp(option, "--seed") == 0) parse_u64("--seed", value);
    else if (strcmp(option, "--threads") == 0) parse_long("--threads", value, 0, 1024);
    else return 0;
    snprintf(out, size, "%s=%s", option + 2, value);
    return 1;
}

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
        else if (strcmp(argv[i], "-o") == 0 || strcmp(argv[i], "--out") == 0) out_path = need_value(argc, argv, &i);
        else if (strcmp(argv[i], "--threads") == 0)
            threads = (int)parse_long("--threads", need_value(argc, argv, &i), 0, 1024);
        else if (strcmp(argv[i], "--histogram") == 0) histogram = 1;
        else if (strchr(argv[i], '=') && argv[i][0] != '-') {
            if (config_set_for(&cfg, argv[i], SETTING_SAMPLER | SETTING_SHAPE, "gen") != 0) die_error();
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

static void print_train_help(const char *preset, int tune) {
    RunConfig cfg;
    if ((tune ? config_preset_tune(&cfg, preset) : config_preset(&cfg, preset)) != 0) die_error();
    printf("usage: pathformer train [--preset NAME] [--phase pretrain|tune] [--config FILE.json|-] [--out DIR]\n"
           "       [--resume] [--stop-after N] [--seed S] [--threads T] [--quiet] [key=value ...]\n"
           "trains a model into a run folder (DIR, default runs/PRESET-DATE-TIME): config.json, train.csv,\n"
           "model.safetensors, optimizer.safetensors, summary.json. The settings start from the preset's\n"
           "pre-training (--phase tune: its fine-tuning, which needs init_from=MODEL), then the --config\n"
           "file's, then key=value. --resume continues the run DIR holds with its own settings (lr, steps,\n"
           "clip_grad_norm, weight_decay, beta1, beta2, eps and checkpoint_every may change).\n"
           "The run's length is steps=N, else the lr schedule's; lr=X alone is a constant rate.\n");
    fputs(CLI_COMMON_OPTIONS, stdout);
    presets_print(stdout);
    printf("settings (preset %s%s):\n", preset, tune ? ", --phase tune" : "");
    config_print_keys(stdout, &cfg);
}

static int cmd_train(int argc, char **argv) {
    RunConfig cfg;
    const char *preset = NULL, *config_path = NULL, *out_dir = NULL, *phase = "pretrain";
    int resume = 0, help = 0;
    long stop_after = 0;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--preset") == 0) preset = need_value(argc, argv, &i);
        else if (strcmp(argv[i], "--phase") == 0) phase = need_value(argc, argv, &i);
        else if (strcmp(argv[i], "--stop-after") == 0)
            stop_after = parse_long("--stop-after", need_value(argc, argv, &i), 1, 1L << 40);
        else if (strcmp(argv[i], "--config") == 0) config_path = need_value(argc, argv, &i);
        else if (strcmp(argv[i], "--out") == 0) out_dir = need_value(argc, argv, &i);
        else if (strcmp(argv[i], "--seed") == 0 || strcmp(argv[i], "--threads") == 0) need_value(argc, argv, &i);
        else if (strcmp(argv[i], "--resume") == 0) resume = 1;
        else if (is_help(argv[i])) help = 1;
        else if (argv[i][0] == '-' || !strchr(argv[i], '=')) die("train: unknown option '%s'", argv[i]);
    }
    if (strcmp(phase, "pretrain") != 0 && strcmp(phase, "tune") != 0)
        die("train: unknown phase '%s' (pretrain or tune)", phase);
    int tune = strcmp(phase, "tune") == 0;
    if (help) {
        print_train_help(preset ? preset : DEFAULT_PRESET, tune);
        return 0;
    }
    if (resume && !out_dir) die("train: --resume needs --out DIR (the run folder to continue)");
    if (resume && (preset || tune))
        die("train: --resume continues the run's own settings; %s is not used with --resume",
            preset ? "--preset" : "--phase");
    if (!preset) preset = DEFAULT_PRESET;
    if (resume) {
        // the run's own config, with any overrides given (which must then match it)
        if (train_load_run_config(&cfg, out_dir) != 0) die_error();
    } else if ((tune ? config_preset_tune(&cfg, preset) : config_preset(&cfg, preset)) != 0) {
        die_error();
    }
    if (config_path) apply_settings_file(config_path, apply_train_setting, &cfg);
    for (int i = 0; i < argc; i++) {
        char setting[128];
        if (i + 1 < argc && common_setting(setting, sizeof(setting), argv[i], argv[i + 1])) {
            if (config_set_for(&cfg, setting, SETTING_ALL, "train") != 0) die_error();
            i++;
        } else if (strcmp(argv[i], "--preset") == 0 || strcmp(argv[i], "--config") == 0 ||
                   strcmp(argv[i], "--out") == 0 || strcmp(argv[i], "--stop-after") == 0 ||
                   strcmp(argv[i], "--phase") == 0) {
            i++;
        } else if (argv[i][0] != '-' && config_set_for(&cfg, argv[i], SETTING_ALL, "train") != 0) {
            die_error();
        }
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
            if (config_set_for(&cfg, argv[i], SETTING_SAMPLER, "eval") != 0) die_error();
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
    PredictOptions options = {0, NULL};
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--checkpoint") == 0) checkpoint = need_value(argc, argv, &i);
        else if (strcmp(argv[i], "--skip-bad") == 0) options.skip_bad = 1;
        else if (strcmp(argv[i], "-i") == 0 || strcmp(argv[i], "--input") == 0) in_path = need_value(argc, argv, &i);
        else if (strcmp(argv[i], "-o") == 0 || strcmp(argv[i], "--out") == 0) out_path = need_value(argc, argv, &i);
        else if (strcmp(argv[i], "--threads") == 0)
            threads = (int)parse_long("--threads", need_value(argc, argv, &i), 0, 1024);
        else if (strchr(argv[i], '=') && argv[i][0] != '-') {
            if (config_set_for(&cfg, argv[i], 0, "predict") != 0) die_error();
        } else if (is_help(argv[i])) {
            return print_command_help("predict");
        } else die("predict: unknown option '%s'", argv[i]);
    }
    ops_set_threads(threads);
    enum { CAPACITY = 256 };  // the largest batch: lines that arrive together run as one
    Model model;
    load_for_inference(&model, &cfg, checkpoint, CAPACITY);
    int in_fd = STDIN_FILENO;
    if (in_path && strcmp(in_path, "-") != 0 && (in_fd = open(in_path, O_RDONLY)) < 0)
        die("cannot open %s: %s", in_path, strerror(errno));
    FILE *out = open_output(out_path);
    options.in_name = in_path && strcmp(in_path, "-") != 0 ? in_path : "input";
    if (predict_stream(&model, &cfg.data, in_fd, out, &options) != 0) die_error();
    if (in_fd != STDIN_FILENO) close(in_fd);
    close_output(out, out_path);
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
    const char *preset = NULL, *out_dir = NULL, *from = NULL, *config_path = NULL;
    uint64_t seeds[MAX_SEEDS];
    int help = 0, num_seeds = 0;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--preset") == 0) preset = need_value(argc, argv, &i);
        else if (strcmp(argv[i], "--seeds") == 0) num_seeds = parse_seeds(need_value(argc, argv, &i), seeds, MAX_SEEDS);
        else if (strcmp(argv[i], "--out") == 0) out_dir = need_value(argc, argv, &i);
        else if (strcmp(argv[i], "--from") == 0) from = need_value(argc, argv, &i);
        else if (strcmp(argv[i], "--config") == 0) config_path = need_value(argc, argv, &i);
        else if (strcmp(argv[i], "--seed") == 0 || strcmp(argv[i], "--threads") == 0) need_value(argc, argv, &i);
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
               "       [--phase NAME] [--stop-after N] [--config FILE.json] [--seed S] [--threads T] [--quiet]\n"
               "       [key=value ...]\n"
               "pre-train, evaluate, fine-tune, evaluate on the five test sets, write DIR/report.html\n");
        fputs(CLI_COMMON_OPTIONS, stdout);
        presets_print(stdout);
        printf("--seeds 1,2,3: the experiment once per seed (DIR/seed-S), then every number as the mean with a\n"
               "  95%% interval and the per-seed values beside the published one (DIR/metrics.json, report.html)\n");
        printf("--from CHECKPOINT: no pre-training; the experiment starts from these weights (a model.safetensors,\n"
               "  its optimizer state read from optimizer.safetensors beside it when there is one); preset blog\n"
               "  unless another is given\n"
               "phases (--phase runs one; --resume continues after the last finished one):\n"
               "  pretrain, eval-pretrained, tune, eval-tuned, report\n"
               "settings: key=value sets pre-training (data, model, seed, threads, micro_batch hold for\n"
               "fine-tuning too); tune.KEY=value sets fine-tuning's own; tune_optimizer=continue|new|auto how\n"
               "fine-tuning gets its Adam (continue: the pre-training one goes on, as the authors' code ran it;\n"
               "new: a fresh one; auto: continue when there is a state to continue, else new); eval_examples=N\n"
               "the examples per evaluation. Settings under preset %s:\n",
               preset);
        experiment_print_keys(stdout, &cfg, 1);
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
    if (config_path) apply_settings_file(config_path, apply_run_setting, &cfg);
    for (int i = 0; i < argc; i++) {
        char setting[128];
        if (i + 1 < argc && common_setting(setting, sizeof(setting), argv[i], argv[i + 1])) {
            if (experiment_set(&cfg, setting) != 0) die_error();
            i++;
        } else if (strcmp(argv[i], "--preset") == 0 || strcmp(argv[i], "--out") == 0 ||
                   strcmp(argv[i], "--phase") == 0 || strcmp(argv[i], "--stop-after") == 0 ||
                   strcmp(argv[i], "--from") == 0 || strcmp(argv[i], "--seeds") == 0 ||
                   strcmp(argv[i], "--config") == 0) {
            i++;
        } else if (argv[i][0] != '-' && experiment_set(&cfg, argv[i]) != 0) {
            die_error();
        }
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
        else if (strcmp(argv[i], "--seed") == 0) {
            seeds[0] = parse_u64("--seed", need_value(argc, argv, &i));
            num_seeds = 1;
        } else if (strcmp(argv[i], "--threads") == 0) {
            static char threads[64];
            snprintf(threads, sizeof(threads), "threads=%ld", parse_long("--threads", need_value(argc, argv, &i), 0, 1024));
            if (num_settings == 64) die("sweep: more than 64 settings");
            settings[num_settings++] = threads;
        } else if (strcmp(argv[i], "--examples") == 0)
            spec.budget_examples = parse_long("--examples", need_value(argc, argv, &i), 1, 1L << 50);
        else if (strcmp(argv[i], "--seconds") == 0)
            spec.budget_seconds = (double)parse_long("--seconds", need_value(argc, argv, &i), 1, 1L << 30);
        else if (strcmp(argv[i], "--eval-examples") == 0)
            spec.eval_examples = parse_long("--eval-examples", need_value(argc, argv, &i), 1, 1L << 30);
        else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("usage: pathformer sweep [--preset NAME] [--seeds 1,2,3 | --seed S] [--examples N] [--seconds S]\n"
                   "       [--eval-examples N] [--list FILE.jsonl|-] [--out DIR] [--resume] [--threads T] [--quiet]\n"
                   "       [key=value ...]\n"
                   "training runs that differ in settings and seed, each stopped at the same budget, evaluated\n"
                   "on fresh examples of its training set, and compared in DIR/sweep.csv, sweep.json and\n"
                   "report.html. A key given once holds for every run; a key given several times is an axis\n"
                   "of the grid (e.g. batch_size=256 batch_size=1024 lr=1e-3@4000 lr=3e-4@4000 is 4 runs per\n"
                   "seed); --list reads one JSON object of settings per line instead. The budget stops each\n"
                   "run after N examples or S seconds of training (else at the end of its schedule).\n"
                   "--resume continues the sweep DIR holds. Presets as train's (default quick).\n");
            fputs(CLI_COMMON_OPTIONS, stdout);
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
            fputs(CLI_COMMON_OPTIONS, stdout);
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

// The settings each command starts from, under a preset where the command takes one.
static int cmd_keys(int argc, char **argv) {
    const char *preset = DEFAULT_PRESET, *only = NULL;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--preset") == 0) preset = need_value(argc, argv, &i);
        else if (is_help(argv[i])) {
            printf("usage: pathformer keys [COMMAND] [--preset NAME]\n"
                   "every setting (key=value) each command takes, with the value it starts from under the\n"
                   "preset (default %s); COMMAND (train, run, sweep, gen, eval, predict) shows one\n",
                   DEFAULT_PRESET);
            fputs(CLI_COMMON_OPTIONS, stdout);
            return 0;
        } else if (argv[i][0] == '-' || only) die("keys: unexpected argument '%s'", argv[i]);
        else only = argv[i];
    }
    static const char *const COMMANDS[] = {"train", "sweep", "run", "gen", "eval", "predict", NULL};
    int known = 0;
    for (int i = 0; COMMANDS[i]; i++) known |= only && strcmp(only, COMMANDS[i]) == 0;
    if (only && !known) die("keys: '%s' takes no settings (commands with settings: train, run, sweep, gen, eval, predict)", only);
    ExperimentConfig exp;
    if (experiment_preset(&exp, preset) != 0) die_error();
    RunConfig data;
    config_preset(&data, DEFAULT_PRESET);
    int all = !only;
    if (all || !strcmp(only, "train") || !strcmp(only, "sweep")) {
        printf("train and sweep (preset %s; train --phase tune starts from run's fine-tuning below):\n", preset);
        config_print_keys(stdout, &exp.pretrain);
    }
    if (all || !strcmp(only, "run")) {
        printf("run (preset %s): pre-training as train's%s, and fine-tuning:\n", preset, all ? " above" : "");
        experiment_print_keys(stdout, &exp, !all);
    }
    if (all || !strcmp(only, "gen")) {
        printf("gen (no preset; --seed S, --step K):\n");
        config_print_keys_of(stdout, &data, SETTING_SAMPLER | SETTING_SHAPE, "");
    }
    if (all || !strcmp(only, "eval")) {
        printf("eval (no preset; max_v and edges_per_vertex come from the checkpoint; --seed S):\n");
        config_print_keys_of(stdout, &data, SETTING_SAMPLER, "");
    }
    if (all || !strcmp(only, "predict")) printf("predict: no settings (the checkpoint fixes everything)\n");
    close_output(stdout, NULL);
    return 0;
}

// Whatever a command wrote to standard output reached it, or the exit status says it did not
// (`pathformer keys > /dev/full` fails): run at exit, after every command and every help text.
static void check_stdout_at_exit(void) {
    if (!cli_failed() && (fflush(stdout) != 0 || ferror(stdout))) {
        fprintf(cli_errors(), "pathformer: cannot write standard output: %s\n", strerror(errno ? errno : EIO));
        _exit(EXIT_FAILURE);
    }
}

static int run_command(int argc, char **argv) {
    argv = cli_normalize(&argc, argv);
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
    if (strcmp(command, "probe") == 0) return interp_probe_main(argc + 1, argv - 1);
    if (strcmp(command, "inspect") == 0) return interp_inspect_main(argc + 1, argv - 1);
    if (strcmp(command, "ablate") == 0) return interp_ablate_main(argc + 1, argv - 1);
    if (strcmp(command, "inside") == 0) return interp_inside_main(argc + 1, argv - 1);
    if (strcmp(command, "bfs") == 0) return bfs_main(argc, argv);
    if (strcmp(command, "keys") == 0) return cmd_keys(argc, argv);
    die("unknown command '%s' (try: pathformer help)", command);
}

// Under an MPI launcher (mpirun -np K pathformer ...), rank 0 runs the command and the other ranks
// follow its training runs (train_follow); alone, the one process runs the command.
int main(int argc, char **argv) {
    atexit(check_stdout_at_exit);
    dist_init(&argc, &argv);
    if (dist_rank() != 0) return dist_end(train_follow());
    return dist_end(run_command(argc, argv));
}
