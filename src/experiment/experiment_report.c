// The report phase of the experiment: metrics.json (every number of the report) and report.html
// with its figures, built as Vega-Lite specs from the run folder's logs and evaluations.
#include "experiment/experiment_report.h"

#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "adam.h"
#include "common.h"
#include "experiment/losscurve.h"
#include "experiment/report.h"
#include "experiment/vegalite.h"
#include "train.h"

// Phase changes: the loss of a label falls at least this much across one detection window.
#define PHASE_CHANGE_FACTOR 3.0
// Curves in the report keep at most about this many points per series (metrics use every step).
#define MAX_PLOT_POINTS 1500

typedef struct {
    const char *name;       // pretrain or tune
    LossLog log;
    long batch_size;
    LrSchedule schedule;    // the run's learning-rate schedule (its segments are marked)
    double examples_per_s;  // over all steps of all sessions
    long phase_step[PF_MAX_VERTICES + 1];  // -1 where the label shows no phase change
    int window;
} Training;

static int load_training(Training *training, const char *name, const RunConfig *cfg, const char *run_dir) {
    memset(training, 0, sizeof(*training));
    training->name = name;
    training->batch_size = cfg->batch_size;
    if (lr_schedule_parse(&training->schedule, cfg->lr_schedule) != 0) return -1;
    char path[PF_PATH_MAX + 64];
    snprintf(path, sizeof(path), "%s/%s/train.csv", run_dir, name);
    if (losslog_read(&training->log, path) != 0) return -1;
    const LossLog *log = &training->log;
    if (log->n == 0) return pf_fail("%s has no steps", path);
    double seconds = 0.0;
    for (long i = 0; i < log->n; i++)
        if (log->examples_per_s[i] > 0) seconds += cfg->batch_size / log->examples_per_s[i];
    training->examples_per_s = seconds > 0 ? log->n * (double)cfg->batch_size / seconds : 0.0;
    training->window = phase_change_window(log->n);
    double *curve = mallocCheck(sizeof(double) * (size_t)log->n);
    for (int label = 0; label <= PF_MAX_VERTICES; label++) training->phase_step[label] = -1;
    for (int label = 1; label <= log->max_label; label++) {
        for (long i = 0; i < log->n; i++) curve[i] = losslog_label(log, i, label);
        long index = phase_change_index(curve, log->n, training->window, PHASE_CHANGE_FACTOR);
        training->phase_step[label] = index >= 0 ? log->step[index] : -1;
    }
    free(curve);
    return 0;
}

static long plot_stride(long n) { return n > MAX_PLOT_POINTS ? (n + MAX_PLOT_POINTS - 1) / MAX_PLOT_POINTS : 1; }

static cJSON *training_metrics(const Training *t) {
    const LossLog *log = &t->log;
    cJSON *json = cJSON_CreateObject();
    cJSON_AddNumberToObject(json, "steps", (double)log->n);
    cJSON_AddNumberToObject(json, "batch_size", (double)t->batch_size);
    cJSON_AddNumberToObject(json, "examples", (double)log->n * (double)t->batch_size);
    cJSON_AddNumberToObject(json, "first_train_mse", log->mse[0]);
    cJSON_AddNumberToObject(json, "final_train_mse", log->mse[log->n - 1]);
    cJSON_AddNumberToObject(json, "examples_per_second", t->examples_per_s);
    cJSON *changes = cJSON_AddArrayToObject(json, "lr_changes");  // where each segment of the schedule starts
    for (int k = 0; k < t->schedule.num_segments; k++) {
        cJSON *change = cJSON_CreateObject();
        long start = lr_schedule_segment_start(&t->schedule, k);
        cJSON_AddNumberToObject(change, "step", (double)start);
        cJSON_AddNumberToObject(change, "lr", lr_schedule_at(&t->schedule, start));
        cJSON_AddItemToArray(changes, change);
    }
    cJSON *phase = cJSON_AddObjectToObject(json, "phase_changes");
    cJSON_AddNumberToObject(phase, "window", t->window);
    cJSON_AddNumberToObject(phase, "factor", PHASE_CHANGE_FACTOR);
    cJSON *steps = cJSON_AddArrayToObject(phase, "labels");
    for (int label = 1; label <= log->max_label; label++) {
        if (t->phase_step[label] < 0) continue;
        cJSON *item = cJSON_CreateObject();
        cJSON_AddNumberToObject(item, "label", label);
        cJSON_AddNumberToObject(item, "step", (double)t->phase_step[label]);
        cJSON_AddItemToArray(steps, item);
    }
    return json;
}

// ---------------------------------------------------------------------------------------------
// Vega-Lite specs

