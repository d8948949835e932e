// Small builders of Vega-Lite specs (cJSON objects) shared by the reports: a spec with its schema,
// encoding channels, marks, inline data and wheel/drag zoom.
#ifndef PATHFORMER_VEGALITE_H
#define PATHFORMER_VEGALITE_H

#include <cjson/cJSON.h>

// {"$schema": v6, "title", "width", "height"} (title NULL or sizes <= 0 leave those out)
cJSON *vl_spec(const char *title, int width, int height);
// {"field": f, "type": t, "title": title} (title NULL leaves it out)
cJSON *vl_channel(const char *field, const char *type, const char *title);
// Adds a log scale to a channel; returns it.
cJSON *vl_log_scale(cJSON *channel);
// An axis of whole numbers (steps, sizes): no tick between two integers; returns the channel.
cJSON *vl_integer_axis(cJSON *channel);
// Fixes a channel's scale domain to the labels 1..max_label, so that every chart gives a label the
// same place and colour, and shows labels that have no examples; returns the channel.
cJSON *vl_label_domain(cJSON *channel, int max_label);
// A tooltip list of n fields with their types.
cJSON *vl_tooltip(const char *const *fields, const char *const *types, int n);
// {"type": type}
cJSON *vl_mark(const char *type);
// {"values": values} (takes values over)
cJSON *vl_values(cJSON *values);
// A parameter binding an interval selection to the scales: wheel zooms, drag pans.
cJSON *vl_zoom(void);
// Adds vl_zoom() to a spec's params.
void vl_add_zoom(cJSON *spec);

#endif
