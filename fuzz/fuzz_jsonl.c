// JSON Lines graphs as predict reads them: {"edges": [[u, v], ...], "target": t}, each line alone.
#include "batch.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = fuzz_text(data, size);
    DataConfig cfg = data_config_default();
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        Example ex;
        example_parse_jsonl(&ex, line, &cfg);
    }
    free(text);
    return 0;
}