// Loss (log scale) against step with a rule where each segment of the learning-rate schedule starts.
static cJSON *loss_figure(const Training *t, const char *title) {
    const LossLog *log = &t->log;
    cJSON *spec = vl_spec(title, 760, 300);
    cJSON *layers = cJSON_AddArrayToObject(spec, "layer");

    cJSON *values = cJSON_CreateArray();
    long stride = plot_stride(log->n);
    for (long i = 0; i < log->n; i++) {
        if ((i % stride != 0 && i != log->n - 1) || !(log->mse[i] > 0)) continue;
        cJSON *row = cJSON_CreateObject();
        cJSON_AddNumberToObject(row, "step", (double)log->step[i]);
        cJSON_AddNumberToObject(row, "mse", log->mse[i]);
        cJSON_AddNumberToObject(row, "lr", log->lr[i]);
        cJSON_AddItemToArray(values, row);
    }
    cJSON *line = cJSON_CreateObject();
    cJSON_AddItemToObject(line, "data", vl_values(values));
    cJSON *line_mark = vl_mark("line");
    cJSON_AddBoolToObject(line_mark, "tooltip", 0);
    cJSON_AddItemToObject(line, "mark", line_mark);
    cJSON *enc = cJSON_AddObjectToObject(line, "encoding");
    cJSON_AddItemToObject(enc, "x", vl_integer_axis(vl_channel("step", "quantitative", "step")));
    cJSON_AddItemToObject(enc, "y", vl_log_scale(vl_channel("mse", "quantitative", "training MSE (log)")));
    const char *fields[] = {"step", "mse", "lr"}, *types[] = {"quantitative", "quantitative", "quantitative"};
    cJSON_AddItemToObject(enc, "tooltip", vl_tooltip(fields, types, 3));
    vl_add_zoom(line);
    cJSON_AddItemToArray(layers, line);

    cJSON *changes = cJSON_CreateArray();
    for (int k = 1; k < t->schedule.num_segments; k++) {
        long start = lr_schedule_segment_start(&t->schedule, k);
        if (start >= log->step[log->n - 1]) break;
        cJSON *row = cJSON_CreateObject();
        cJSON_AddNumberToObject(row, "step", (double)start);
        cJSON_AddNumberToObject(row, "lr", lr_schedule_at(&t->schedule, start));
        char text[64];
        if (t->schedule.shape[k] == LR_CONSTANT)
            snprintf(text, sizeof(text), "lr %g", t->schedule.rate[k]);
        else
            snprintf(text, sizeof(text), "lr %g..%g%s", t->schedule.rate[k], t->schedule.end_rate[k],
                     t->schedule.shape[k] == LR_COSINE ? " cos" : "");
        cJSON_AddStringToObject(row, "text", text);
        cJSON_AddItemToArray(changes, row);
    }
    if (cJSON_GetArraySize(changes) > 0) {
        cJSON *rule = cJSON_CreateObject();
        cJSON_AddItemToObject(rule, "data", vl_values(changes));
        cJSON *rule_mark = vl_mark("rule");
        cJSON_AddStringToObject(rule_mark, "color", "#d62728");
        cJSON *dash = cJSON_AddArrayToObject(rule_mark, "strokeDash");
        cJSON_AddItemToArray(dash, cJSON_CreateNumber(6));
        cJSON_AddItemToArray(dash, cJSON_CreateNumber(4));
        cJSON_AddItemToObject(rule, "mark", rule_mark);
        cJSON *rule_enc = cJSON_AddObjectToObject(rule, "encoding");
        cJSON_AddItemToObject(rule_enc, "x", vl_channel("step", "quantitative", NULL));
        const char *rf[] = {"step", "lr"}, *rt[] = {"quantitative", "quantitative"};
        cJSON_AddItemToObject(rule_enc, "tooltip", vl_tooltip(rf, rt, 2));
        cJSON_AddItemToArray(layers, rule);

        cJSON *label = cJSON_CreateObject();
        cJSON_AddItemToObject(label, "data", vl_values(cJSON_Duplicate(changes, 1)));
        cJSON *text_mark = vl_mark("text");
        cJSON_AddStringToObject(text_mark, "align", "left");
        cJSON_AddNumberToObject(text_mark, "dx", 4);
        cJSON_AddNumberToObject(text_mark, "y", 10);
        cJSON_AddStringToObject(text_mark, "color", "#d62728");
        cJSON_AddItemToObject(label, "mark", text_mark);
        cJSON *label_enc = cJSON_AddObjectToObject(label, "encoding");
        cJSON_AddItemToObject(label_enc, "x", vl_channel("step", "quantitative", NULL));
        cJSON_AddItemToObject(label_enc, "text", vl_channel("text", "nominal", NULL));
        cJSON_AddItemToArray(layers, label);
    } else {
        cJSON_Delete(changes);
    }
    return spec;
}

// Loss of each label (log scale) with its detected phase change; click the legend to pick labels.
// The geometric mean of a label's loss over the `smooth` steps centred on row i (NAN if none).
static double smoothed_label_loss(const LossLog *losses, long i, int label, int smooth) {
    double sum = 0.0;
    int count = 0;
    for (long j = i - smooth / 2; j <= i + smooth / 2; j++) {
        if (j < 0 || j >= losses->n) continue;
        double v = losslog_label(losses, j, label);
        if (v > 0 && isfinite(v)) {
            sum += log(v);
            count++;
        }
    }
    return count ? exp(sum / count) : NAN;
}

// The steps over which the per-label curves are smoothed: a batch holds few examples of a label.
static int label_smoothing(const Training *t) { return t->window / 8 > 1 ? t->window / 8 : 1; }

