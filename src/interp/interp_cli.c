// The command line of src/interp: option parsing, loading, and writing each command's files.
#include "interp/interp_cli.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "batch.h"
#include "cli.h"
#include "common.h"
#include "experiment/report.h"
#include "interp/ablate.h"
#include "interp/capture.h"
#include "interp/inside.h"
#include "interp/inspect.h"
#include "interp/probe.h"
#include "interp/probe_bfs.h"
#include "model.h"
#include "ops/ops.h"

static int is_help(const char *arg) { return strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0; }

static void load_checkpoint(Model *model, DataConfig *data, const char *path, int capacity) {
    if (capture_load_model(model, data, path, capacity) != 0) die_error();
}

static void make_out_dir(const char *dir) {
    if (pf_mkdir_p(dir) != 0) die("cannot create %s: %s", dir, pf_last_error());
}

static void write_json(const char *dir, const char *name, const cJSON *json) {
    char path[PF_PATH_MAX];
    if (pf_path_join(path, sizeof(path), dir, name) != 0 || pf_write_json_atomic(path, json, 1) != 0) die_error();
}

// ---------------------------------------------------------------------------------------------
// probe

static const char *PROBE_USAGE =
    "usage: pathformer probe (--checkpoint FILE | --bfs N) [--set NAME] [-n COUNT] [--seed S] [--ridge R]\n"
    "       [--no-random] [--threads T] [--out DIR]\n"
    "  linear probes (ridge regression, closed form) from every layer's token states to graph facts,\n"
    "  fitted on 4/5 of the examples and scored on the held-out 1/5:\n"
    "    edge token (u, v): dist_u, dist_v (dist(1, .), unreachable = max_v; R^2) and within_k\n"
    "    ([dist(1, u) <= k], k = 1..L; accuracy); target token: dist_t (R^2)\n"
    "  controls per cell: the probe on shuffled training labels, and on a randomly initialized model\n"
    "  --checkpoint FILE  a model of SPEC 3 (safetensors)\n"
    "  --bfs N            instead, the hand-built BFS transformer on N vertices (3..31): vertex tokens\n"
    "                     and the answer token; its random control has N(0,1) weights\n"
    "  --set NAME         data set (default pretrain)\n"
    "  -n COUNT           examples (default 8192)\n"
    "  --seed S           data and shuffle seed (default 1)\n"
    "  --ridge R          penalty relative to the Gram matrix's mean diagonal (default 1e-3)\n"
    "  --no-random        skip the random-model control\n"
    "  --out DIR          folder for probe.csv, probe.json, probe.vl.json and report.html (default\n"
    "                     runs/probe)\n";

static void print_probe_table(const ProbeTable *t) {
    printf("layer   ");
    for (int f = 0; f < t->num_facts; f++) printf(" %9.9s", t->names[f]);
    printf("\n");
    for (int l = 0; l < t->layers; l++) {
        printf("%-8d", l);
        for (int f = 0; f < t->num_facts; f++) printf(" %9.3f", probe_cell(t, l, f)->score);
        printf("\n");
    }
    const char *rows[] = {"chance", "shuffled", "random"};
    for (int r = 0; r < 3; r++) {
        printf("%-8s", rows[r]);
        for (int f = 0; f < t->num_facts; f++) {
            // the controls' best layer: what they could reach anywhere
            double best = -INFINITY;
            for (int l = 0; l < t->layers; l++) {
                const ProbeCell *c = probe_cell(t, l, f);
                double v = r == 0 ? c->chance : r == 1 ? c->shuffled : c->random;
                if (v > best) best = v;
            }
            printf(" %9.3f", best);
        }
        printf("\n");
    }
    printf("(score: accuracy for within_k, R^2 for distances; controls: their best layer)\n");
}

static int probe_write_outputs(const ProbeTable *t, const char *dir, const char *title) {
    make_out_dir(dir);
    char path[PF_PATH_MAX];
    if (pf_path_join(path, sizeof(path), dir, "probe.csv") != 0 || probe_write_csv(t, path) != 0) die_error();
    cJSON *json = probe_to_json(t);
    cJSON_AddStringToObject(json, "title", title);
    write_json(dir, "probe.json", json);
    cJSON_Delete(json);
    cJSON *spec = probe_heatmap_spec(t, title);
    write_json(dir, "probe.vl.json", spec);
    Report *report = report_create("pathformer probe");
    report_add_section(report, "Linear probes");
    report_add_text(report, title);
    report_add_text(report, "Held-out accuracy (within_k) or R^2 (distances) of a ridge probe per layer (0: the "
                            "input embedding) and fact. The tooltip gives the controls: the probe on shuffled "
                            "labels, on a randomly initialized model, and the majority-class accuracy.");
    if (report_add_vegalite(report, "probe", "Probe score per layer and fact", spec) != 0) die_error();
    cJSON_Delete(spec);
    int rc = report_write(report, dir);
    report_free(report);
    if (rc != 0) die_error();
    return 0;
}

