// Progress of long work on stderr: done/total, elapsed time and an ETA. On a terminal one line
// rewritten in place; in a pipe or a file a plain line now and then. Work that ends within its
// first seconds prints nothing. PF_PROGRESS_EVERY=S (tests) shows every S seconds from the start.
#ifndef PATHFORMER_PROGRESS_H
#define PATHFORMER_PROGRESS_H

#include <stddef.h>

typedef struct {
    char what[64];     // "bfs robust"
    const char *unit;  // "steps"
    long total, done;
    double start, last_print;
    double quiet_for, every;  // seconds with no display, then seconds between lines
    int terminal;      // stderr is a terminal
    int shown;         // a line is on the terminal, to be ended by progress_end
    int printed;       // lines printed so far
} Progress;

void progress_begin(Progress *p, const char *what, const char *unit, long total);
// Counts n more units done, and shows the progress when it is time (p may be NULL: nothing).
void progress_add(Progress *p, long n);
// Counts n more units done and prints a whole line now, terminal or not (between the lines of work
// that shows its own progress, such as a sweep's trainings).
void progress_line(Progress *p, long n);
// Ends the terminal's line when one is shown.
void progress_end(Progress *p);
// A duration as the progress lines (and train's) write it: 2m30s, 1h05m.
void progress_format_duration(char *out, size_t size, double seconds);

#endif