static cJSON *label_loss_figure(const Training *t, const char *title, int mark_phase_changes) {
    const LossLog *log = &t->log;
    cJSON *spec = vl_spec(title, 760, 340);
    cJSON *layers = cJSON_AddArrayToObject(spec, "layer");
    cJSON *values = cJSON_CreateArray();
    long stride = plot_stride(log->n);
    int smooth = label_smoothing(t);
    for (long i = 0; i < log->n; i++) {
        if (i % stride != 0 && i != log->n - 1) continue;
        for (int label = 1; label <= log->max_label; label++) {
            double v = smoothed_label_loss(log, i, label, smooth);
            if (!(v > 0) || !isfinite(v)) continue;
            cJSON *row = cJSON_CreateObject();
            cJSON_AddNumberToObject(row, "step", (double)log->step[i]);
            cJSON_AddNumberToObject(row, "label", label);
            cJSON_AddNumberToObject(row, "mse", v);
            cJSON_AddItemToArray(values, row);
        }
    }
    cJSON *color = vl_label_domain(vl_channel("label", "ordinal", "label"), log->max_label);
    cJSON_AddStringToObject(cJSON_GetObjectItemCaseSensitive(color, "scale"), "scheme", "turbo");

    cJSON *line = cJSON_CreateObject();
    cJSON_AddItemToObject(line, "data", vl_values(values));
    cJSON_AddItemToObject(line, "mark", vl_mark("line"));
    cJSON *params = cJSON_AddArrayToObject(line, "params");
    cJSON *pick = cJSON_CreateObject();
    cJSON_AddStringToObject(pick, "name", "pick");
    cJSON *select = cJSON_AddObjectToObject(pick, "select");
    cJSON_AddStringToObject(select, "type", "point");
    cJSON *fields = cJSON_AddArrayToObject(select, "fields");
    cJSON_AddItemToArray(fields, cJSON_CreateString("label"));
    cJSON_AddStringToObject(pick, "bind", "legend");
    // at first the labels the blog plots: 1, 2, 3 and unreachable
    cJSON *initial = cJSON_AddArrayToObject(pick, "value");
    const int blog_labels[] = {1, 2, 3, log->max_label};
    for (int k = 0; k < 4; k++) {
        cJSON *item = cJSON_CreateObject();
        cJSON_AddNumberToObject(item, "label", blog_labels[k]);
        cJSON_AddItemToArray(initial, item);
    }
    cJSON_AddItemToArray(params, pick);
    cJSON_AddItemToArray(params, vl_zoom());
    cJSON *enc = cJSON_AddObjectToObject(line, "encoding");
    cJSON_AddItemToObject(enc, "x", vl_integer_axis(vl_channel("step", "quantitative", "step")));
    cJSON_AddItemToObject(enc, "y", vl_log_scale(vl_channel("mse", "quantitative", "MSE of the label (log)")));
    cJSON_AddItemToObject(enc, "color", color);
    cJSON *opacity = cJSON_AddObjectToObject(enc, "opacity");
    cJSON *condition = cJSON_AddObjectToObject(opacity, "condition");
    cJSON_AddStringToObject(condition, "param", "pick");
    cJSON_AddNumberToObject(condition, "value", 1);
    cJSON_AddNumberToObject(opacity, "value", 0.08);
    const char *tf[] = {"step", "label", "mse"}, *tt[] = {"quantitative", "ordinal", "quantitative"};
    cJSON_AddItemToObject(enc, "tooltip", vl_tooltip(tf, tt, 3));
    cJSON_AddItemToArray(layers, line);

    cJSON *changes = cJSON_CreateArray();
    for (int label = 1; label <= log->max_label && mark_phase_changes; label++) {
        if (t->phase_step[label] < 0) continue;
        cJSON *row = cJSON_CreateObject();
        cJSON_AddNumberToObject(row, "label", label);
        cJSON_AddNumberToObject(row, "step", (double)t->phase_step[label]);
        cJSON_AddItemToArray(changes, row);
    }
    if (cJSON_GetArraySize(changes) > 0) {
        cJSON *rule = cJSON_CreateObject();
        cJSON_AddItemToObject(rule, "data", vl_values(changes));
        cJSON *rule_mark = vl_mark("rule");
        cJSON_AddNumberToObject(rule_mark, "strokeWidth", 2);
        cJSON *dash = cJSON_AddArrayToObject(rule_mark, "strokeDash");
        cJSON_AddItemToArray(dash, cJSON_CreateNumber(4));
        cJSON_AddItemToArray(dash, cJSON_CreateNumber(3));
        cJSON_AddItemToObject(rule, "mark", rule_mark);
        cJSON *rule_enc = cJSON_AddObjectToObject(rule, "encoding");
        cJSON_AddItemToObject(rule_enc, "x", vl_channel("step", "quantitative", NULL));
        cJSON_AddItemToObject(rule_enc, "color", cJSON_Duplicate(color, 1));
        cJSON_AddItemToObject(rule_enc, "opacity", cJSON_Duplicate(opacity, 1));  // only the picked labels'
        const char *rf[] = {"label", "step"}, *rt[] = {"ordinal", "quantitative"};
        cJSON_AddItemToObject(rule_enc, "tooltip", vl_tooltip(rf, rt, 2));
        cJSON_AddItemToArray(layers, rule);
    } else {
        cJSON_Delete(changes);
    }
    return spec;
}

// The 2-D histogram of an evaluation: true label on x, model output on y, each label's column
// normalized, log colour; a black tick marks the true value.
static cJSON *histogram_figure(const cJSON *eval, const char *title) {
    const cJSON *hist = cJSON_GetObjectItemCaseSensitive(eval, "histogram");
    double lo = cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(hist, "output_lo"));
    double hi = cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(hist, "output_hi"));
    int bins = (int)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(hist, "bins"));
    double width = bins > 0 ? (hi - lo) / bins : 1.0;
    cJSON *values = cJSON_CreateArray(), *truth = cJSON_CreateArray();
    const cJSON *column;
    double max_label = 1;
    cJSON_ArrayForEach(column, cJSON_GetObjectItemCaseSensitive(hist, "columns")) {
        double label = cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(column, "label"));
        if (label > max_label && label <= 64) max_label = label;
        const cJSON *counts = cJSON_GetObjectItemCaseSensitive(column, "counts");
        const cJSON *fraction = cJSON_GetObjectItemCaseSensitive(column, "fraction");
        for (int bin = 0; bin < bins; bin++) {
            double f = cJSON_GetNumberValue(cJSON_GetArrayItem(fraction, bin));
            if (!(f > 0)) continue;
            cJSON *row = cJSON_CreateObject();
            cJSON_AddNumberToObject(row, "label", label);
            cJSON_AddNumberToObject(row, "output_lo", lo + bin * width);
            cJSON_AddNumberToObject(row, "output_hi", lo + (bin + 1) * width);
            cJSON_AddNumberToObject(row, "fraction", f);
            cJSON_AddNumberToObject(row, "count", cJSON_GetNumberValue(cJSON_GetArrayItem(counts, bin)));
            cJSON_AddItemToArray(values, row);
        }
        cJSON *row = cJSON_CreateObject();
        cJSON_AddNumberToObject(row, "label", label);
        cJSON_AddNumberToObject(row, "truth", label);
        cJSON_AddItemToArray(truth, row);
    }
    cJSON *spec = vl_spec(title, 0, 300);
    cJSON *layers = cJSON_AddArrayToObject(spec, "layer");
    cJSON *width_step = cJSON_AddObjectToObject(spec, "width");
    cJSON_AddNumberToObject(width_step, "step", 34);

    cJSON *x = vl_label_domain(vl_channel("label", "ordinal", "true label (15 = unreachable)"), (int)max_label);
    cJSON *axis = cJSON_AddObjectToObject(x, "axis");
    cJSON_AddNumberToObject(axis, "labelAngle", 0);
    cJSON *y_scale_domain = cJSON_CreateArray();
    cJSON_AddItemToArray(y_scale_domain, cJSON_CreateNumber(lo));
    cJSON_AddItemToArray(y_scale_domain, cJSON_CreateNumber(hi));

    cJSON *rect = cJSON_CreateObject();
    cJSON_AddItemToObject(rect, "data", vl_values(values));
    cJSON_AddItemToObject(rect, "mark", vl_mark("rect"));
    cJSON *enc = cJSON_AddObjectToObject(rect, "encoding");
    cJSON_AddItemToObject(enc, "x", x);
    cJSON *y = vl_channel("output_lo", "quantitative", "model output");
    cJSON *y_scale = cJSON_AddObjectToObject(y, "scale");
    cJSON_AddItemToObject(y_scale, "domain", y_scale_domain);
    cJSON_AddItemToObject(enc, "y", y);
    cJSON_AddItemToObject(enc, "y2", vl_channel("output_hi", "quantitative", NULL));
    cJSON *color = vl_log_scale(vl_channel("fraction", "quantitative", "fraction of the label"));
    cJSON_AddStringToObject(cJSON_GetObjectItemCaseSensitive(color, "scale"), "scheme", "viridis");
    // Vega shortens long legend titles; headless SVG export measures text only roughly
    cJSON *legend = cJSON_AddObjectToObject(color, "legend");
    cJSON_AddNumberToObject(legend, "titleLimit", 400);
    cJSON_AddItemToObject(enc, "color", color);
    const char *tf[] = {"label", "output_lo", "output_hi", "fraction", "count"};
    const char *tt[] = {"ordinal", "quantitative", "quantitative", "quantitative", "quantitative"};
    cJSON_AddItemToObject(enc, "tooltip", vl_tooltip(tf, tt, 5));
    cJSON_AddItemToArray(layers, rect);

    cJSON *tick = cJSON_CreateObject();
    cJSON_AddItemToObject(tick, "data", vl_values(truth));
    cJSON *tick_mark = vl_mark("tick");
    cJSON_AddStringToObject(tick_mark, "color", "#e41a1c");
    cJSON_AddNumberToObject(tick_mark, "thickness", 1.5);
    cJSON_AddItemToObject(tick, "mark", tick_mark);
    cJSON *tick_enc = cJSON_AddObjectToObject(tick, "encoding");
    cJSON_AddItemToObject(tick_enc, "x", vl_channel("label", "ordinal", NULL));
    cJSON_AddItemToObject(tick_enc, "y", vl_channel("truth", "quantitative", NULL));
    cJSON_AddItemToArray(layers, tick);
    return spec;
}