int interp_probe_main(int argc, char **argv) {
    const char *checkpoint = NULL, *set = "pretrain", *out = "runs/probe";
    int bfs_n = 0, random_control = 1, threads = 0;
    long count = 8192;
    uint64_t seed = 1;
    double ridge = 1e-3;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (is_help(o)) {
            fputs(PROBE_USAGE, stdout);
            return 0;
        } else if (strcmp(o, "--checkpoint") == 0) {
            checkpoint = need_value(argc, argv, &i);
        } else if (strcmp(o, "--bfs") == 0) {
            bfs_n = (int)parse_long(o, need_value(argc, argv, &i), BFS_MIN_N, BFS_MAX_N);
        } else if (strcmp(o, "--set") == 0) {
            set = need_value(argc, argv, &i);
        } else if (strcmp(o, "-n") == 0) {
            count = parse_long(o, need_value(argc, argv, &i), 5, 1L << 22);
        } else if (strcmp(o, "--seed") == 0) {
            seed = parse_u64(o, need_value(argc, argv, &i));
        } else if (strcmp(o, "--ridge") == 0) {
            ridge = parse_double(o, need_value(argc, argv, &i), 1e-12, 1e6);
        } else if (strcmp(o, "--no-random") == 0) {
            random_control = 0;
        } else if (strcmp(o, "--threads") == 0) {
            threads = (int)parse_long(o, need_value(argc, argv, &i), 0, 1024);
        } else if (strcmp(o, "--out") == 0) {
            out = need_value(argc, argv, &i);
        } else {
            die("probe: unknown option '%s' (see pathformer probe --help)", o);
        }
    }
    if (!checkpoint == !bfs_n) die("probe: give exactly one of --checkpoint FILE and --bfs N");
    ops_set_threads(threads);
    ProbeData data, random_data;
    ProbeTable table, random_table;
    char title[PF_PATH_MAX + 128];
    double start = pf_now_seconds();
    if (bfs_n) {
        BfsConfig cfg = {bfs_n, 0, BFS_DEFAULT_SCALE, 0};
        BfsModel bfs;
        bfs_model_create(&bfs, &cfg, 256, 1);
        bfs_construct(&bfs);
        if (probe_collect_bfs(&data, &bfs, seed, count) != 0) die_error();
        if (random_control) {
            probe_bfs_randomize(&bfs, seed);
            if (probe_collect_bfs(&random_data, &bfs, seed, count) != 0) die_error();
        }
        bfs_model_free(&bfs);
        snprintf(title, sizeof(title), "hand-built BFS transformer, N = %d, %ld graphs", bfs_n, count);
    } else {
        Model model;
        DataConfig dc;
        load_checkpoint(&model, &dc, checkpoint, 256);
        if (probe_collect_model(&data, &model, set, &dc, seed, count, 256) != 0) die_error();
        if (random_control) {
            model_init(&model, seed, 1);
            if (probe_collect_model(&random_data, &model, set, &dc, seed, count, 256) != 0) die_error();
        }
        model_free(&model);
        snprintf(title, sizeof(title), "%s on %s, %ld examples", checkpoint, set, count);
    }
    if (probe_run(&table, &data, ridge, seed) != 0) die_error();
    if (random_control) {
        if (probe_run(&random_table, &random_data, ridge, seed) != 0) die_error();
        if (probe_set_random_control(&table, &random_table) != 0) die_error();
        probe_table_free(&random_table);
        probe_data_free(&random_data);
    }
    printf("probe: %s (%.1f s)\n", title, pf_now_seconds() - start);
    print_probe_table(&table);
    probe_write_outputs(&table, out, title);
    printf("wrote %s/probe.csv, probe.json, probe.vl.json, report.html\n", out);
    probe_table_free(&table);
    probe_data_free(&data);
    return 0;
}

// ---------------------------------------------------------------------------------------------
// inspect

