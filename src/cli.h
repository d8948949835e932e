// What every command of the command line shares: one-line errors that exit non-zero, and option
// values parsed with their bounds checked.
#ifndef PATHFORMER_CLI_H
#define PATHFORMER_CLI_H

#include <stdint.h>

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

#endif