// Bar charts of the label distribution of every data set, one panel per set.
static cJSON *distribution_figure(cJSON *values, const char *const *sets, int num_sets) {
    cJSON *spec = vl_spec("Label distribution of each data set (evaluation samples)", 0, 0);
    cJSON_AddItemToObject(spec, "data", vl_values(values));
    cJSON_AddNumberToObject(spec, "columns", 4);
    cJSON *facet = cJSON_AddObjectToObject(spec, "facet");
    cJSON_AddStringToObject(facet, "field", "set");
    cJSON_AddStringToObject(facet, "type", "nominal");
    cJSON_AddStringToObject(facet, "title", "");
    cJSON *sort = cJSON_AddArrayToObject(facet, "sort");
    for (int i = 0; i < num_sets; i++) cJSON_AddItemToArray(sort, cJSON_CreateString(sets[i]));
    cJSON *inner = cJSON_AddObjectToObject(spec, "spec");
    cJSON_AddNumberToObject(inner, "width", 190);
    cJSON_AddNumberToObject(inner, "height", 120);
    cJSON_AddItemToObject(inner, "mark", vl_mark("bar"));
    cJSON *enc = cJSON_AddObjectToObject(inner, "encoding");
    cJSON *x = vl_channel("label", "ordinal", "label");
    cJSON *axis = cJSON_AddObjectToObject(x, "axis");
    cJSON_AddNumberToObject(axis, "labelAngle", 0);
    cJSON_AddItemToObject(enc, "x", x);
    cJSON_AddItemToObject(enc, "y", vl_channel("fraction", "quantitative", "fraction"));
    const char *tf[] = {"set", "label", "count", "fraction"};
    const char *tt[] = {"nominal", "ordinal", "quantitative", "quantitative"};
    cJSON_AddItemToObject(enc, "tooltip", vl_tooltip(tf, tt, 4));
    cJSON *resolve = cJSON_AddObjectToObject(spec, "resolve");
    cJSON *scale = cJSON_AddObjectToObject(resolve, "scale");
    cJSON_AddStringToObject(scale, "x", "independent");
    return spec;
}

// ---------------------------------------------------------------------------------------------

static void format_number(char *out, size_t size, double v) {
    if (!isfinite(v))
        snprintf(out, size, "—");
    else
        snprintf(out, size, "%.4g", v);
}

static void format_seconds(char *out, size_t size, double s) {
    if (s >= 60)
        snprintf(out, size, "%.0f s (%dm%02ds)", s, (int)(s / 60), (int)s % 60);
    else
        snprintf(out, size, "%.1f s", s);
}

// The phase-state file's seconds per phase (0 where absent).
static void read_phase_seconds(const char *run_dir, double seconds[NUM_PHASES]) {
    char path[PF_PATH_MAX + 32];
    snprintf(path, sizeof(path), "%s/state.json", run_dir);
    cJSON *state = pf_read_json(path);
    cJSON *phases = cJSON_GetObjectItemCaseSensitive(state, "phases");
    for (int i = 0; i < NUM_PHASES; i++)
        seconds[i] = report_json_number(cJSON_GetObjectItemCaseSensitive(phases, PHASE_NAMES[i]), "seconds");
    cJSON_Delete(state);
}

// Adds every run_dir/extra/NAME.vl.json (figures other commands left for the report) in name order.
static int add_extra_figures(Report *report, const char *run_dir) {
    char dir[PF_PATH_MAX + 32];
    snprintf(dir, sizeof(dir), "%s/extra", run_dir);
    struct dirent **entries;
    int n = scandir(dir, &entries, NULL, alphasort);
    if (n < 0) return 0;
    int rc = 0, added = 0;
    for (int i = 0; i < n; i++) {
        const char *file = entries[i]->d_name;
        size_t len = strlen(file);
        if (rc == 0 && len > 8 && strcmp(file + len - 8, ".vl.json") == 0) {
            char name[128], path[PF_PATH_MAX + 300];
            snprintf(name, sizeof(name), "extra-%.*s", (int)(len - 8), file);
            snprintf(path, sizeof(path), "%s/%s", dir, file);
            if (!added++) report_add_section(report, "More figures");
            rc = report_add_vegalite_file(report, name, file, path);
        }
        free(entries[i]);
    }
    free(entries);
    return rc;
}

