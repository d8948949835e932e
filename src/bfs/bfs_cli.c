// `pathformer bfs`: the command line of the hand-built BFS transformer (eval) and its experiments
// (sweep-n, robust, noise), each of which leaves a report.html in its folder.
#include "bfs/bfs_cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "common.h"
#include "ops/ops.h"
#include "bfs/bfs.h"
#include "bfs/bfs_experiments.h"
#include "bfs/bfs_report.h"

static const char *BFS_USAGE =
    "usage: pathformer bfs SUBCOMMAND [options]    the hand-built BFS transformer (SPEC 5)\n"
    "  eval     [--n N] [--target-input] [--scale S] [--blog-reach] [-n COUNT] [--seed S] [--json FILE|-]\n"
    "           MSE, accuracy and per-label MSE of the construction on COUNT random graphs\n"
    "  sweep-n  [--n-min A] [--n-max B] [--scale S] [--blog-reach] [-n COUNT] [--seed S] [--out DIR]\n"
    "           MSE for every N in A..B (default 3..15), dist(1,2) and dist(1,t) variants\n"
    "  robust   [--n N] [--target-input] [--scale S] [--blog-reach] [--matrix LIST] [--index I] [--seeds K] [--steps S]\n"
    "           [--lr X,...] [--batch B] [--threshold T] [-n COUNT] [--seed S] [--out DIR] [--resume]\n"
    "           [--summarize]\n"
    "           replace one weight matrix by N(0,1) entries, retrain with Adam, log the loss per step;\n"
    "           the runs spread over the threads (one each), each saved as it ends in DIR/runs/\n"
    "  noise    [--n N] [--target-input] [--scale S] [--blog-reach] [--sigmas A,B,...] [--seeds K] [--steps S] [--lr X]\n"
    "           [--batch B] [-n COUNT] [--seed S] [--out DIR]\n"
    "           add sigma N(0,1) to every weight; MSE per sigma (and after S Adam steps when S > 0)\n"
    "options:\n"
    "  --n N            vertices = layers = reach heads, 3..31 (default 8, the published size)\n"
    "  --target-input   answer dist(1,t), t uniform in 2..N given on the answer token (default dist(1,2))\n"
    "  --scale S        multiplies every attention score of the construction (default 2; 1 = the\n"
    "                   published constants 12/30/42/7, MSE ~8e-5 at N = 8)\n"
    "  --blog-reach     the blog's reach heads: attend to the neighbours of j and read who they are\n"
    "                   (a hub of degree >= 6..7 stalls BFS a layer: wrong answers from N = 11); the\n"
    "                   default attends to j itself and reads its neighbour list, exact for N <= 15\n"
    "  --matrix LIST    comma list of reach_q, reach_k, reach_v, record_q, record_k, record_v, random\n"
    "                   (a random kind per run, as the blog) or all (every kind; default)\n"
    "  --index I        which matrix of the kind, 0..N-1 (reach head j+1 or layer I; default random)\n"
    "  --seeds K        runs per matrix kind or per sigma (default 5)\n"
    "  --steps S        Adam steps per run (robust default 10000, noise default 0)\n"
    "  --lr X, --batch B   Adam learning rate and batch (default 1e-6, 512, as the blog); robust takes\n"
    "                   a comma list of rates, every run once per rate\n"
    "  --resume         robust: keep the runs DIR already finished (started with the same settings)\n"
    "  --summarize      robust: no training; the summary, CSV, figures and report of the runs of DIR\n"
    "                   finished so far (while or after a protocol runs there)\n"
    "  --threshold T    robust: a run has recovered once its batch MSE is below T (default 0.01)\n"
    "  -n COUNT         evaluation graphs (default 16384; robust/noise 4096)\n"
    "  --sigmas LIST    default 1e-6,1e-5,1e-4,1e-3,0.01,0.1,1\n"
    "  --seed S, --threads T, --out DIR (default runs/bfs-SUBCOMMAND)\n"
    "files: sweep_n.{csv,json}, robust_loss.csv, robust.json, noise.{csv,json}, and Vega-Lite v6\n"
    "specs *.vl.json with their data inlined; report.html shows the settings, a summary table and\n"
    "the figures\n";

