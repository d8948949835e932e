// The report of a finished experiment: metrics.json, the figures (Vega-Lite specs) and report.html.
#ifndef PATHFORMER_EXPERIMENT_REPORT_H
#define PATHFORMER_EXPERIMENT_REPORT_H

#include "experiment/experiment_config.h"

// Writes metrics.json, the figures and report.html of a run folder whose other phases are done.
int experiment_write_report(const ExperimentConfig *cfg, const char *run_dir);

#endif
