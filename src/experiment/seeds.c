#include "experiment/seeds.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "common.h"
#include "experiment/report.h"
#include "train.h"

double t975(int df) {
    static const double TABLE[] = {12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
                                   2.201,  2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
                                   2.080,  2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042};
    if (df < 1) return NAN;
    if (df <= 30) return TABLE[df - 1];
    if (df <= 40) return 2.042 + (2.021 - 2.042) * (df - 30) / 10.0;
    if (df <= 60) return 2.021 + (2.000 - 2.021) * (df - 40) / 20.0;
    if (df <= 120) return 2.000 + (1.980 - 2.000) * (df - 60) / 60.0;
    return 1.960;
}

Interval interval95(const double *values, int n) {
    Interval r = {n, NAN, NAN, NAN};
    if (n < 1) return r;
    double sum = 0.0;
    for (int i = 0; i < n; i++) sum += values[i];
    r.mean = sum / n;
    if (n < 2) return r;
    double ss = 0.0;
    for (int i = 0; i < n; i++) ss += (values[i] - r.mean) * (values[i] - r.mean);
    r.sd = sqrt(ss / (n - 1));
    r.half_width = t975(n - 1) * r.sd / sqrt((double)n);
    return r;
}

static void seed_dir(char *out, size_t size, const char *dir, uint64_t seed) {
    snprintf(out, size, "%s/seed-%llu", dir, (unsigned long long)seed);
}

static cJSON *seeds_json(const uint64_t *seeds, int n) {
    cJSON *root = cJSON_CreateObject();
    cJSON *list = cJSON_AddArrayToObject(root, "seeds");
    for (int i = 0; i < n; i++) {
        char text[32];
        snprintf(text, sizeof(text), "%llu", (unsigned long long)seeds[i]);
        cJSON_AddItemToArray(list, cJSON_CreateString(text));
    }
    return root;
}

int experiment_parse_seeds(uint64_t *seeds, int *num_seeds, const char *text, const char *name) {
    cJSON *root = cJSON_Parse(text);
    cJSON *list = cJSON_GetObjectItemCaseSensitive(root, "seeds"), *item;
    *num_seeds = 0;
    int rc = cJSON_IsArray(list) ? 0 : pf_fail("%s: no seed list", name);
    cJSON_ArrayForEach(item, list) {
        if (rc != 0) break;
        if (*num_seeds == MAX_SEEDS || !cJSON_IsString(item)) {
            rc = pf_fail("%s: bad seed list", name);
            break;
        }
        const char *value = item->valuestring;
        char *end;
        errno = 0;
        uint64_t seed = strtoull(value, &end, 10);
        if (value[0] < '0' || value[0] > '9' || *end || errno) {
            rc = pf_fail("%s: bad seed '%.40s'", name, value);
            break;
        }
        for (int j = 0; j < *num_seeds && rc == 0; j++)
            if (seeds[j] == seed) rc = pf_fail("%s: seed %llu is listed twice", name, (unsigned long long)seed);
        seeds[(*num_seeds)++] = seed;
    }
    cJSON_Delete(root);
    if (rc == 0 && *num_seeds == 0) rc = pf_fail("%s: no seeds", name);
    return rc;
}

int experiment_load_seeds(ExperimentConfig *cfg, uint64_t *seeds, int *num_seeds, const char *dir) {
    char path[PF_PATH_MAX + 64];
    snprintf(path, sizeof(path), "%s/seeds.json", dir);
    if (!pf_file_exists(path)) return 1;
    size_t size;
    char *text = pf_read_file(path, &size);
    if (!text) return -1;
    int rc = experiment_parse_seeds(seeds, num_seeds, text, path);
    free(text);
    if (rc != 0) return -1;
    seed_dir(path, sizeof(path), dir, seeds[0]);
    return experiment_load(cfg, path) == 0 ? 0 : -1;
}

// ---------------------------------------------------------------------------------------------
// The summary over seeds

// The per-seed values of one number, with its published value.
typedef struct {
    const char *name;
    const char *title;
    double published;
    double values[MAX_SEEDS];
} SeedNumber;

static void format_value(char *out, size_t size, double v) {
    if (isnan(v))
        snprintf(out, size, "-");
    else
        snprintf(out, size, "%.4g", v);
}

