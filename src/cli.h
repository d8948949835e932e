// What every command of the command line shares: one-line errors that exit non-zero, and option
// values parsed with their bounds checked.
#ifndef PATHFORMER_CLI_H
#define PATHFORMER_CLI_H

#include <stdint.h>
#include <stdio.h>

// Prints "pathformer: MESSAGE" on one line to stderr and exits with EXIT_FAILURE.
void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
// die with the message of the last recoverable error (pf_last_error).
void die_error(void) __attribute__((noreturn));

// The value after option argv[*i] (advancing *i), or die when there is none.
const char *need_value(int argc, char **argv, int *i);
// The option's value as a number in lo..hi, or die naming the option.
long parse_long(const char *option, const char *text, long lo, long hi);
uint64_t parse_u64(const char *option, const char *text);
double parse_double(const char *option, const char *text, double lo, double hi);

// The grammar every command shares, printed under every usage.
#define CLI_COMMON_OPTIONS                                                                                                 \
    "options: --name value or --name=value (-n 5 or -n=5); -h, --help: the command's usage; -q, --quiet:\n"         \
    "errors only; - names standard input or output wherever a file is named; key=value: a setting\n"                \
    "(pathformer keys COMMAND lists them)\n"

// The one option grammar of every command: "--name=value" and "-n=value" become "--name value" and
// "-n value"; --quiet and -q anywhere are taken out and make the run quiet (cli_quiet). Returns the
// new argument vector (argv[0] and key=value settings unchanged) and its length in *argc.
char **cli_normalize(int *argc, char **argv);
// Whether die has run (an exit handler then has nothing to add).
int cli_failed(void);
// Where errors go: stderr, or the real stderr under cli_quiet.
FILE *cli_errors(void);
// Errors only: everything else written to stderr (progress, notes) is discarded from here on.
void cli_quiet(void);

#endif