static const char *INSPECT_USAGE =
    "usage: pathformer inspect --checkpoint FILE [-i FILE | --set NAME [--seed S] [--index I]] [--out DIR]\n"
    "  one graph through the model: its prediction, every layer's and head's attention between its\n"
    "  tokens, and the residual stream's norms\n"
    "  -i FILE       the graph as one JSON line {\"edges\": [[1,2],...], \"target\": t} (default: standard\n"
    "                input)\n"
    "  --set NAME    instead, example I (default 0) of a named data set drawn with seed S (default 1)\n"
    "  --out DIR     folder for inspect.json and report.html (default runs/inspect): the graph drawn with\n"
    "                the attention a token pays each edge, per layer and head (sliders), the token x\n"
    "                token attention, and the residual norms\n";

// The first non-empty line of a file (or standard input) as an example.
static void read_example(Example *ex, const char *path, const DataConfig *cfg) {
    FILE *f = stdin;
    if (path && strcmp(path, "-") != 0) {
        f = fopen(path, "r");
        if (!f) die("cannot read %s: %s", path, strerror(errno));
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int found = 0;
    while ((len = getline(&line, &cap, f)) >= 0) {
        int blank = 1;
        for (ssize_t i = 0; i < len; i++) blank &= line[i] == ' ' || line[i] == '\t' || line[i] == '\n' || line[i] == '\r';
        if (blank) continue;
        if (example_parse_jsonl(ex, line, cfg) != 0) die("%s: %s", path ? path : "standard input", pf_last_error());
        // an edge list does not say how many vertices there are: draw up to the largest id named
        int n = ex->target > 2 ? ex->target : 2;
        for (int e = 0; e < ex->graph.num_edges; e++)
            if (ex->graph.edges[e][1] > n) n = ex->graph.edges[e][1];
        ex->graph.n = n;
        found = 1;
        break;
    }
    free(line);
    if (f != stdin) fclose(f);
    if (!found) die("%s: no graph (expected a JSON line {\"edges\": [[1,2],...], \"target\": t})", path ? path : "standard input");
}

int interp_inspect_main(int argc, char **argv) {
    const char *checkpoint = NULL, *input = NULL, *set = NULL, *out = "runs/inspect";
    uint64_t seed = 1;
    long index = 0;
    int seeded = 0;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (is_help(o)) {
            fputs(INSPECT_USAGE, stdout);
            return 0;
        } else if (strcmp(o, "--checkpoint") == 0) {
            checkpoint = need_value(argc, argv, &i);
        } else if (strcmp(o, "-i") == 0) {
            input = need_value(argc, argv, &i);
        } else if (strcmp(o, "--set") == 0) {
            set = need_value(argc, argv, &i);
        } else if (strcmp(o, "--seed") == 0) {
            seed = parse_u64(o, need_value(argc, argv, &i));
            seeded = 1;
        } else if (strcmp(o, "--index") == 0) {
            index = parse_long(o, need_value(argc, argv, &i), 0, 1L << 40);
            seeded = 1;
        } else if (strcmp(o, "--out") == 0) {
            out = need_value(argc, argv, &i);
        } else {
            die("inspect: unknown option '%s' (see pathformer inspect --help)", o);
        }
    }
    if (!checkpoint) die("inspect: --checkpoint FILE is required");
    if (input && set) die("inspect: give -i FILE or --set NAME, not both");
    if (seeded && !set) die("inspect: --seed and --index pick an example of --set NAME");
    Model model;
    DataConfig dc;
    load_checkpoint(&model, &dc, checkpoint, 1);
    Example ex;
    if (set) {
        DataSet ds;
        if (dataset_lookup(&ds, set, &dc) != 0) die_error();
        dataset_sample_keyed(&ex, &ds, &dc, seed, 0, (uint64_t)index);
    } else {
        read_example(&ex, input, &dc);
    }
    cJSON *inspected = inspect_example(&model, &ex, &dc);
    model_free(&model);
    make_out_dir(out);
    write_json(out, "inspect.json", inspected);
    Report *report = report_create("pathformer inspect");
    report_add_section(report, "One graph inside the model");
    char text[256];
    snprintf(text, sizeof(text), "%s: a graph on %d vertices with %d edges, dist(1, %d) = %d, predicted %.4f.", checkpoint,
             ex.graph.n, ex.graph.num_edges, ex.target, ex.label,
             cJSON_GetObjectItem(inspected, "prediction")->valuedouble);
    report_add_text(report, text);
    cJSON *specs[3] = {inspect_graph_spec(inspected), inspect_attention_spec(inspected), inspect_norms_spec(inspected)};
    const char *names[3] = {"graph", "attention", "norms"};
    const char *captions[3] = {
        "The graph, vertex 1 at the top; each edge token coloured and thickened by the attention the query token "
        "(default: the target token) pays it in the chosen layer and head.",
        "Every token's attention over the example's tokens in the chosen layer and head.",
        "The L2 norm of each token's residual stream after each layer."};
    for (int i = 0; i < 3; i++) {
        if (report_add_vegalite(report, names[i], captions[i], specs[i]) != 0) die_error();
        cJSON_Delete(specs[i]);
    }
    int rc = report_write(report, out);
    report_free(report);
    if (rc != 0) die_error();
    printf("dist(1, %d) = %d, predicted %.4f; wrote %s/inspect.json and report.html\n", ex.target, ex.label,
           cJSON_GetObjectItem(inspected, "prediction")->valuedouble, out);
    cJSON_Delete(inspected);
    return 0;
}