static int write_summary(const uint64_t *seeds, int n, const char *dir, const ExperimentConfig *cfg) {
    enum { NUMBERS = NUM_EVALS + 2 };
    static SeedNumber numbers[NUMBERS];
    for (int k = 0; k < NUM_EVALS; k++) numbers[k] = (SeedNumber){EVALS[k].name, EVALS[k].title, EVALS[k].published_mse, {0}};
    numbers[NUM_EVALS] = (SeedNumber){"pretrain-final-train-mse", "final pre-training batch MSE", NAN, {0}};
    numbers[NUM_EVALS + 1] = (SeedNumber){"tune-final-train-mse", "final fine-tuning batch MSE", NAN, {0}};
    double wall[MAX_SEEDS];
    for (int s = 0; s < n; s++) {
        char path[PF_PATH_MAX + 96];
        seed_dir(path, sizeof(path), dir, seeds[s]);
        strncat(path, "/metrics.json", sizeof(path) - strlen(path) - 1);
        cJSON *metrics = pf_read_json(path);
        if (!metrics) return -1;
        cJSON *evals = cJSON_GetObjectItemCaseSensitive(metrics, "evaluations");
        for (int k = 0; k < NUM_EVALS; k++) numbers[k].values[s] = report_json_number(cJSON_GetArrayItem(evals, k), "mse");
        numbers[NUM_EVALS].values[s] =
            report_json_number(cJSON_GetObjectItemCaseSensitive(metrics, "pretrain"), "final_train_mse");
        numbers[NUM_EVALS + 1].values[s] =
            report_json_number(cJSON_GetObjectItemCaseSensitive(metrics, "tune"), "final_train_mse");
        wall[s] = report_json_number(metrics, "wall_seconds");
        cJSON_Delete(metrics);
    }

    cJSON *root = seeds_json(seeds, n);
    cJSON_AddStringToObject(root, "version", PF_VERSION);
    cJSON_AddStringToObject(root, "preset", cfg->preset);
    cJSON_AddStringToObject(root, "interval", "95%: mean ± t(0.975, n-1) · s / sqrt(n)");
    Report *report = report_create("pathformer: the experiment over seeds");
    char text[1024];
    Interval w = interval95(wall, n);
    snprintf(text, sizeof(text),
             "Preset '%s', %d seeds, each a full run in its folder seed-S (with its own report). Every number is "
             "the mean over the seeds with its 95%% interval (mean ± t(0.975, n-1) s/√n) and the per-seed values; "
             "'inside' says whether the interval holds the published number. Wall time per seed: %.0f s (mean).",
             cfg->preset, n, w.mean);
    report_add_text(report, text);
    cJSON *list = cJSON_AddArrayToObject(root, "numbers");
    const char *header[] = {"number", "published", "mean", "95% interval", "per seed", "inside"};
    const char *cells[NUMBERS * 6];
    static char cell_text[NUMBERS][5][256];
    for (int k = 0; k < NUMBERS; k++) {
        Interval r = interval95(numbers[k].values, n);
        cJSON *item = cJSON_CreateObject();
        cJSON_AddStringToObject(item, "name", numbers[k].name);
        cJSON_AddStringToObject(item, "title", numbers[k].title);
        cJSON_AddNumberToObject(item, "mean", r.mean);
        cJSON_AddNumberToObject(item, "half_width", r.half_width);  // NaN (null) for one seed
        cJSON_AddNumberToObject(item, "low", r.mean - r.half_width);
        cJSON_AddNumberToObject(item, "high", r.mean + r.half_width);
        cJSON *values = cJSON_AddArrayToObject(item, "values");
        for (int s = 0; s < n; s++) cJSON_AddItemToArray(values, cJSON_CreateNumber(numbers[k].values[s]));
        int has_published = isfinite(numbers[k].published);
        int inside = has_published && isfinite(r.half_width) && fabs(numbers[k].published - r.mean) <= r.half_width;
        if (has_published) {
            cJSON_AddNumberToObject(item, "published", numbers[k].published);
            cJSON_AddBoolToObject(item, "published_inside_interval", inside);
        } else {
            cJSON_AddNullToObject(item, "published");
            cJSON_AddNullToObject(item, "published_inside_interval");
        }
        cJSON_AddItemToArray(list, item);
        format_value(cell_text[k][0], 256, numbers[k].published);
        format_value(cell_text[k][1], 256, r.mean);
        if (isfinite(r.half_width))
            snprintf(cell_text[k][2], 256, "%.4g .. %.4g", r.mean - r.half_width, r.mean + r.half_width);
        else
            snprintf(cell_text[k][2], 256, "- (one seed)");
        size_t used = 0;
        cell_text[k][3][0] = '\0';
        for (int s = 0; s < n && used < 200; s++)
            used += snprintf(cell_text[k][3] + used, 256 - used, "%s%.4g", s ? " / " : "", numbers[k].values[s]);
        snprintf(cell_text[k][4], 256, "%s", !has_published || !isfinite(r.half_width) ? "-" : inside ? "yes" : "no");
        const char *row[] = {numbers[k].title, cell_text[k][0], cell_text[k][1], cell_text[k][2], cell_text[k][3],
                             cell_text[k][4]};
        memcpy(&cells[6 * k], row, sizeof(row));
    }
    report_add_section(report, "Results over seeds");
    report_add_table(report, 6, header, NUMBERS, cells);
    char path[PF_PATH_MAX + 32];
    pf_path_join(path, sizeof(path), dir, "metrics.json");
    int rc = pf_write_json_atomic(path, root, 1);
    cJSON_Delete(root);
    if (rc == 0 && report_write(report, dir) != 0)
        fprintf(stderr, "seeds: report not written: %s\n", pf_last_error());
    report_free(report);
    if (rc == 0) fprintf(stderr, "seeds: %s/metrics.json, %s/report.html\n", dir, dir);
    return rc;
}

