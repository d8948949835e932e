// The report of a bfs experiment's folder (bfs_experiments.h).
#ifndef PATHFORMER_BFS_REPORT_H
#define PATHFORMER_BFS_REPORT_H

// out_dir/report.html: what was run, the summary table and the figures of the experiment that
// wrote out_dir; argv (argc entries) are the arguments after `bfs`, subcommand first. 0, or -1
// with the error set (e.g. no node_modules with the plotting libraries).
int bfs_write_report(const char *out_dir, int argc, char **argv);

#endif