// "--matrix reach_q,record_v,random" into a kind list ended by -2 (-1: a random kind per run).
static void parse_kinds(BfsExperiment *exp, const char *text) {
    char buf[256];
    if (strlen(text) >= sizeof(buf)) die("option --matrix: list too long");
    strcpy(buf, text);
    int count = 0;
    for (char *save = NULL, *item = strtok_r(buf, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        int all = strcmp(item, "all") == 0;
        int kind = all || strcmp(item, "random") == 0 ? -1 : bfs_kind_lookup(item);
        if (kind == -1 && !all && strcmp(item, "random") != 0) die_error();
        for (int k = all ? 0 : kind; k < (all ? BFS_NUM_KINDS : kind + 1); k++) {
            if (count == BFS_NUM_KINDS) die("option --matrix: at most %d entries", BFS_NUM_KINDS);
            exp->kinds[count++] = k;
        }
    }
    if (count == 0) die("option --matrix: empty list");
    exp->kinds[count] = -2;
}

// "A,B,..." into values[] (at most max, each in lo..hi); returns the count.
static int parse_list(const char *option, const char *text, double *values, int max, double lo, double hi) {
    char buf[1024];
    if (strlen(text) >= sizeof(buf)) die("option %s: list too long", option);
    strcpy(buf, text);
    int count = 0;
    for (char *save = NULL, *item = strtok_r(buf, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        if (count == max) die("option %s: at most %d values", option, max);
        values[count++] = parse_double(option, item, lo, hi);
    }
    if (count == 0) die("option %s: empty list", option);
    return count;
}

// A parsed `bfs` command line.
typedef struct {
    const char *sub;  // the subcommand
    int is_eval, is_sweep, is_robust, is_noise;
    BfsConfig cfg;
    BfsExperiment exp;
    const char *out_dir, *json_path;
    int threads;
} BfsCommand;

// Parses the options after the subcommand argv[0]; dies on bad input. Returns 1 when it printed
// the help instead.
static int parse_command(BfsCommand *c, int argc, char **argv) {
    c->sub = argv[0];
    c->is_eval = strcmp(c->sub, "eval") == 0;
    c->is_sweep = strcmp(c->sub, "sweep-n") == 0;
    c->is_robust = strcmp(c->sub, "robust") == 0;
    c->is_noise = strcmp(c->sub, "noise") == 0;
    if (!c->is_eval && !c->is_sweep && !c->is_robust && !c->is_noise)
        die("bfs: unknown subcommand '%s' (eval, sweep-n, robust, noise; see pathformer bfs --help)", c->sub);
    c->cfg = (BfsConfig){8, 0, BFS_DEFAULT_SCALE, 0};
    c->exp = bfs_experiment_default();
    c->exp.eval_count = (c->is_robust || c->is_noise) ? 4096 : 16384;
    c->exp.steps = c->is_noise ? 0 : c->exp.steps;
    c->out_dir = c->json_path = NULL;
    c->threads = 0;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (strcmp(o, "--help") == 0 || strcmp(o, "-h") == 0) {
            fputs(BFS_USAGE, stdout);
            fputs(CLI_COMMON_OPTIONS, stdout);
            return 1;
        } else if (strcmp(o, "--n") == 0) {
            c->cfg.n = (int)parse_long(o, need_value(argc, argv, &i), -1000000, 1000000);
        } else if (strcmp(o, "--scale") == 0) {
            c->cfg.scale = c->exp.scale = (float)parse_double(o, need_value(argc, argv, &i), 1e-3, 100.0);
        } else if (strcmp(o, "-n") == 0) {
            c->exp.eval_count = parse_long(o, need_value(argc, argv, &i), 1, 1L << 40);
        } else if (strcmp(o, "--seed") == 0) {
            c->exp.seed = parse_u64(o, need_value(argc, argv, &i));
        } else if (strcmp(o, "--threads") == 0) {
            c->threads = (int)parse_long(o, need_value(argc, argv, &i), 0, 1024);
        } else if (strcmp(o, "--blog-reach") == 0) {
            c->cfg.blog_reach = c->exp.blog_reach = 1;
        } else if (strcmp(o, "--target-input") == 0 && !c->is_sweep) {
            c->cfg.target_input = 1;
        } else if (strcmp(o, "--json") == 0 && c->is_eval) {
            c->json_path = need_value(argc, argv, &i);
        } else if (strcmp(o, "--out") == 0 && !c->is_eval) {
            c->out_dir = need_value(argc, argv, &i);
        } else if (strcmp(o, "--n-min") == 0 && c->is_sweep) {
            c->exp.n_min = (int)parse_long(o, need_value(argc, argv, &i), BFS_MIN_N, BFS_MAX_N);
        } else if (strcmp(o, "--n-max") == 0 && c->is_sweep) {
            c->exp.n_max = (int)parse_long(o, need_value(argc, argv, &i), BFS_MIN_N, BFS_MAX_N);
        } else if (strcmp(o, "--matrix") == 0 && c->is_robust) {
            parse_kinds(&c->exp, need_value(argc, argv, &i));
        } else if (strcmp(o, "--index") == 0 && c->is_robust) {
            c->exp.matrix_index = (int)parse_long(o, need_value(argc, argv, &i), 0, BFS_MAX_N);
        } else if (strcmp(o, "--threshold") == 0 && c->is_robust) {
            c->exp.threshold = parse_double(o, need_value(argc, argv, &i), 0.0, 1e9);
        } else if (strcmp(o, "--sigmas") == 0 && c->is_noise) {
            c->exp.num_sigmas = parse_list(o, need_value(argc, argv, &i), c->exp.sigmas,
                                           (int)(sizeof(c->exp.sigmas) / sizeof(c->exp.sigmas[0])), 0.0, 1e3);
        } else if (strcmp(o, "--seeds") == 0 && (c->is_robust || c->is_noise)) {
            c->exp.seeds = (int)parse_long(o, need_value(argc, argv, &i), 1, 1000000);
        } else if (strcmp(o, "--steps") == 0 && (c->is_robust || c->is_noise)) {
            c->exp.steps = parse_long(o, need_value(argc, argv, &i), 0, 1L << 40);
        } else if (strcmp(o, "--lr") == 0 && c->is_robust) {
            c->exp.num_lrs = parse_list(o, need_value(argc, argv, &i), c->exp.lrs,
                                        (int)(sizeof(c->exp.lrs) / sizeof(c->exp.lrs[0])), 0.0, 10.0);
        } else if (strcmp(o, "--lr") == 0 && c->is_noise) {
            c->exp.lr = parse_double(o, need_value(argc, argv, &i), 0.0, 10.0);
        } else if (strcmp(o, "--resume") == 0 && c->is_robust) {
            c->exp.resume = 1;
        } else if (strcmp(o, "--summarize") == 0 && c->is_robust) {
            c->exp.summarize = 1;
        } else if (strcmp(o, "--batch") == 0 && (c->is_robust || c->is_noise)) {
            c->exp.batch = (int)parse_long(o, need_value(argc, argv, &i), 1, 1 << 16);
        } else {
            die("bfs %s: unknown option '%s' (see pathformer bfs --help)", c->sub, o);
        }
    }
    if (c->exp.n_min > c->exp.n_max) die("bfs sweep-n: --n-min %d is above --n-max %d", c->exp.n_min, c->exp.n_max);
    if (bfs_config_validate(&c->cfg) != 0) die_error();
    return 0;
}

// `bfs eval`: the construction on fresh graphs, a table on stdout and, with --json, the summary.
static int run_eval(const BfsCommand *c) {
    BfsModel model;
    bfs_model_create(&model, &c->cfg, 256, 0);
    bfs_construct(&model);
    BfsEval r;
    double start = pf_now_seconds();
    bfs_evaluate(&r, &model, c->exp.seed, c->exp.eval_count);
    double seconds = pf_now_seconds() - start;
    bfs_model_free(&model);
    printf("bfs N=%d %s scale %g: %ld graphs, MSE %.4g, accuracy %.6f, max |error| %.4g (%.0f graphs/s)\n", c->cfg.n,
           c->cfg.target_input ? "dist(1,t)" : "dist(1,2)", (double)c->cfg.scale, r.count, bfs_eval_mse(&r),
           (double)r.correct / r.count, r.max_error, r.count / seconds);
    printf("label  count     MSE\n");
    for (int label = 0; label <= c->cfg.n + 1; label++)
        if (r.label_count[label])
            printf("%5d%s %6ld  %.4g\n", label, label == c->cfg.n + 1 ? "*" : " ", r.label_count[label],
                   r.label_sse[label] / r.label_count[label]);
    printf("(* = unreachable)\n");
    if (!c->json_path) return 0;
    cJSON *root = cJSON_CreateObject();
    cJSON_AddNumberToObject(root, "n", c->cfg.n);
    cJSON_AddBoolToObject(root, "target_input", c->cfg.target_input);
    cJSON_AddNumberToObject(root, "scale", c->cfg.scale);
    cJSON_AddNumberToObject(root, "seed", (double)c->exp.seed);
    cJSON_AddNumberToObject(root, "count", (double)r.count);
    cJSON_AddNumberToObject(root, "mse", bfs_eval_mse(&r));
    cJSON_AddNumberToObject(root, "accuracy", (double)r.correct / r.count);
    cJSON_AddNumberToObject(root, "max_error", r.max_error);
    int rc = 0;
    if (strcmp(c->json_path, "-") == 0) {  // standard output, after the table
        char *text = cJSON_Print(root);
        puts(text);
        free(text);
    } else {
        rc = pf_write_json_atomic(c->json_path, root, 1);
    }
    cJSON_Delete(root);
    if (rc != 0) die_error();
    return 0;
}

// `bfs sweep-n|robust|noise`: the experiment's files in its folder, then its report.html.
static int run_experiment(const BfsCommand *c, int argc, char **argv) {
    char default_dir[64];
    const char *out_dir = c->out_dir;
    if (!out_dir) {
        snprintf(default_dir, sizeof(default_dir), "runs/bfs-%s", c->sub);
        out_dir = default_dir;
    }
    int rc = c->is_sweep    ? bfs_run_sweep_n(&c->exp, out_dir)
             : c->is_robust ? bfs_run_robust(&c->cfg, &c->exp, out_dir)
                            : bfs_run_noise(&c->cfg, &c->exp, out_dir);
    if (rc != 0) die_error();
    // The results are on disk already: a report that cannot be written is only noted.
    if (bfs_write_report(out_dir, argc, argv) == 0)
        fprintf(stderr, "report: %s/report.html\n", out_dir);
    else
        fprintf(stderr, "report: not written (%s)\n", pf_last_error());
    printf("results in %s\n", out_dir);
    return 0;
}

int bfs_main(int argc, char **argv) {
    if (argc < 1 || strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "-h") == 0 || strcmp(argv[0], "help") == 0) {
        FILE *out = argc < 1 ? stderr : stdout;
        fputs(BFS_USAGE, out);
        fputs(CLI_COMMON_OPTIONS, out);
        return argc < 1 ? EXIT_FAILURE : 0;
    }
    BfsCommand command;
    if (parse_command(&command, argc, argv)) return 0;
    ops_set_threads(command.threads);
    return command.is_eval ? run_eval(&command) : run_experiment(&command, argc, argv);
}
