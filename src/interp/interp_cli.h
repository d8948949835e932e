// `pathformer probe`, `pathformer inspect`, `pathformer ablate` and `pathformer inside`: looking
// inside a checkpoint (for probe, also inside the hand-built BFS transformer; for inside, a run
// folder's two models, for its report) from the command line.
#ifndef PATHFORMER_INTERP_CLI_H
#define PATHFORMER_INTERP_CLI_H

// argv holds the command's arguments, argv[0] the command. Return the exit status; exit with a
// one-line error on bad input.
int interp_probe_main(int argc, char **argv);
int interp_inspect_main(int argc, char **argv);
int interp_ablate_main(int argc, char **argv);
int interp_inside_main(int argc, char **argv);

#endif
