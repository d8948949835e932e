// The report of a bfs experiment: DIR/report.html, built from the JSON summary and the Vega-Lite
// specs the experiment left in its --out folder, so the page shows exactly the numbers on disk.
#include "bfs/bfs_report.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "common.h"
#include "experiment/report.h"
#include "bfs/bfs.h"

// Table cells are formatted into fixed slots of this size.
#define CELL_SIZE 48

static cJSON *read_summary(const char *dir, const char *name) {
    char path[PF_PATH_MAX + 64];
    pf_path_join(path, sizeof(path), dir, name);
    return pf_read_json(path);
}

static void format_number(char *out, double v) {
    if (isfinite(v))
        snprintf(out, CELL_SIZE, "%.4g", v);
    else
        snprintf(out, CELL_SIZE, "—");
}

// The cells of a table: `count` slots of CELL_SIZE characters and the pointers to them.
typedef struct {
    char (*text)[CELL_SIZE];
    const char **cells;
} Cells;

static Cells cells_create(int count) {
    Cells c = {mallocCheck(sizeof(*c.text) * (size_t)count), mallocCheck(sizeof(*c.cells) * (size_t)count)};
    for (int i = 0; i < count; i++) {
        snprintf(c.text[i], CELL_SIZE, "—");
        c.cells[i] = c.text[i];
    }
    return c;
}

static void cells_free(Cells *c) {
    free(c->text);
    free(c->cells);
}

// "pathformer bfs ARGS", each argument quoted for a POSIX shell where it needs to be.
static char *command_line(int argc, char **argv) {
    size_t size = 32;
    for (int i = 0; i < argc; i++) size += 4 * strlen(argv[i]) + 3;
    char *out = mallocCheck(size), *p = out;
    p += sprintf(p, "pathformer bfs");
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        *p++ = ' ';
        if (a[0] && strspn(a, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-+=.,:/") == strlen(a)) {
            p += sprintf(p, "%s", a);
            continue;
        }
        *p++ = '\'';
        for (; *a; a++) p += *a == '\'' ? sprintf(p, "'\\''") : sprintf(p, "%c", *a);
        *p++ = '\'';
    }
    *p = '\0';
    return out;
}

// One of the experiment's figures, DIR/NAME.vl.json, under its own name.
static int add_figure(Report *report, const char *dir, const char *name, const char *caption) {
    char path[PF_PATH_MAX + 64];
    snprintf(path, sizeof(path), "%s/%s.vl.json", dir, name);
    return report_add_vegalite_file(report, name, caption, path);
}

// "N = 8, dist(1, 2), scale 2" from a summary's "model" object.
static void describe_model(char *out, size_t size, const cJSON *summary) {
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(summary, "model");
    int target_input = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "target_input"));
    snprintf(out, size, "N = %.0f, %s, score scale %g", report_json_number(model, "n"),
             target_input ? "dist(1, t) with the target on the answer token" : "dist(1, 2)",
             report_json_number(model, "scale"));
}

static int sweep_report(Report *report, const cJSON *summary, const char *dir) {
    const cJSON *rows = cJSON_GetObjectItemCaseSensitive(summary, "rows");
    int count = cJSON_GetArraySize(rows);
    if (count == 0) return pf_fail("%s/sweep_n.json has no rows", dir);
    int n_min = (int)report_json_number(cJSON_GetArrayItem(rows, 0), "n");
    int n_max = (int)report_json_number(cJSON_GetArrayItem(rows, count - 1), "n");
    if (n_min < BFS_MIN_N || n_max > BFS_MAX_N || n_min > n_max) return pf_fail("%s/sweep_n.json: bad N range", dir);
    char text[1024];
    snprintf(text, sizeof(text),
             "The hand-built construction, without training, evaluated for N = %d..%d (vertices = layers) on %.0f "
             "fresh random graphs per N and variant (seed %.0f), every attention score times %g (1 = the published "
             "12/30/42/7). Variants: dist(1, 2) as in the blog, and dist(1, t) with the target t given on the answer "
             "token. Accuracy: the rounded output equals the true distance.",
             n_min, n_max, report_json_number(summary, "count"), report_json_number(summary, "seed"),
             report_json_number(summary, "scale"));
    report_add_text(report, text);

    report_add_section(report, "Results");
    const char *header[] = {"N", "MSE dist(1, 2)", "accuracy dist(1, 2)", "MSE dist(1, t)", "accuracy dist(1, t)"};
    int table_rows = n_max - n_min + 1;
    Cells c = cells_create(5 * table_rows);
    for (int i = 0; i < table_rows; i++) snprintf(c.text[5 * i], CELL_SIZE, "%d", n_min + i);
    const cJSON *row;
    cJSON_ArrayForEach(row, rows) {
        int n = (int)report_json_number(row, "n");
        const cJSON *variant = cJSON_GetObjectItemCaseSensitive(row, "variant");
        if (n < n_min || n > n_max || !cJSON_IsString(variant)) continue;
        int column = strcmp(variant->valuestring, "dist(1,2)") == 0 ? 1 : 3;
        int at = 5 * (n - n_min) + column;
        format_number(c.text[at], report_json_number(row, "mse"));
        snprintf(c.text[at + 1], CELL_SIZE, "%.4f%%", 100.0 * report_json_number(row, "accuracy"));
    }
    report_add_table(report, 5, header, table_rows, c.cells);
    cells_free(&c);

    report_add_section(report, "Figures");
    return add_figure(report, dir, "sweep_n",
                      "MSE of the construction per N, both variants (log scale; an MSE of 0 is drawn at 1e-12).");
}