// ---------------------------------------------------------------------------------------------
// ablate

static const char *ABLATE_USAGE =
    "usage: pathformer ablate --checkpoint FILE [--set NAME] [-n COUNT] [--seed S] [--modes zero,mean]\n"
    "       [--threads T] [--out DIR]\n"
    "  knocks out each attention head's output (its slice before the output projection) and each\n"
    "  layer's feed-forward output, one at a time, and measures the change in MSE, overall and per label\n"
    "  --set NAME     data set (default pretrain)\n"
    "  -n COUNT       examples (default 2048)\n"
    "  --seed S       data seed (default 1)\n"
    "  --modes LIST   zero (the output set to 0), mean (set to its mean over the set's real positions),\n"
    "                 or both (default zero,mean)\n"
    "  --out DIR      folder for ablate.csv, ablate.json, the figures and report.html (default runs/ablate)\n";

static int parse_modes(const char *text) {
    char buf[64];
    if (strlen(text) >= sizeof(buf)) die("ablate: option --modes: list too long");
    strcpy(buf, text);
    int modes = 0;
    for (char *save = NULL, *item = strtok_r(buf, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        if (strcmp(item, "zero") == 0)
            modes |= 1 << ABLATE_ZERO;
        else if (strcmp(item, "mean") == 0)
            modes |= 1 << ABLATE_MEAN;
        else
            die("ablate: option --modes: unknown mode '%s' (zero, mean)", item);
    }
    if (!modes) die("ablate: option --modes: empty list");
    return modes;
}

// The ablation's files and page in `dir`.
static void write_ablation(const AblationTable *t, const char *dir, const char *title) {
    make_out_dir(dir);
    char path[PF_PATH_MAX];
    if (pf_path_join(path, sizeof(path), dir, "ablate.csv") != 0 || ablate_write_csv(t, path) != 0) die_error();
    cJSON *json = ablate_to_json(t);
    cJSON_AddStringToObject(json, "title", title);
    write_json(dir, "ablate.json", json);
    cJSON_Delete(json);
    Report *report = report_create("pathformer ablate");
    report_add_section(report, "Ablations");
    report_add_text(report, title);
    cJSON *bars = ablate_bar_spec(t, "change in MSE with one component knocked out");
    cJSON *labels = ablate_label_spec(t, "change in MSE per true distance");
    if (report_add_vegalite(report, "ablate", "Change in MSE when one head's or one feed-forward's output is zeroed "
                                              "or replaced by its mean (symlog scale).", bars) != 0 ||
        report_add_vegalite(report, "ablate-labels", "The same per label: which distances each component serves.",
                            labels) != 0)
        die_error();
    cJSON_Delete(bars);
    cJSON_Delete(labels);
    int rc = report_write(report, dir);
    report_free(report);
    if (rc != 0) die_error();
}

int interp_ablate_main(int argc, char **argv) {
    const char *checkpoint = NULL, *set = "pretrain", *out = "runs/ablate";
    long count = 2048;
    uint64_t seed = 1;
    int modes = 1 << ABLATE_ZERO | 1 << ABLATE_MEAN, threads = 0;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (is_help(o)) {
            fputs(ABLATE_USAGE, stdout);
            return 0;
        } else if (strcmp(o, "--checkpoint") == 0) {
            checkpoint = need_value(argc, argv, &i);
        } else if (strcmp(o, "--set") == 0) {
            set = need_value(argc, argv, &i);
        } else if (strcmp(o, "-n") == 0) {
            count = parse_long(o, need_value(argc, argv, &i), 1, 1L << 24);
        } else if (strcmp(o, "--seed") == 0) {
            seed = parse_u64(o, need_value(argc, argv, &i));
        } else if (strcmp(o, "--modes") == 0) {
            modes = parse_modes(need_value(argc, argv, &i));
        } else if (strcmp(o, "--threads") == 0) {
            threads = (int)parse_long(o, need_value(argc, argv, &i), 0, 1024);
        } else if (strcmp(o, "--out") == 0) {
            out = need_value(argc, argv, &i);
        } else {
            die("ablate: unknown option '%s' (see pathformer ablate --help)", o);
        }
    }
    if (!checkpoint) die("ablate: --checkpoint FILE is required");
    ops_set_threads(threads);
    Model model;
    DataConfig dc;
    load_checkpoint(&model, &dc, checkpoint, 1);
    AblationTable t;
    double start = pf_now_seconds();
    if (ablate_run(&t, &model, set, &dc, seed, count, modes, 256) != 0) die_error();
    model_free(&model);
    char title[PF_PATH_MAX + 128];
    snprintf(title, sizeof(title), "%s on %s, %ld examples", checkpoint, set, count);
    printf("ablate: %s (%.1f s)\n%-12s %-5s %10s %10s\n", title, pf_now_seconds() - start, "component", "mode", "MSE",
           "change");
    for (int r = 0; r < t.num_rows; r++) {
        char name[32];
        ablate_component_name(name, sizeof(name), &t.rows[r]);
        printf("%-12s %-5s %10.4g %+10.4g\n", name, t.rows[r].mode == ABLATE_ZERO ? "zero" : t.rows[r].mode ? "mean" : "",
               ablate_mse(&t, r), ablate_mse(&t, r) - ablate_mse(&t, 0));
    }
    write_ablation(&t, out, title);
    printf("wrote %s/ablate.csv, ablate.json, report.html\n", out);
    ablate_table_free(&t);
    return 0;
}

