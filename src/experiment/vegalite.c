#include "experiment/vegalite.h"

cJSON *vl_spec(const char *title, int width, int height) {
    cJSON *spec = cJSON_CreateObject();
    cJSON_AddStringToObject(spec, "$schema", "https://vega.github.io/schema/vega-lite/v6.json");
    if (title) cJSON_AddStringToObject(spec, "title", title);
    if (width > 0) cJSON_AddNumberToObject(spec, "width", width);
    if (height > 0) cJSON_AddNumberToObject(spec, "height", height);
    return spec;
}

// {"field": f, "type": t, "title": title}
cJSON *vl_channel(const char *field, const char *type, const char *title) {
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "field", field);
    cJSON_AddStringToObject(c, "type", type);
    if (title) cJSON_AddStringToObject(c, "title", title);
    return c;
}

cJSON *vl_log_scale(cJSON *c) {
    cJSON *scale = cJSON_AddObjectToObject(c, "scale");
    cJSON_AddStringToObject(scale, "type", "log");
    return c;
}

cJSON *vl_integer_axis(cJSON *c) {
    cJSON *axis = cJSON_GetObjectItemCaseSensitive(c, "axis");
    if (!axis) axis = cJSON_AddObjectToObject(c, "axis");
    cJSON_AddNumberToObject(axis, "tickMinStep", 1);
    cJSON_AddStringToObject(axis, "format", "d");
    return c;
}

cJSON *vl_label_domain(cJSON *c, int max_label) {
    cJSON *scale = cJSON_GetObjectItemCaseSensitive(c, "scale");
    if (!scale) scale = cJSON_AddObjectToObject(c, "scale");
    cJSON *domain = cJSON_AddArrayToObject(scale, "domain");
    for (int label = 1; label <= max_label; label++) cJSON_AddItemToArray(domain, cJSON_CreateNumber(label));
    return c;
}

cJSON *vl_tooltip(const char *const *fields, const char *const *types, int n) {
    cJSON *list = cJSON_CreateArray();
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(list, vl_channel(fields[i], types[i], NULL));
    return list;
}

cJSON *vl_mark(const char *type) {
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "type", type);
    return m;
}

cJSON *vl_values(cJSON *values) {
    cJSON *data = cJSON_CreateObject();
    cJSON_AddItemToObject(data, "values", values);
    return data;
}

// Zoom and pan with the mouse wheel and drag on both axes: a parameter for a spec's "params".
cJSON *vl_zoom(void) {
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "name", "zoom");
    cJSON *select = cJSON_AddObjectToObject(p, "select");
    cJSON_AddStringToObject(select, "type", "interval");
    cJSON_AddStringToObject(p, "bind", "scales");
    return p;
}

void vl_add_zoom(cJSON *spec) { cJSON_AddItemToArray(cJSON_AddArrayToObject(spec, "params"), vl_zoom()); }
