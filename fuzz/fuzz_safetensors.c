// safetensors files: the header length, the JSON header, dtypes, shapes, offsets, metadata; then a
// model's config read from whatever parsed (every tensor fetched as the model would fetch it), and
// an optimizer state's tensors.
#include "fuzz.h"
#include "model.h"
#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *buffer = mallocCheck(size ? size : 1);
    memcpy(buffer, data, size);
    StFile file;
    if (st_parse(&file, buffer, size) != 0) return 0;  // st_parse owns the buffer either way
    ModelConfig cfg = model_config_default();
    if (model_config_from_file(&cfg, &file) == 0) {
        for (int i = 0; i < file.num_tensors; i++) {
            const StTensor *t = &file.tensors[i];
            const float *values;
            if (t->dtype == ST_F32 && st_get_f32(&file, t->name, t->ndim, t->shape, &values) == 0 && t->numel > 0) {
                volatile float first = values[0], last = values[t->numel - 1];
                (void)first;
                (void)last;
            }
        }
    }
    int64_t shape[1] = {3};
    const float *m;
    st_get_f32(&file, "exp_avg", 1, shape, &m);
    st_metadata(&file, "step");
    st_free(&file);
    return 0;
}
