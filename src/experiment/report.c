#include "experiment/report.h"

#include <errno.h>
#include <math.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"

extern char **environ;

#define NAME_MAX_LEN 64
static const char *const LIBRARIES[] = {"node_modules/vega/build/vega.min.js",
                                        "node_modules/vega-lite/build/vega-lite.min.js",
                                        "node_modules/vega-embed/build/vega-embed.min.js"};
#define NUM_LIBRARIES 3

typedef enum { ITEM_SECTION, ITEM_HTML, ITEM_FIGURE } ItemKind;

typedef struct {
    ItemKind kind;
    char *text;     // heading, HTML, or caption
    char name[NAME_MAX_LEN];
    char *spec;     // figure: unformatted JSON
} Item;

struct Report {
    char *title;
    Item *items;
    int count, capacity;
};

// A growing text buffer.
typedef struct {
    char *data;
    size_t len, cap;
} Text;

static void text_append_n(Text *t, const char *s, size_t n) {
    if (t->len + n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 4096;
        while (cap < t->len + n + 1) cap *= 2;
        char *data = realloc(t->data, cap);
        if (!data) {
            fprintf(stderr, "out of memory (%zu bytes) at %s:%d\n", cap, __FILE__, __LINE__);
            exit(EXIT_FAILURE);
        }
        t->data = data;
        t->cap = cap;
    }
    memcpy(t->data + t->len, s, n);
    t->len += n;
    t->data[t->len] = '\0';
}

static void text_append(Text *t, const char *s) { text_append_n(t, s, strlen(s)); }