static int robust_report(Report *report, const cJSON *summary, const char *dir) {
    char model[256], text[1536], rates[256] = "";
    describe_model(model, sizeof(model), summary);
    double threshold = report_json_number(summary, "threshold"), steps = report_json_number(summary, "steps");
    const cJSON *lrs = cJSON_GetObjectItemCaseSensitive(summary, "lrs"), *lr;
    int num_lrs = cJSON_GetArraySize(lrs);
    cJSON_ArrayForEach(lr, lrs) {
        size_t used = strlen(rates);
        snprintf(rates + used, sizeof(rates) - used, "%s%g", used ? ", " : "", lr->valuedouble);
    }
    snprintf(text, sizeof(text),
             "The hand-built construction (%s) with one weight matrix replaced by N(0, 1) entries, then retrained "
             "with Adam (lr %s, batch %.0f, %.0f steps on fresh graphs). %.0f runs (seeds 0..%.0f) per damaged-matrix "
             "kind%s; 'random' draws the kind per run. A run recovers when its batch MSE falls below %g; the MSE before "
             "and after retraining is measured on %.0f fresh graphs (seed %.0f). %.0f of the %.0f planned runs have "
             "finished.",
             model, rates, report_json_number(summary, "batch"), steps, report_json_number(summary, "seeds"),
             report_json_number(summary, "seeds") - 1, num_lrs > 1 ? " and rate" : "", threshold,
             report_json_number(summary, "eval_count"), report_json_number(summary, "seed"),
             report_json_number(summary, "runs_finished"), report_json_number(summary, "runs_planned"));
    report_add_text(report, text);

    report_add_section(report, "Results");
    const char *header[] = {"damaged matrix", "lr", "runs", "recovered", "median steps to recover",
                            "median MSE before retraining", "median MSE after retraining", "median final batch MSE"};
    enum { COLUMNS = 8 };
    const cJSON *table = cJSON_GetObjectItemCaseSensitive(summary, "table");
    int table_rows = cJSON_GetArraySize(table), i = 0;
    Cells c = cells_create(COLUMNS * table_rows);
    const cJSON *row;
    cJSON_ArrayForEach(row, table) {
        char (*cell)[CELL_SIZE] = &c.text[COLUMNS * i++];
        const cJSON *kind = cJSON_GetObjectItemCaseSensitive(row, "kind");
        double runs = report_json_number(row, "runs");
        snprintf(cell[0], CELL_SIZE, "%s", cJSON_IsString(kind) ? kind->valuestring : "?");
        snprintf(cell[1], CELL_SIZE, "%g", report_json_number(row, "lr"));
        snprintf(cell[2], CELL_SIZE, "%.0f of %.0f", runs, report_json_number(row, "runs_planned"));
        if (runs > 0)
            snprintf(cell[3], CELL_SIZE, "%.0f (%.0f%%)", report_json_number(row, "recovered"),
                     100.0 * report_json_number(row, "recovered_fraction"));
        else
            snprintf(cell[3], CELL_SIZE, "—");
        format_number(cell[4], report_json_number(row, "median_steps_to_recover"));
        format_number(cell[5], report_json_number(row, "median_eval_mse_before"));
        format_number(cell[6], report_json_number(row, "median_final_eval_mse"));
        format_number(cell[7], report_json_number(row, "median_final_loss"));
    }
    report_add_table(report, COLUMNS, header, table_rows, c.cells);
    cells_free(&c);
    report_add_text(report, "Median steps to recover: over the runs that recovered (— where none did).");

    report_add_section(report, "Figures");
    int rc = add_figure(report, dir, "robust_loss",
                        "Batch MSE at each step of every run (log scale), coloured by the damaged matrix kind.");
    snprintf(text, sizeof(text), "Fraction of the runs of each kind whose batch MSE fell below %g within %.0f steps.",
             threshold, steps);
    if (rc == 0) rc = add_figure(report, dir, "robust_recovered", text);
    if (rc == 0 && num_lrs > 1) {
        snprintf(text, sizeof(text),
                 "Median final batch MSE of each kind against Adam's learning rate (log scales); the dashed line is "
                 "the recovery threshold %g.",
                 threshold);
        rc = add_figure(report, dir, "robust_lr", text);
    }
    return rc;
}