int experiment_run_seeds(const ExperimentConfig *cfg, const uint64_t *seeds, int num_seeds, const char *dir,
                         const ExperimentOptions *options) {
    if (num_seeds < 1 || num_seeds > MAX_SEEDS) return pf_fail("--seeds takes 1 to %d seeds", MAX_SEEDS);
    for (int i = 0; i < num_seeds; i++)
        for (int j = 0; j < i; j++)
            if (seeds[i] == seeds[j]) return pf_fail("seed %llu is listed twice", (unsigned long long)seeds[i]);
    if (strlen(dir) > PF_PATH_MAX - 128) return pf_fail("run folder name too long: %s", dir);
    char path[PF_PATH_MAX + 32];
    pf_path_join(path, sizeof(path), dir, "seeds.json");
    cJSON *want = seeds_json(seeds, num_seeds);
    char *want_text = cJSON_Print(want);
    cJSON_Delete(want);
    int rc = 0;
    if (pf_file_exists(path)) {
        size_t size;
        char *have = pf_read_file(path, &size);
        if (!options->resume)
            rc = pf_fail("%s already holds a run over seeds; continue it with --resume or choose another --out", dir);
        else if (!have || strcmp(have, want_text) != 0)
            rc = pf_fail("%s holds a run over other seeds; resume it without --seeds", dir);
        free(have);
    } else if (options->resume) {
        rc = pf_fail("%s holds no run over seeds to resume (no seeds.json)", dir);
    } else if ((rc = pf_mkdir_p(dir)) == 0) {
        rc = pf_write_file_atomic(path, want_text, strlen(want_text));
    }
    free(want_text);
    for (int s = 0; s < num_seeds && rc == 0; s++) {
        ExperimentConfig one = *cfg;
        one.pretrain.seed = seeds[s];
        one.tune.seed = seeds[s];
        char sub[PF_PATH_MAX + 64];
        seed_dir(sub, sizeof(sub), dir, seeds[s]);
        ExperimentOptions o = *options;
        char state[PF_PATH_MAX + 96];
        snprintf(state, sizeof(state), "%s/experiment.json", sub);
        o.resume = pf_file_exists(state);  // a seed not started yet starts now
        fprintf(stderr, "=== seed %llu (%d of %d): %s\n", (unsigned long long)seeds[s], s + 1, num_seeds, sub);
        rc = experiment_run(&one, sub, &o);
        snprintf(state, sizeof(state), "%s/metrics.json", sub);
        if (rc == 0 && !pf_file_exists(state)) return 0;  // stopped inside a phase as asked: resume continues
    }
    if (rc == 0) rc = write_summary(seeds, num_seeds, dir, cfg);
    return rc;
}