static void text_printf(Text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void text_printf(Text *t, const char *fmt, ...) {
    char buf[1024];
    va_list args;
    va_start(args, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, args);
    va_end(args);
    text_append_n(t, buf, n < 0 ? 0 : (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
}

static char *copy_string(const char *s) {
    size_t n = strlen(s) + 1;
    char *copy = mallocCheck(n);
    memcpy(copy, s, n);
    return copy;
}

char *report_escape(const char *s) {
    Text t = {0};
    text_append(&t, "");
    for (; *s; s++) {
        switch (*s) {
        case '<': text_append(&t, "&lt;"); break;
        case '>': text_append(&t, "&gt;"); break;
        case '&': text_append(&t, "&amp;"); break;
        case '"': text_append(&t, "&quot;"); break;
        default: text_append_n(&t, s, 1);
        }
    }
    return t.data;
}

Report *report_create(const char *title) {
    Report *report = callocCheck(1, sizeof(Report));
    report->title = copy_string(title);
    return report;
}

void report_free(Report *report) {
    if (!report) return;
    for (int i = 0; i < report->count; i++) {
        free(report->items[i].text);
        free(report->items[i].spec);
    }
    free(report->items);
    free(report->title);
    free(report);
}

static Item *add_item(Report *report, ItemKind kind, char *text) {
    if (report->count == report->capacity) {
        int capacity = report->capacity ? 2 * report->capacity : 16;
        Item *items = realloc(report->items, sizeof(Item) * (size_t)capacity);
        if (!items) {
            fprintf(stderr, "out of memory at %s:%d\n", __FILE__, __LINE__);
            exit(EXIT_FAILURE);
        }
        report->items = items;
        report->capacity = capacity;
    }
    Item *item = &report->items[report->count++];
    memset(item, 0, sizeof(*item));
    item->kind = kind;
    item->text = text;
    return item;
}

void report_add_section(Report *report, const char *title) { add_item(report, ITEM_SECTION, copy_string(title)); }

void report_add_html(Report *report, const char *html) { add_item(report, ITEM_HTML, copy_string(html)); }

void report_add_text(Report *report, const char *text) {
    char *escaped = report_escape(text);
    Text t = {0};
    text_printf(&t, "<p>");
    text_append(&t, escaped);
    text_append(&t, "</p>\n");
    free(escaped);
    add_item(report, ITEM_HTML, t.data);
}

void report_add_table(Report *report, int columns, const char *const *header, int rows, const char *const *cells) {
    Text t = {0};
    text_append(&t, "<table>\n<tr>");
    for (int c = 0; c < columns; c++) {
        char *escaped = report_escape(header[c]);
        text_append(&t, "<th>");
        text_append(&t, escaped);
        text_append(&t, "</th>");
        free(escaped);
    }
    text_append(&t, "</tr>\n");
    for (int r = 0; r < rows; r++) {
        text_append(&t, "<tr>");
        for (int c = 0; c < columns; c++) {
            char *escaped = report_escape(cells[r * columns + c]);
            text_append(&t, "<td>");
            text_append(&t, escaped);
            text_append(&t, "</td>");
            free(escaped);
        }
        text_append(&t, "</tr>\n");
    }
    text_append(&t, "</table>\n");
    add_item(report, ITEM_HTML, t.data);
}

static int valid_name(const char *name) {
    size_t n = strlen(name);
    if (n == 0 || n >= NAME_MAX_LEN) return 0;
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-' ||
              *p == '_'))
            return 0;
    return 1;
}

int report_add_vegalite(Report *report, const char *name, const char *caption, const cJSON *spec) {
    if (!valid_name(name)) return pf_fail("figure name '%s' must be 1-63 letters, digits, '-' or '_'", name);
    for (int i = 0; i < report->count; i++)
        if (report->items[i].kind == ITEM_FIGURE && strcmp(report->items[i].name, name) == 0)
            return pf_fail("the report already has a figure named '%s'", name);
    if (!cJSON_IsObject(spec)) return pf_fail("figure '%s': the spec is not a JSON object", name);
    Item *item = add_item(report, ITEM_FIGURE, copy_string(caption));
    snprintf(item->name, sizeof(item->name), "%s", name);
    item->spec = cJSON_PrintUnformatted(spec);
    if (!item->spec) {
        fprintf(stderr, "out of memory at %s:%d\n", __FILE__, __LINE__);
        exit(EXIT_FAILURE);
    }
    return 0;
}

int report_add_vegalite_file(Report *report, const char *name, const char *caption, const char *path) {
    size_t size;
    char *text = pf_read_file(path, &size);
    if (!text) return -1;
    cJSON *spec = cJSON_Parse(text);
    free(text);
    int rc = spec ? report_add_vegalite(report, name, caption, spec) : pf_fail("%s is not valid JSON", path);
    cJSON_Delete(spec);
    return rc;
}

static int has_libraries(const char *root) {
    char path[PF_PATH_MAX * 2];
    for (int i = 0; i < NUM_LIBRARIES; i++) {
        snprintf(path, sizeof(path), "%s/%s", root, LIBRARIES[i]);
        if (access(path, R_OK) != 0) return 0;
    }
    return 1;
}

int report_find_assets(char *out, size_t size) {
    if (pf_find_home(has_libraries, out, size)) return 0;
    const char *home = getenv("PATHFORMER_HOME");
    if (home && home[0]) return pf_fail("PATHFORMER_HOME=%s has no node_modules with Vega (run `npm ci` there)", home);
    return pf_fail("the plotting libraries are missing: run `npm ci` in pathformer's folder (or set PATHFORMER_HOME)");
}

// Appends a file's contents inside a <script> element, which would end at "</script": that one
// text (only ever inside a string) is written as "<\/script".
static int append_script_file(Text *t, const char *path) {
    size_t size;
    char *data = pf_read_file(path, &size);
    if (!data) return -1;
    size_t start = 0;
    for (size_t i = 0; i + 8 <= size; i++) {
        if (data[i] == '<' && strncasecmp(data + i, "</script", 8) == 0) {
            text_append_n(t, data + start, i - start);
            text_append(t, "<\\");
            start = i + 1;
        }
    }
    text_append_n(t, data + start, size - start);
    free(data);
    return 0;
}

static const char *STYLE =
    "body{font:15px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1180px;margin:2em auto;padding:0 1em;"
    "color:#222}\n"
    "h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}\n"
    "figure{margin:1.2em 0;overflow-x:auto}figcaption{color:#555;font-size:.92em;margin-top:.3em}\n"
    "table{border-collapse:collapse;margin:1em 0;font-variant-numeric:tabular-nums}\n"
    "th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}th{background:#f4f4f4}\n"
    "pre{background:#f6f6f6;padding:.8em;overflow-x:auto;font-size:.85em;tab-size:4}\n"
    ".figure-error{color:#b00}\n";

// Renders every figure with vega-embed (SVG renderer, so a browser test can see the drawing).
static const char *EMBED_SCRIPT =
    "document.querySelectorAll('div.vl').forEach(function (el) {\n"
    "  var spec = JSON.parse(document.getElementById('spec-' + el.dataset.name).textContent);\n"
    "  vegaEmbed(el, spec, {renderer: 'svg', actions: {export: true, source: false, compiled: false, editor: false}})\n"
    "    .catch(function (err) { el.className = 'figure-error'; el.textContent = 'figure failed: ' + err;\n"
    "      console.error(err); });\n"
    "});\n";

static int build_html(const Report *report, const char *assets, Text *t) {
    char *title = report_escape(report->title);
    text_append(t, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>");
    text_append(t, title);
    text_append(t, "</title>\n<style>\n");
    text_append(t, STYLE);
    text_append(t, "</style>\n");
    char path[PF_PATH_MAX * 2];
    for (int i = 0; i < NUM_LIBRARIES; i++) {
        snprintf(path, sizeof(path), "%s/%s", assets, LIBRARIES[i]);
        text_append(t, "<script>\n");
        if (append_script_file(t, path) != 0) {
            free(title);
            return -1;
        }
        text_append(t, "\n</script>\n");
    }
    text_append(t, "</head>\n<body>\n<h1>");
    text_append(t, title);
    text_append(t, "</h1>\n");
    free(title);
    for (int i = 0; i < report->count; i++) {
        const Item *item = &report->items[i];
        if (item->kind == ITEM_SECTION) {
            char *heading = report_escape(item->text);
            text_printf(t, "<h2>%s</h2>\n", heading);
            free(heading);
        } else if (item->kind == ITEM_HTML) {
            text_append(t, item->text);
        } else {
            char *caption = report_escape(item->text);
            text_printf(t, "<figure id=\"figure-%s\"><div class=\"vl\" data-name=\"%s\"></div>\n", item->name,
                        item->name);
            text_append(t, "<figcaption>");
            text_append(t, caption);
            text_printf(t, " <a href=\"figures/%s.svg\">SVG</a></figcaption></figure>\n", item->name);
            text_printf(t, "<script type=\"application/json\" id=\"spec-%s\">", item->name);
            for (const char *p = item->spec; *p; p++) {
                if (p[0] == '<' && p[1] == '/')
                    text_append(t, "<\\");  // "</" may not appear inside a script element
                else
                    text_append_n(t, p, 1);
            }
            text_append(t, "</script>\n");
            free(caption);
        }
    }
    text_append(t, "<script>\n");
    text_append(t, EMBED_SCRIPT);
    text_append(t, "</script>\n</body>\n</html>\n");
    return 0;
}

// Runs `node assets/scripts/vega_export.mjs figures_dir`; a missing Node or a failed export is
// reported on one line and does not fail the report.
static void export_svg(const char *assets, const char *figures_dir) {
    char script[PF_PATH_MAX * 2];
    snprintf(script, sizeof(script), "%s/scripts/vega_export.mjs", assets);
    if (access(script, R_OK) != 0) {  // an installed pathformer has the libraries, not the exporter
        fprintf(stderr, "report: figures not exported as SVG (no %s); report.html is complete\n", script);
        return;
    }
    char *argv[] = {"node", script, (char *)figures_dir, NULL};
    pid_t pid;
    int rc = posix_spawnp(&pid, "node", NULL, NULL, argv, environ);
    if (rc != 0) {
        fprintf(stderr, "report: node not found (%s); figures not exported as SVG, report.html is complete\n",
                strerror(rc));
        return;
    }
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fprintf(stderr, "report: the SVG export failed (node %s); report.html is complete\n", script);
}

int report_write(const Report *report, const char *dir) {
    char assets[PF_PATH_MAX], path[PF_PATH_MAX * 2], figures[PF_PATH_MAX + 16];
    if (report_find_assets(assets, sizeof(assets)) != 0) return -1;
    snprintf(figures, sizeof(figures), "%s/figures", dir);
    if (pf_mkdir_p(figures) != 0) return -1;
    int num_figures = 0;
    for (int i = 0; i < report->count; i++) {
        const Item *item = &report->items[i];
        if (item->kind != ITEM_FIGURE) continue;
        snprintf(path, sizeof(path), "%s/%s.vl.json", figures, item->name);
        if (pf_write_file_atomic(path, item->spec, strlen(item->spec)) != 0) return -1;
        num_figures++;
    }
    Text html = {0};
    int rc = build_html(report, assets, &html);
    if (rc == 0) {
        snprintf(path, sizeof(path), "%s/report.html", dir);
        rc = pf_write_file_atomic(path, html.data, html.len);
    }
    free(html.data);
    if (rc == 0 && num_figures > 0) export_svg(assets, figures);
    return rc;
}

double report_json_number(const cJSON *object, const char *key) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(object, key);
    return cJSON_IsNumber(item) ? item->valuedouble : NAN;
}
