// A self-contained HTML report: sections of text, tables and interactive Vega-Lite figures, with
// the Vega, Vega-Lite and vega-embed libraries (npm, pinned in package.json) inlined so the page
// opens offline. Each figure's spec is also saved as figures/NAME.vl.json and, when Node is
// there, exported headless as figures/NAME.svg for papers (scripts/vega_export.mjs).
//
// Any code can add to a report: build sections in order, then write it once.
//     Report *report = report_create("title");
//     report_add_section(report, "Pre-training");
//     report_add_vegalite(report, "loss", "caption", spec);          // spec: a cJSON Vega-Lite object
//     report_add_vegalite_file(report, "bfs", "caption", "bfs.vl.json");
//     report_write(report, run_dir);
#ifndef PATHFORMER_REPORT_H
#define PATHFORMER_REPORT_H

#include <cjson/cJSON.h>

typedef struct Report Report;

Report *report_create(const char *title);
void report_free(Report *report);
// A new section heading.
void report_add_section(Report *report, const char *title);
// A paragraph of plain text (escaped).
void report_add_text(Report *report, const char *text);
// Raw HTML, written as given (escape what comes from outside with report_escape).
void report_add_html(Report *report, const char *html);
// A table: `columns` headers, then rows of `columns` cells each (plain text, escaped).
void report_add_table(Report *report, int columns, const char *const *header, int rows,
                      const char *const *cells);
// A Vega-Lite figure; `name` (letters, digits, '-', '_') names its files. The spec is copied.
// 0 or -1 with the error set (bad or duplicate name).
int report_add_vegalite(Report *report, const char *name, const char *caption, const cJSON *spec);
// A Vega-Lite figure read from a JSON file (e.g. one another command wrote).
int report_add_vegalite_file(Report *report, const char *name, const char *caption, const char *path);

// Writes dir/report.html and dir/figures/NAME.vl.json, then exports dir/figures/NAME.svg with Node
// (a missing Node is reported on one line and is not an error). 0 or -1 with the error set.
int report_write(const Report *report, const char *dir);

// The number under `key` of a JSON object, NaN where it is missing or null (cJSON writes NaN as null).
double report_json_number(const cJSON *object, const char *key);

// HTML-escapes text into a fresh string.
char *report_escape(const char *text);
// The folder holding node_modules/ with the plotting libraries and scripts/vega_export.mjs:
// $PATHFORMER_HOME, else the executable's folder or one of its two parents, else the current
// folder. 0 or -1 with the error set (then `npm ci` has not been run).
int report_find_assets(char *out, size_t size);

#endif