// A section that another command prepared in run_dir/SUB: SUB/SUB.json holds {"title", "text",
// "figures": [{"name", "file", "caption"}]}, each file a Vega-Lite spec in SUB (`pathformer inside`
// writes inside/inside.json). Nothing when the manifest is missing.
static int add_manifest_section(Report *report, const char *run_dir, const char *sub) {
    char path[PF_PATH_MAX + 300];
    snprintf(path, sizeof(path), "%s/%s/%s.json", run_dir, sub, sub);
    if (!pf_file_exists(path)) return 0;
    cJSON *manifest = pf_read_json(path);
    if (!manifest) return -1;
    const cJSON *title = cJSON_GetObjectItemCaseSensitive(manifest, "title");
    const cJSON *text = cJSON_GetObjectItemCaseSensitive(manifest, "text");
    const cJSON *figures = cJSON_GetObjectItemCaseSensitive(manifest, "figures");
    int rc = 0;
    if (!cJSON_IsString(title) || !cJSON_IsArray(figures))
        rc = pf_fail("%s: a manifest needs a \"title\" and a \"figures\" list", path);
    if (rc == 0) {
        report_add_section(report, title->valuestring);
        if (cJSON_IsString(text) && text->valuestring[0]) report_add_text(report, text->valuestring);
    }
    const cJSON *figure;
    cJSON_ArrayForEach(figure, figures) {
        if (rc != 0) break;
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(figure, "name");
        const cJSON *file = cJSON_GetObjectItemCaseSensitive(figure, "file");
        const cJSON *caption = cJSON_GetObjectItemCaseSensitive(figure, "caption");
        if (!cJSON_IsString(name) || !cJSON_IsString(file) || strchr(file->valuestring, '/')) {
            rc = pf_fail("%s: each figure needs a \"name\" and a \"file\" in the same folder", path);
            break;
        }
        char spec_path[PF_PATH_MAX + 600];
        snprintf(spec_path, sizeof(spec_path), "%s/%s/%s", run_dir, sub, file->valuestring);
        rc = report_add_vegalite_file(report, name->valuestring, cJSON_IsString(caption) ? caption->valuestring : "",
                                      spec_path);
    }
    cJSON_Delete(manifest);
    return rc;
}

// The fine-tuning loss the authors logged (reference/authors_tune_loss.txt: total MSE of each of
// their 50 fine-tuning steps of 2^15 `tune` examples, the pre-training Adam stepped on; SPEC §4).
static const double AUTHORS_TUNE_LOSS[] = {
    0.5752755403518677,  1.0058379173278809,  1.1355644464492798,  0.4999964237213135,  0.5071491599082947,
    0.4544726014137268,  0.30281758308410645, 0.4206203818321228,  0.7253834009170532,  0.5732952356338501,
    0.3130272626876831,  0.5048601627349854,  0.22613315284252167, 0.4204784035682678,  0.16267633438110352,
    0.2796379625797272,  0.32184848189353943, 0.14892461895942688, 0.18450167775154114, 0.1992523968219757,
    0.17124706506729126, 0.14664874970912933, 0.13724330067634583, 0.15177911520004272, 0.1299765259027481,
    0.09801223129034042, 0.08407146483659744, 0.07911905646324158, 0.08549186587333679, 0.0721864402294159,
    0.0690237507224083,  0.06988002359867096, 0.060210999101400375, 0.05437739938497543, 0.049465030431747437,
    0.04359002411365509, 0.04103712737560272, 0.03770877420902252, 0.03940759599208832, 0.03945576399564743,
    0.03370905667543411, 0.030640199780464172, 0.03185701370239258, 0.028567088767886162, 0.026735369116067886,
    0.02505861595273018, 0.02451474778354168, 0.025109104812145233, 0.021790703758597374, 0.021884214133024216,
};
#define AUTHORS_TUNE_STEPS ((long)(sizeof(AUTHORS_TUNE_LOSS) / sizeof(AUTHORS_TUNE_LOSS[0])))

// This run's fine-tuning loss over the authors' logged one (log scale), step by step.
static cJSON *tune_vs_authors_figure(const Training *t) {
    cJSON *spec = vl_spec("Fine-tuning loss: this run and the authors' log", 760, 300);
    cJSON *values = cJSON_CreateArray();
    for (long i = 0; i < t->log.n; i++) {
        if (!(t->log.mse[i] > 0)) continue;
        cJSON *row = cJSON_CreateObject();
        cJSON_AddNumberToObject(row, "step", (double)t->log.step[i]);
        cJSON_AddNumberToObject(row, "mse", t->log.mse[i]);
        cJSON_AddStringToObject(row, "run", "this run");
        cJSON_AddItemToArray(values, row);
    }
    for (long i = 0; i < AUTHORS_TUNE_STEPS; i++) {
        cJSON *row = cJSON_CreateObject();
        cJSON_AddNumberToObject(row, "step", (double)i);
        cJSON_AddNumberToObject(row, "mse", AUTHORS_TUNE_LOSS[i]);
        cJSON_AddStringToObject(row, "run", "authors' log");
        cJSON_AddItemToArray(values, row);
    }
    cJSON_AddItemToObject(spec, "data", vl_values(values));
    cJSON *line_mark = vl_mark("line");
    cJSON_AddBoolToObject(line_mark, "point", 1);
    cJSON_AddItemToObject(spec, "mark", line_mark);
    cJSON *enc = cJSON_AddObjectToObject(spec, "encoding");
    cJSON_AddItemToObject(enc, "x", vl_integer_axis(vl_channel("step", "quantitative", "fine-tuning step")));
    cJSON_AddItemToObject(enc, "y", vl_log_scale(vl_channel("mse", "quantitative", "training MSE (log)")));
    cJSON_AddItemToObject(enc, "color", vl_channel("run", "nominal", "run"));
    const char *fields[] = {"run", "step", "mse"}, *types[] = {"nominal", "quantitative", "quantitative"};
    cJSON_AddItemToObject(enc, "tooltip", vl_tooltip(fields, types, 3));
    vl_add_zoom(spec);
    return spec;
}

// Everything the report is made of, read from the run folder.
typedef struct {
    Training pretrain, tune;
    int pretrained_here;              // 0: the weights came from cfg->from (no pre-training log)
    cJSON *evals[NUM_EVALS];
    double phase_seconds[NUM_PHASES];
    double wall;                      // training and evaluation phases
    char seed[32];
    char protocol[2048];              // how the run got its model and fine-tuned it, in words
    const char *tune_optimizer;       // "continue" or "new": what fine-tuning actually did
} ReportInputs;

