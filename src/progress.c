#include "progress.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"

enum { QUIET_SECONDS = 3 };  // work shorter than this shows nothing
static const double TERMINAL_EVERY = 0.25, PIPE_EVERY = 15.0;

void progress_begin(Progress *p, const char *what, const char *unit, long total) {
    memset(p, 0, sizeof(*p));
    snprintf(p->what, sizeof(p->what), "%s", what);
    p->unit = unit;
    p->total = total;
    p->start = pf_now_seconds();
    p->last_print = p->start;
    p->terminal = isatty(fileno(stderr));
    p->quiet_for = QUIET_SECONDS;
    p->every = p->terminal ? TERMINAL_EVERY : PIPE_EVERY;
    const char *every = getenv("PF_PROGRESS_EVERY");
    if (every && every[0]) {
        p->quiet_for = 0;
        p->every = atof(every);
    }
}

void progress_format_duration(char *out, size_t size, double seconds) {
    if (!isfinite(seconds) || seconds < 0) seconds = 0;
    long s = (long)seconds;
    if (s >= 3600)
        snprintf(out, size, "%ldh%02ldm", s / 3600, (s % 3600) / 60);
    else
        snprintf(out, size, "%ldm%02lds", s / 60, s % 60);
}

static void print_progress(Progress *p, double now, int whole_line) {
    p->last_print = now;
    double elapsed = now - p->start;
    char spent[32], eta[32];
    progress_format_duration(spent, sizeof(spent), elapsed);
    progress_format_duration(eta, sizeof(eta), elapsed / p->done * (double)(p->total - p->done));
    double percent = p->total > 0 ? 100.0 * p->done / p->total : 100.0;
    int in_place = p->terminal && !whole_line;
    fprintf(stderr, "%s%s: %ld/%ld %s (%.0f%%), %s, ETA %s%s", in_place ? "\r" : "", p->what, p->done, p->total,
            p->unit, percent, spent, eta, in_place ? "   " : "\n");
    p->shown = in_place;
    p->printed++;
}

void progress_add(Progress *p, long n) {
    if (!p) return;
    p->done += n;
    double now = pf_now_seconds();
    if (now - p->start < p->quiet_for || p->done <= 0) return;
    // the last line only after earlier ones: work that ended before its first line shows nothing
    int last = p->done >= p->total && (p->printed || p->every == 0);
    if (now - p->last_print < p->every && !last) return;
    print_progress(p, now, 0);
}

void progress_line(Progress *p, long n) {
    p->done += n;
    progress_end(p);
    print_progress(p, pf_now_seconds(), 1);
}

void progress_end(Progress *p) {
    if (!p) return;
    if (p->shown) fputc('\n', stderr);
    p->shown = 0;
}
