"""Writes PyTorch checkpoints of a small model of SPEC §3 for the import test (tests/test_cli.c).

usage: /usr/bin/python3 tests/torch_pth.py DIR
  writes DIR/compiled.pth        a state_dict as a torch.compile'd model saves it ("_orig_mod." names)
         DIR/wrapped.pth         {"model_state_dict": state_dict}, as training scripts often save it
         DIR/pickled.pth         the whole module pickled (refused: loading it would run code)
         DIR/plain.safetensors   the same tensors under plain names (what the import must give)
         DIR/compiled.safetensors  the same tensors under "_orig_mod." names (loaded directly)
"""
import sys

import torch

from torch_ref import TransformerModel, save_safetensors


def main():
    folder = sys.argv[1]
    torch.manual_seed(3)
    model = TransformerModel(17, 32, 2, 2, 64)
    state = model.state_dict()
    compiled = {f"_orig_mod.{name}": tensor for name, tensor in state.items()}
    torch.save(compiled, f"{folder}/compiled.pth")
    torch.save({"model_state_dict": state, "epoch": 3}, f"{folder}/wrapped.pth")
    torch.save(model, f"{folder}/pickled.pth")
    save_safetensors(f"{folder}/plain.safetensors", state)
    save_safetensors(f"{folder}/compiled.safetensors", compiled)


if __name__ == "__main__":
    main()