static void inputs_free(ReportInputs *in) {
    losslog_free(&in->pretrain.log);
    losslog_free(&in->tune.log);
    for (int i = 0; i < NUM_EVALS; i++) cJSON_Delete(in->evals[i]);
}

// How fine-tuning got its optimizer, from the config the tune phase ran with.
static int describe_protocol(ReportInputs *in, const ExperimentConfig *cfg, const char *run_dir) {
    RunConfig tune;
    char dir[PF_PATH_MAX + 32];
    pf_path_join(dir, sizeof(dir), run_dir, "tune");
    if (train_load_run_config(&tune, dir) != 0) return -1;
    int continued = tune.init_optimizer[0] != '\0';
    in->tune_optimizer = continued ? TUNE_OPTIMIZER_CONTINUE : TUNE_OPTIMIZER_NEW;
    char pre[640];
    if (in->pretrained_here)
        snprintf(pre, sizeof(pre), "%ld steps of %ld '%s' examples", in->pretrain.log.n, in->pretrain.batch_size,
                 cfg->pretrain.set);
    else
        snprintf(pre, sizeof(pre), "not run here, the weights of %.560s", cfg->from);
    const char *how = continued ? "the pre-training Adam continued (its moments and update count), as the authors' "
                                  "code ran it"
                      : strcmp(cfg->tune_optimizer, TUNE_OPTIMIZER_NEW) == 0
                          ? "a new Adam"
                          : "a new Adam, the stand-in for continuing the pre-training Adam, whose state the "
                            "pre-trained checkpoint does not carry";
    snprintf(in->protocol, sizeof(in->protocol),
             "Preset '%s' (%s). Pre-training: %s; fine-tuning: %ld steps of %ld 'tune' examples at lr %s, weight decay "
             "%g, with %s.",
             cfg->preset, experiment_preset_summary(cfg->preset), pre, in->tune.log.n, in->tune.batch_size,
             tune.lr_schedule, (double)tune.weight_decay, how);
    return 0;
}

static int load_inputs(ReportInputs *in, const ExperimentConfig *cfg, const char *run_dir) {
    memset(in, 0, sizeof(*in));
    char path[PF_PATH_MAX + 128];
    snprintf(path, sizeof(path), "%s/pretrain/train.csv", run_dir);
    in->pretrained_here = !cfg->from[0] || pf_file_exists(path);
    int rc = in->pretrained_here ? load_training(&in->pretrain, "pretrain", &cfg->pretrain, run_dir) : 0;
    if (rc == 0) rc = load_training(&in->tune, "tune", &cfg->tune, run_dir);
    for (int i = 0; i < NUM_EVALS && rc == 0; i++) {
        snprintf(path, sizeof(path), "%s/eval/%s.json", run_dir, EVALS[i].name);
        if (!(in->evals[i] = pf_read_json(path))) rc = -1;
    }
    if (rc == 0) rc = describe_protocol(in, cfg, run_dir);
    if (rc != 0) {
        inputs_free(in);
        return -1;
    }
    read_phase_seconds(run_dir, in->phase_seconds);
    for (int i = 0; i < PHASE_REPORT; i++)  // the report's own time is not known yet
        if (isfinite(in->phase_seconds[i])) in->wall += in->phase_seconds[i];
    snprintf(in->seed, sizeof(in->seed), "%llu", (unsigned long long)cfg->pretrain.seed);
    return 0;
}

// The label distributions of the data sets: the pre-trained model's samples of pretrain and tune,
// the tests' own. Rows {set, label, count, fraction}; *sets gets the 7 set names in order.
static cJSON *label_distributions(const ReportInputs *in, const char *sets[7]) {
    const int distribution_evals[] = {0, 1, 4, 5, 6, 7, 8};
    cJSON *distribution = cJSON_CreateArray();
    for (int k = 0; k < 7; k++) {
        const cJSON *eval = in->evals[distribution_evals[k]];
        sets[k] = EVALS[distribution_evals[k]].set;
        double total = report_json_number(eval, "examples");
        const cJSON *label;
        cJSON_ArrayForEach(label, cJSON_GetObjectItemCaseSensitive(eval, "labels")) {
            cJSON *row = cJSON_CreateObject();
            cJSON_AddStringToObject(row, "set", sets[k]);
            cJSON_AddNumberToObject(row, "label", report_json_number(label, "label"));
            cJSON_AddNumberToObject(row, "count", report_json_number(label, "count"));
            cJSON_AddNumberToObject(row, "fraction", report_json_number(label, "count") / total);
            cJSON_AddItemToArray(distribution, row);
        }
    }
    return distribution;
}