static int noise_report(Report *report, const cJSON *summary, const char *dir) {
    char model[256], text[1024];
    describe_model(model, sizeof(model), summary);
    double retrain_steps = report_json_number(summary, "retrain_steps");
    int retrained = retrain_steps > 0;
    char retraining[256] = "not retrained (--steps 0)";
    if (retrained)
        snprintf(retraining, sizeof(retraining), "then retrained with Adam (lr %g, batch %.0f, %.0f steps)",
                 report_json_number(summary, "lr"), report_json_number(summary, "batch"), retrain_steps);
    snprintf(text, sizeof(text),
             "The hand-built construction (%s) with every weight perturbed by sigma N(0, 1), %s. %.0f runs "
             "(seeds 0..%.0f) per sigma; MSE and accuracy on %.0f fresh graphs (seed %.0f).",
             model, retraining, report_json_number(summary, "seeds"), report_json_number(summary, "seeds") - 1,
             report_json_number(summary, "eval_count"), report_json_number(summary, "seed"));
    report_add_text(report, text);

    report_add_section(report, "Results");
    const char *header[] = {"sigma", "runs", "median MSE", "MSE min..max", "median accuracy",
                            "median MSE after retraining"};
    int columns = retrained ? 6 : 5;
    const cJSON *rows = cJSON_GetObjectItemCaseSensitive(summary, "rows");
    int table_rows = cJSON_GetArraySize(rows), i = 0;
    Cells c = cells_create(columns * table_rows);
    const cJSON *row;
    cJSON_ArrayForEach(row, rows) {
        char (*cell)[CELL_SIZE] = &c.text[columns * i++];
        snprintf(cell[0], CELL_SIZE, "%g", report_json_number(row, "sigma"));
        snprintf(cell[1], CELL_SIZE, "%.0f", report_json_number(row, "runs"));
        format_number(cell[2], report_json_number(row, "median_mse"));
        snprintf(cell[3], CELL_SIZE, "%.3g..%.3g", report_json_number(row, "min_mse"),
                 report_json_number(row, "max_mse"));
        snprintf(cell[4], CELL_SIZE, "%.4f%%", 100.0 * report_json_number(row, "median_accuracy"));
        if (retrained) format_number(cell[5], report_json_number(row, "median_mse_after_retraining"));
    }
    report_add_table(report, columns, header, table_rows, c.cells);
    cells_free(&c);

    report_add_section(report, "Figures");
    return add_figure(report, dir, "noise",
                      retrained ? "MSE of each run against sigma (points; log scales, 0 drawn at 1e-12) and the median "
                                  "(line), after the perturbation and after retraining."
                                : "MSE of each run against sigma (points; log scales, 0 drawn at 1e-12) and the median "
                                  "(line).");
}

int bfs_write_report(const char *out_dir, int argc, char **argv) {
    static const struct {
        const char *subcommand, *summary, *title;
        int (*build)(Report *, const cJSON *, const char *);
    } KINDS[] = {
        {"sweep-n", "sweep_n.json", "pathformer bfs sweep-n: the hand-built BFS transformer for every N", sweep_report},
        {"robust", "robust.json", "pathformer bfs robust: damage one weight matrix, retrain", robust_report},
        {"noise", "noise.json", "pathformer bfs noise: perturb every weight", noise_report},
    };
    int kind = -1;
    for (int i = 0; i < 3 && argc > 0; i++)
        if (strcmp(argv[0], KINDS[i].subcommand) == 0) kind = i;
    if (kind < 0) return pf_fail("bfs: no report for '%s'", argc > 0 ? argv[0] : "");
    cJSON *summary = read_summary(out_dir, KINDS[kind].summary);
    if (!summary) return -1;
    Report *report = report_create(KINDS[kind].title);
    int rc = KINDS[kind].build(report, summary, out_dir);

    report_add_section(report, "Run");
    char *command = command_line(argc, argv);
    char *escaped = report_escape(command);
    size_t size = strlen(escaped) + 256;
    char *html = mallocCheck(size);
    snprintf(html, size,
             "<p>pathformer %s; the command (settings not given are the defaults, listed above):</p>\n<pre>%s</pre>\n"
             "<p>The folder also holds the CSV logs, the JSON summary and the figures' Vega-Lite specs.</p>\n",
             PF_VERSION, escaped);
    report_add_html(report, html);
    free(html);
    free(escaped);
    free(command);

    if (rc == 0) rc = report_write(report, out_dir);
    report_free(report);
    cJSON_Delete(summary);
    return rc;
}
