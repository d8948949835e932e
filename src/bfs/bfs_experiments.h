// The experiments on the hand-built BFS transformer (bfs.h): the construction's MSE per N, and its
// robustness to damaged or perturbed weights, with Adam retraining.
#ifndef PATHFORMER_BFS_EXPERIMENTS_H
#define PATHFORMER_BFS_EXPERIMENTS_H

#include "bfs/bfs.h"

// The settings of every experiment. Each experiment writes CSV, JSON and Vega-Lite v6 specs into
// out_dir and prints a table.
typedef struct {
    int n_min, n_max;      // sweep-n: sizes
    float scale;           // sweep-n: the construction's score scale
    int blog_reach;        // sweep-n: the blog's reach heads (BfsConfig.blog_reach)
    long eval_count;       // graphs per evaluation
    uint64_t seed;
    int kinds[BFS_NUM_KINDS + 1];  // robust: kinds to damage (-1 = a random kind per run), ended by -2
    int matrix_index;      // robust: which matrix of the kind (-1 = random per run)
    int seeds;             // runs per kind (robust) or per sigma (noise)
    long steps;            // Adam steps per run (noise: 0 = no retraining)
    double lr;             // noise: Adam's rate
    double lrs[8];         // robust: Adam's rates, each run once per rate
    int num_lrs;
    int resume;            // robust: keep the finished runs of the folder (started with the same settings)
    int summarize;         // robust: no training, the summary and figures of the runs finished so far
    int batch;
    double threshold;      // robust: a run has recovered when its batch loss falls below this
    double sigmas[32];     // noise: perturbation scales
    int num_sigmas;
} BfsExperiment;

BfsExperiment bfs_experiment_default(void);
// MSE of the construction for N in n_min..n_max, both variants: sweep_n.{csv,json}, sweep_n.vl.json.
int bfs_run_sweep_n(const BfsExperiment *exp, const char *out_dir);
// Damage one matrix, retrain: runs spread over the threads, each leaving runs/run-K.{csv,json} as
// it ends (resumable); then robust_loss.csv (per step), robust.json (per run and per kind and rate),
// robust_loss.vl.json, robust_recovered.vl.json and, with several rates, robust_lr.vl.json.
int bfs_run_robust(const BfsConfig *cfg, const BfsExperiment *exp, const char *out_dir);
// Perturb every weight by sigma N(0, 1): noise.csv, noise.json, noise.vl.json.
int bfs_run_noise(const BfsConfig *cfg, const BfsExperiment *exp, const char *out_dir);

#endif