// metrics.json: every number of the report, machine-readable.
static int write_metrics(const ReportInputs *in, const ExperimentConfig *cfg, const char *run_dir) {
    cJSON *metrics = cJSON_CreateObject();
    cJSON_AddStringToObject(metrics, "version", PF_VERSION);
    cJSON_AddStringToObject(metrics, "preset", cfg->preset);
    cJSON_AddStringToObject(metrics, "seed", in->seed);
    cJSON_AddStringToObject(metrics, "protocol", in->protocol);
    cJSON_AddStringToObject(metrics, "tune_optimizer", in->tune_optimizer);
    if (cfg->from[0])
        cJSON_AddStringToObject(metrics, "pretrained_from", cfg->from);
    else
        cJSON_AddNullToObject(metrics, "pretrained_from");
    char *config_text = experiment_to_json(cfg);
    cJSON_AddItemToObject(metrics, "config", cJSON_Parse(config_text));
    free(config_text);
    cJSON_AddNumberToObject(metrics, "wall_seconds", in->wall);
    cJSON *seconds = cJSON_AddObjectToObject(metrics, "phase_seconds");
    for (int i = 0; i < PHASE_REPORT; i++)
        if (isfinite(in->phase_seconds[i])) cJSON_AddNumberToObject(seconds, PHASE_NAMES[i], in->phase_seconds[i]);
    if (in->pretrained_here)
        cJSON_AddItemToObject(metrics, "pretrain", training_metrics(&in->pretrain));
    else
        cJSON_AddNullToObject(metrics, "pretrain");
    cJSON_AddItemToObject(metrics, "tune", training_metrics(&in->tune));
    cJSON *evaluations = cJSON_AddArrayToObject(metrics, "evaluations");
    for (int i = 0; i < NUM_EVALS; i++) {
        cJSON *item = cJSON_CreateObject();
        cJSON_AddStringToObject(item, "name", EVALS[i].name);
        cJSON_AddStringToObject(item, "title", EVALS[i].title);
        cJSON_AddStringToObject(item, "model", EVALS[i].phase == PHASE_EVAL_PRETRAINED ? "pre-trained" : "fine-tuned");
        cJSON_AddStringToObject(item, "set", EVALS[i].set);
        cJSON_AddNumberToObject(item, "examples", report_json_number(in->evals[i], "examples"));
        cJSON_AddNumberToObject(item, "mse", report_json_number(in->evals[i], "mse"));
        cJSON_AddNumberToObject(item, "accuracy", report_json_number(in->evals[i], "accuracy"));
        if (isfinite(EVALS[i].published_mse))
            cJSON_AddNumberToObject(item, "published_mse", EVALS[i].published_mse);
        else
            cJSON_AddNullToObject(item, "published_mse");
        cJSON_AddItemToObject(item, "labels",
                              cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(in->evals[i], "labels"), 1));
        cJSON_AddItemToArray(evaluations, item);
    }
    const char *sets[7];
    cJSON_AddItemToObject(metrics, "label_distributions", label_distributions(in, sets));
    char path[PF_PATH_MAX + 32];
    pf_path_join(path, sizeof(path), run_dir, "metrics.json");
    int rc = pf_write_json_atomic(path, metrics, 1);
    cJSON_Delete(metrics);
    return rc;
}

// The figures of a report, kept until it is written (report_add_vegalite copies them).
typedef struct {
    cJSON *specs[24];
    int n;
} Figures;

static int add_figure(Report *report, Figures *figures, const char *name, const char *caption, cJSON *spec) {
    figures->specs[figures->n++] = spec;
    return report_add_vegalite(report, name, caption, spec);
}

static void add_results_table(Report *report, const ReportInputs *in) {
    const char *header[] = {"evaluation", "data set", "model", "examples", "MSE", "accuracy", "published MSE"};
    const char *cells[NUM_EVALS * 7];
    char numbers[NUM_EVALS][4][32];
    for (int i = 0; i < NUM_EVALS; i++) {
        snprintf(numbers[i][0], 32, "%.0f", report_json_number(in->evals[i], "examples"));
        format_number(numbers[i][1], 32, report_json_number(in->evals[i], "mse"));
        snprintf(numbers[i][2], 32, "%.2f%%", 100.0 * report_json_number(in->evals[i], "accuracy"));
        format_number(numbers[i][3], 32, EVALS[i].published_mse);
        const char *row[] = {EVALS[i].title, EVALS[i].set,
                             EVALS[i].phase == PHASE_EVAL_PRETRAINED ? "pre-trained" : "fine-tuned",
                             numbers[i][0], numbers[i][1], numbers[i][2], numbers[i][3]};
        memcpy(&cells[i * 7], row, sizeof(row));
    }
    report_add_table(report, 7, header, NUM_EVALS, cells);
}

static int add_pretraining(Report *report, Figures *figures, const ReportInputs *in, const ExperimentConfig *cfg) {
    report_add_section(report, "Pre-training");
    if (!in->pretrained_here) {
        char text[PF_PATH_MAX + 128];
        snprintf(text, sizeof(text), "Not run here: the pre-trained weights are those of %.900s.", cfg->from);
        report_add_text(report, text);
        return 0;
    }
    const Training *t = &in->pretrain;
    int rc = add_figure(report, figures, "pretrain-loss",
                        "Training MSE per step (log scale); dashed red lines mark learning-rate changes. "
                        "Drag to pan, wheel to zoom.",
                        loss_figure(t, "Pre-training loss"));
    char text[1024];
    snprintf(
        text, sizeof(text),
        "MSE of each true label (log scale, geometric mean over %d steps); dashed lines mark the detected phase "
        "changes (the steepest point of the first stretch where the mean log-loss of the %d steps after a step is "
        "at least %.0fx below that of the %d steps before it). Labels 1, 2, 3 and %d are picked at first, as in the "
        "blog; click a legend entry to pick another (shift-click for more, double-click for none).",
        label_smoothing(t), t->window, PHASE_CHANGE_FACTOR, t->window, t->log.max_label);
    if (rc == 0)
        rc = add_figure(report, figures, "pretrain-label-loss", text,
                        label_loss_figure(t, "Pre-training loss per label", 1));
    const char *phase_header[] = {"label", "phase change at step"};
    const char *phase_cells[2 * PF_MAX_VERTICES];
    char phase_text[PF_MAX_VERTICES][2][24];
    int phase_rows = 0;
    for (int label = 1; label <= t->log.max_label; label++) {
        if (t->phase_step[label] < 0) continue;
        snprintf(phase_text[phase_rows][0], 24, "%d", label);
        snprintf(phase_text[phase_rows][1], 24, "%ld", t->phase_step[label]);
        phase_cells[2 * phase_rows] = phase_text[phase_rows][0];
        phase_cells[2 * phase_rows + 1] = phase_text[phase_rows][1];
        phase_rows++;
    }
    if (phase_rows > 0)
        report_add_table(report, 2, phase_header, phase_rows, phase_cells);
    else
        report_add_text(report, "No phase change detected.");
    return rc;
}

static int add_fine_tuning_curves(Report *report, Figures *figures, const ReportInputs *in,
                                  const ExperimentConfig *cfg) {
    char text[512];
    snprintf(text, sizeof(text), "Fine-tuning MSE of each true label (log scale, geometric mean over %d steps).",
             label_smoothing(&in->tune));
    int rc = add_figure(report, figures, "tune-label-loss", text,
                        label_loss_figure(&in->tune, "Fine-tuning loss per label", 0));
    if (rc == 0)
        rc = add_figure(report, figures, "tune-loss", "Fine-tuning MSE per step (log scale).",
                        loss_figure(&in->tune, "Fine-tuning loss"));
    if (rc == 0 && strcmp(cfg->preset, "blog") == 0) {
        snprintf(text, sizeof(text),
                 "This run's fine-tuning MSE per step beside the authors' logged curve (%ld steps of 2^15 examples, "
                 "their pre-training Adam stepped on: the jump in the first steps is the warm optimizer meeting new "
                 "data). This run's optimizer: %s.",
                 AUTHORS_TUNE_STEPS, strcmp(in->tune_optimizer, TUNE_OPTIMIZER_CONTINUE) == 0
                                         ? "the pre-training Adam continued"
                                         : "a new Adam (no pre-training optimizer state to continue)");
        rc = add_figure(report, figures, "tune-vs-authors", text, tune_vs_authors_figure(&in->tune));
    }
    return rc;
}

