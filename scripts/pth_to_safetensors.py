"""Converts a PyTorch checkpoint of the shortest-path model (a .pth state_dict, as the original
notebook saves it) into a safetensors file that pathformer loads (`pathformer import` runs this).

usage: python3 scripts/pth_to_safetensors.py IN.pth OUT.safetensors [--n-heads H]

- Accepts a state_dict, or a dict holding one under "state_dict", "model_state_dict" or "model".
- Names from torch.compile ("_orig_mod.") or DataParallel ("module.") lose that prefix.
- Tensors are written as float32 (other float types are converted, and said so on stderr).
- Only tensors are unpickled (torch.load(weights_only=True)): a pickled model object is refused,
  since loading one would run code from the file; save its state_dict() instead.
- Head count cannot be read off the shapes; --n-heads writes it into the metadata (default: none,
  so pathformer assumes the published 2).
Exit status 0, or 1 with one line on stderr naming the problem.
"""
import json
import struct
import sys

PREFIXES = ("_orig_mod.", "module.")
NESTED_KEYS = ("state_dict", "model_state_dict", "model")


def fail(message):
    print(f"pth_to_safetensors: {message}", file=sys.stderr)
    sys.exit(1)


def find_state_dict(obj, torch):
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    if isinstance(obj, dict):
        for key in NESTED_KEYS:
            if key in obj:
                return find_state_dict(obj[key], torch)
    fail("no state_dict of tensors in the file (expected name -> tensor, or one under 'state_dict')")


def strip_prefixes(state):
    for prefix in PREFIXES:
        if state and all(name.startswith(prefix) for name in state):
            state = {name[len(prefix):]: t for name, t in state.items()}
    return state


def write_safetensors(path, state, metadata):
    import numpy as np
    header, chunks, offset = {}, [], 0
    for name, tensor in state.items():
        array = np.ascontiguousarray(tensor.detach().cpu().numpy().astype(np.float32))
        raw = array.astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    temporary = path + ".tmp"
    with open(temporary, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in chunks:
            f.write(raw)
    import os
    os.replace(temporary, path)


def main(argv):
    args = [a for a in argv if not a.startswith("--")]
    n_heads = None
    if "--n-heads" in argv:
        i = argv.index("--n-heads")
        if i + 1 >= len(argv) or not argv[i + 1].isdigit() or int(argv[i + 1]) < 1:
            fail("--n-heads needs a positive integer")
        n_heads = argv[i + 1]
        args = [a for a in args if a != n_heads]
    if len(args) != 2:
        fail("usage: pth_to_safetensors.py IN.pth OUT.safetensors [--n-heads H]")
    source, target = args
    try:
        import torch
    except ImportError:
        fail("PyTorch is missing (Debian: apt-get install python3-torch)")
    try:
        obj = torch.load(source, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        fail(f"cannot open {source}: no such file")
    except Exception as error:  # torch raises several types for files that are not checkpoints
        text = str(error).strip() or type(error).__name__
        reason = text.split("WeightsUnpickler error: ")[-1].splitlines()[0][:160]
        fail(f"{source}: not a tensor-only PyTorch checkpoint ({reason}); save model.state_dict() instead")
    state = strip_prefixes(find_state_dict(obj, torch))
    converted = sorted(name for name, t in state.items() if t.dtype != torch.float32)
    if converted:
        print(f"pth_to_safetensors: {len(converted)} tensors converted to float32", file=sys.stderr)
    metadata = {"n_heads": n_heads} if n_heads else {}
    try:
        write_safetensors(target, state, metadata)
    except OSError as error:
        fail(f"cannot write {target}: {error.strerror}")
    print(f"{target}: {len(state)} tensors from {source}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
