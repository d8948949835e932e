// `pathformer bfs SUBCOMMAND [options]`: the hand-built BFS transformer from the command line.
#ifndef PATHFORMER_BFS_CLI_H
#define PATHFORMER_BFS_CLI_H

// argv holds the arguments after `bfs`, subcommand first. Returns the exit status; exits with a
// one-line error on bad input.
int bfs_main(int argc, char **argv);

#endif