// ---------------------------------------------------------------------------------------------
// inside

static const char *INSIDE_USAGE =
    "usage: pathformer inside --run DIR [--probe-n N] [--ablate-n N] [--graphs K] [--seed S] [--threads T]\n"
    "  the \"Inside the model\" section of an experiment's report: probes of DIR/pretrain/model.safetensors\n"
    "  and DIR/tune/model.safetensors side by side (and their difference), each model's ablations, and\n"
    "  the attention of K example graphs (onpath-large-target) in the fine-tuned model; written to\n"
    "  DIR/inside/ (figures and the manifest inside.json). Then `pathformer run --out DIR --phase report`\n"
    "  puts the section into DIR/report.html\n"
    "  --probe-n N    examples per model for the probes (default 4096, pretrain)\n"
    "  --ablate-n N   examples per model for the ablations (default 1024, pretrain)\n"
    "  --graphs K     example graphs (default 3)\n";

int interp_inside_main(int argc, char **argv) {
    const char *run = NULL;
    InsideOptions o = inside_options_default();
    int threads = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (is_help(a)) {
            fputs(INSIDE_USAGE, stdout);
            return 0;
        } else if (strcmp(a, "--run") == 0) {
            run = need_value(argc, argv, &i);
        } else if (strcmp(a, "--probe-n") == 0) {
            o.probe_count = parse_long(a, need_value(argc, argv, &i), 5, 1L << 22);
        } else if (strcmp(a, "--ablate-n") == 0) {
            o.ablate_count = parse_long(a, need_value(argc, argv, &i), 1, 1L << 24);
        } else if (strcmp(a, "--graphs") == 0) {
            o.graphs = (int)parse_long(a, need_value(argc, argv, &i), 0, 100);
        } else if (strcmp(a, "--seed") == 0) {
            o.seed = parse_u64(a, need_value(argc, argv, &i));
        } else if (strcmp(a, "--threads") == 0) {
            threads = (int)parse_long(a, need_value(argc, argv, &i), 0, 1024);
        } else {
            die("inside: unknown option '%s' (see pathformer inside --help)", a);
        }
    }
    if (!run) die("inside: --run DIR is required");
    ops_set_threads(threads);
    double start = pf_now_seconds();
    if (inside_write(run, &o) != 0) die_error();
    printf("wrote %s/inside/ (%.0f s); put it into the report with: pathformer run --out %s --phase report\n", run,
           pf_now_seconds() - start, run);
    return 0;
}
