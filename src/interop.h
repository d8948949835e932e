// Moving weights in from PyTorch: a .pth state_dict (as the original notebook saves it) converted
// by scripts/pth_to_safetensors.py on Debian's python3-torch, then checked by loading it here.
#ifndef PATHFORMER_INTEROP_H
#define PATHFORMER_INTEROP_H

#include <stddef.h>

// Converts in_path (.pth) into out_path (safetensors) with scripts/pth_to_safetensors.py, found as
// pf_find_home finds pathformer's files, and loads the result as a model; n_heads > 0
// is written into its metadata. The Python interpreter is $PF_PYTHON, else /usr/bin/python3 when it
// is there (Debian's, which has python3-torch), else python3 on the PATH. On success fills
// *num_parameters and *n_layers. 0 or -1 with the error set (the converter's own one-line reason).
int interop_import_pth(const char *in_path, const char *out_path, int n_heads, size_t *num_parameters,
                       int *n_layers);

#endif
