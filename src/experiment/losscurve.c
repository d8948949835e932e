#include "experiment/losscurve.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

void losslog_free(LossLog *log) {
    free(log->step);
    free(log->lr);
    free(log->mse);
    free(log->label_mse);
    free(log->examples_per_s);
    free(log->elapsed_s);
    memset(log, 0, sizeof(*log));
}

// Parses one number field ending at ',' or '\n' (empty = NAN); advances *p past the separator.
static int read_field(char **p, double *out) {
    char *start = *p, *end;
    if (*start == ',' || *start == '\n' || *start == '\0') {
        *out = NAN;
    } else {
        *out = strtod(start, &end);
        if (end == start || (*end != ',' && *end != '\n' && *end != '\0')) return -1;
        start = end;
    }
    if (*start == ',') start++;
    *p = start;
    return 0;
}

int losslog_read(LossLog *log, const char *path) {
    memset(log, 0, sizeof(*log));
    size_t size;
    char *text = pf_read_file(path, &size);
    if (!text) return -1;
    if (strlen(text) != size) {
        free(text);
        return pf_fail("%s: not a training log (it holds a NUL byte)", path);
    }
    return losslog_parse(log, text, path);
}

int losslog_parse(LossLog *log, char *text, const char *path) {
    memset(log, 0, sizeof(*log));
    char *line_end = strchr(text, '\n');
    if (strncmp(text, "step,lr,mse,mse_1", 17) != 0 || !line_end) {
        free(text);
        return pf_fail("%s: not a training log (header 'step,lr,mse,mse_1,...' expected)", path);
    }
    int columns = 1;
    for (char *c = text; c < line_end; c++) columns += *c == ',';
    int max_label = columns - 5;  // step, lr, mse, labels..., examples_per_s, elapsed_s
    if (max_label < 1 || max_label > PF_MAX_VERTICES) {
        free(text);
        return pf_fail("%s: unexpected number of columns (%d)", path, columns);
    }
    long rows = 0;
    for (char *c = line_end + 1; *c; c++) rows += *c == '\n';
    log->max_label = max_label;
    log->step = mallocCheck(sizeof(long) * (size_t)(rows + 1));
    log->lr = mallocCheck(sizeof(double) * (size_t)(rows + 1));
    log->mse = mallocCheck(sizeof(double) * (size_t)(rows + 1));
    log->label_mse = mallocCheck(sizeof(double) * (size_t)(rows + 1) * (size_t)(max_label + 1));
    log->examples_per_s = mallocCheck(sizeof(double) * (size_t)(rows + 1));
    log->elapsed_s = mallocCheck(sizeof(double) * (size_t)(rows + 1));
    char *p = line_end + 1;
    for (long i = 0; i < rows; i++) {
        double step, value;
        int bad = read_field(&p, &step) != 0 || !(step >= 0 && step < 1e15);
        bad = bad || read_field(&p, &log->lr[i]) != 0 || read_field(&p, &log->mse[i]) != 0;
        log->label_mse[i * (max_label + 1)] = NAN;  // label 0 never occurs
        for (int label = 1; label <= max_label && !bad; label++) {
            bad = read_field(&p, &value) != 0;
            log->label_mse[i * (max_label + 1) + label] = value;
        }
        bad = bad || read_field(&p, &log->examples_per_s[i]) != 0 || read_field(&p, &log->elapsed_s[i]) != 0;
        // only the per-label columns may be empty
        bad = bad || isnan(log->lr[i]) || isnan(log->mse[i]) || isnan(log->examples_per_s[i]) ||
              isnan(log->elapsed_s[i]);
        if (bad || *p != '\n') {
            losslog_free(log);
            free(text);
            return pf_fail("%s: row %ld is malformed", path, i + 1);
        }
        p++;
        log->step[i] = (long)step;
        log->n = i + 1;
    }
    free(text);
    return 0;
}

int phase_change_window(long n) {
    long w = n / 25;
    return w < 5 ? 5 : w > 100 ? 100 : (int)w;
}

long phase_change_index(const double *loss, long n, int window, double factor) {
    if (n < 3 * (long)window || window < 2 || !(factor > 1.0)) return -1;
    // prefix sums of log-loss and of counts of finite values: any window's mean in O(1)
    double *sum = mallocCheck(sizeof(double) * (size_t)(n + 1));
    long *count = mallocCheck(sizeof(long) * (size_t)(n + 1));
    sum[0] = 0.0;
    count[0] = 0;
    for (long i = 0; i < n; i++) {
        int ok = isfinite(loss[i]) && loss[i] > 0.0;
        sum[i + 1] = sum[i] + (ok ? log(loss[i]) : 0.0);
        count[i + 1] = count[i] + ok;
    }
    int half = window / 2;
    long skip = window / 4;
    double threshold = log(factor), best_drop = 0.0;
    long best = -1;
    for (long i = skip + half; i + window <= n; i++) {
        // mean log-loss of the window before i (cut at skip) and of the window after i
        long a0 = i - window < skip ? skip : i - window, a1 = i, b0 = i, b1 = i + window;
        long ca = count[a1] - count[a0], cb = count[b1] - count[b0];
        double drop = ca >= half && cb >= half ? (sum[a1] - sum[a0]) / ca - (sum[b1] - sum[b0]) / cb : 0.0;
        if (drop >= threshold && drop > best_drop) {
            best_drop = drop;
            best = i;
        } else if (best >= 0 && drop < threshold) {
            break;  // the end of the first stretch that falls fast enough: its steepest point is the change
        }
    }
    free(sum);
    free(count);
    return best;
}