// The output histograms, in the order of the blog, with the fine-tuning curves before the tuned ones.
static int add_histograms(Report *report, Figures *figures, const ReportInputs *in, const ExperimentConfig *cfg) {
    const struct {
        int eval;
        const char *section;  // starts a section before the figure, or NULL
    } hists[] = {{0, NULL}, {1, "Before fine-tuning"}, {2, "Fine-tuning"}, {3, NULL}, {4, "Generalization tests"},
                 {5, NULL}, {6, NULL}, {7, NULL}, {8, NULL}};
    int rc = 0;
    for (int k = 0; k < NUM_EVALS && rc == 0; k++) {
        const EvalSpec *e = &EVALS[hists[k].eval];
        const cJSON *eval = in->evals[hists[k].eval];
        if (hists[k].section) report_add_section(report, hists[k].section);
        if (hists[k].eval == 2 && (rc = add_fine_tuning_curves(report, figures, in, cfg)) != 0) break;
        char title[256], name[80], caption[512], a[64], b[64];
        snprintf(title, sizeof(title), "Output histogram: %s", e->title);
        snprintf(name, sizeof(name), "hist-%s", e->name);
        format_number(a, sizeof(a), report_json_number(eval, "mse"));
        format_number(b, sizeof(b), e->published_mse);
        snprintf(caption, sizeof(caption),
                 "%s: model output against the true label, each label's column normalized, log colour; red ticks mark "
                 "the true value. MSE %s (published %s), accuracy %.2f%%.",
                 e->title, a, b, 100.0 * report_json_number(eval, "accuracy"));
        rc = add_figure(report, figures, name, caption, histogram_figure(eval, title));
    }
    return rc;
}

static void add_run_table(Report *report, const ReportInputs *in, const ExperimentConfig *cfg) {
    char info[8][64];
    format_seconds(info[0], 64, in->wall);
    snprintf(info[2], 64, "%.0f examples/s", in->tune.examples_per_s);
    format_seconds(info[3], 64, in->phase_seconds[PHASE_PRETRAIN]);
    format_seconds(info[4], 64, in->phase_seconds[PHASE_TUNE]);
    format_seconds(info[5], 64, in->phase_seconds[PHASE_EVAL_PRETRAINED] + in->phase_seconds[PHASE_EVAL_TUNED]);
    format_number(info[7], 64, in->tune.log.mse[in->tune.log.n - 1]);
    if (in->pretrained_here) {
        snprintf(info[1], 64, "%.0f examples/s", in->pretrain.examples_per_s);
        format_number(info[6], 64, in->pretrain.log.mse[in->pretrain.log.n - 1]);
    } else {
        snprintf(info[1], 64, "-");
        snprintf(info[6], 64, "- (imported weights)");
    }
    const char *run_header[] = {"run", ""};
    const char *run_cells[] = {"preset", cfg->preset, "seed", in->seed, "version", PF_VERSION,
                               "fine-tuning optimizer", in->tune_optimizer,
                               "wall time (training and evaluation phases)", info[0],
                               "pre-training", info[3], "pre-training throughput", info[1],
                               "final pre-training batch MSE", info[6], "fine-tuning", info[4],
                               "fine-tuning throughput", info[2], "final fine-tuning batch MSE", info[7],
                               "evaluations", info[5]};
    report_add_table(report, 2, run_header, 12, run_cells);
    char *config_text = experiment_to_json(cfg);
    char *escaped = report_escape(config_text);
    size_t html_size = strlen(escaped) + 64;
    char *html = mallocCheck(html_size);
    snprintf(html, html_size, "<p>Config (experiment.json):</p>\n<pre>%s</pre>\n", escaped);
    report_add_html(report, html);
    free(html);
    free(escaped);
    free(config_text);
}

// report.html and its figures.
static int write_html(const ReportInputs *in, const ExperimentConfig *cfg, const char *run_dir) {
    Report *report = report_create("pathformer: pre-training, fine-tuning and off-distribution tests");
    Figures figures = {{0}, 0};
    char text[2560];
    snprintf(text, sizeof(text),
             "%s Seed %s, pathformer %s, %ld fresh examples per evaluation. Published numbers are the blog's (SPEC "
             "§4: 9,600 steps of 2^15 examples, then fine-tuning as the authors' code ran it).",
             in->protocol, in->seed, PF_VERSION, cfg->eval_examples);
    report_add_text(report, text);
    report_add_section(report, "Results");
    add_results_table(report, in);

    report_add_section(report, "Data");
    const char *sets[7];
    cJSON *distribution = label_distributions(in, sets);
    int rc = add_figure(report, &figures, "label-distributions",
                        "Label distributions (fraction of examples per true label; 15 = unreachable).",
                        distribution_figure(distribution, sets, 7));
    if (rc == 0) rc = add_pretraining(report, &figures, in, cfg);
    if (rc == 0) rc = add_histograms(report, &figures, in, cfg);
    if (rc == 0) rc = add_manifest_section(report, run_dir, "inside");
    if (rc == 0) rc = add_extra_figures(report, run_dir);
    report_add_section(report, "Run");
    add_run_table(report, in, cfg);
    if (rc == 0) rc = report_write(report, run_dir);
    report_free(report);
    for (int i = 0; i < figures.n; i++) cJSON_Delete(figures.specs[i]);
    return rc;
}

int experiment_write_report(const ExperimentConfig *cfg, const char *run_dir) {
    ReportInputs in;
    if (load_inputs(&in, cfg, run_dir) != 0) return -1;
    int rc = write_metrics(&in, cfg, run_dir);
    if (rc == 0) rc = write_html(&in, cfg, run_dir);
    inputs_free(&in);
    return rc;
}
