"""PyTorch reference for the parity test (tests/test_parity.c).

Builds the model of SPEC §3 exactly as the original code did (nn.Embedding, nn.TransformerEncoder
of post-LN nn.TransformerEncoderLayer, nn.Linear readout), loads the weights the C side wrote with
load_state_dict(strict=True), runs the batch, and writes outputs, loss, every gradient and the
parameters after a few Adam steps (with and without weight decay) for the C side to compare, and
after the same optimizer object goes on for a few steps on a second batch at another rate (the
fine-tuning of the authors' code, which stepped the pre-training optimizer on `tune` data).

usage: /usr/bin/python3 tests/torch_ref.py DIR
  reads  DIR/weights.safetensors (model + config metadata) and DIR/batch.safetensors
         (tokens I32 (B,T,2), labels F32 (B), tokens2 and labels2 the second batch; metadata lr,
         weight_decay, adam_steps, lr_continue)
  writes DIR/reference.safetensors: pred, loss, grad.NAME, the gradient after
         torch.nn.utils.clip_grad_norm_ to metadata clip_norm (clipped.grad.NAME, clipped.total_norm),
         and for tag adam_wd0 / adam_wd the
         parameters after the Adam steps (TAG.NAME) and each entry's smallest |gradient + decay|
         over those steps (TAG.min_grad.NAME); tag adam_continue: adam_steps steps on the first
         batch at lr, then adam_steps more of the same optimizer on the second at lr_continue
"""
import json
import struct
import sys

import numpy as np
import torch
from torch import nn

DTYPES = {"F32": np.float32, "I32": np.int32}


def load_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + header_len])
    metadata = header.pop("__metadata__", {})
    base = 8 + header_len
    tensors = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        array = np.frombuffer(data[base + begin:base + end], dtype=DTYPES[info["dtype"]])
        tensors[name] = torch.from_numpy(array.reshape(info["shape"]).copy())
    return tensors, metadata


def save_safetensors(path, tensors):
    header, chunks, offset = {}, [], 0
    for name, tensor in tensors.items():
        array = np.ascontiguousarray(tensor.detach().cpu().numpy().astype(np.float32))
        raw = array.tobytes()
        header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in chunks:
            f.write(raw)


class TransformerModel(nn.Module):
    """The original architecture: pair embedding, post-LN encoder, readout on the last position."""

    def __init__(self, vocab, d_model, n_heads, n_layers, d_ff):
        super().__init__()
        self.embedding = nn.Embedding(vocab, d_model // 2)
        layer = nn.TransformerEncoderLayer(d_model, n_heads, d_ff, dropout=0.0, batch_first=True)
        self.transformer_encoder = nn.TransformerEncoder(layer, n_layers)
        self.fc_out = nn.Linear(d_model, 1)

    def forward(self, tokens):
        padding = tokens[:, :, 0] == 0
        embedded = self.embedding(tokens).flatten(start_dim=2)
        hidden = self.transformer_encoder(embedded, src_key_padding_mask=padding)
        return self.fc_out(hidden[:, -1, :]).squeeze(-1)


def build(weights, meta):
    model = TransformerModel(int(meta["vocab"]), int(meta["d_model"]), int(meta["n_heads"]),
                             int(meta["n_layers"]), int(meta["d_ff"]))
    model.load_state_dict(weights, strict=True)
    model.train()  # dropout is 0; training mode keeps the plain (non-fused) attention path
    return model


def main():
    folder = sys.argv[1]
    torch.set_num_threads(2)
    weights, meta = load_safetensors(f"{folder}/weights.safetensors")
    batch, batch_meta = load_safetensors(f"{folder}/batch.safetensors")
    tokens = batch["tokens"].long()
    labels = batch["labels"]
    out = {}

    model = build(weights, meta)
    pred = model(tokens)
    loss = ((pred - labels) ** 2).mean()
    loss.backward()
    out["pred"] = pred
    out["loss"] = loss.reshape(1)
    for name, param in model.named_parameters():
        out[f"grad.{name}"] = param.grad.clone()
    # the same gradient clipped to the global norm clip_norm
    total = torch.nn.utils.clip_grad_norm_(model.parameters(), float(batch_meta["clip_norm"]))
    out["clipped.total_norm"] = total.reshape(1)
    for name, param in model.named_parameters():
        out[f"clipped.grad.{name}"] = param.grad

    lr = float(batch_meta["lr"])
    steps = int(batch_meta["adam_steps"])
    second = (batch["tokens2"].long(), batch["labels2"], float(batch_meta["lr_continue"]))
    runs = (("adam_wd0", 0.0, False), ("adam_wd", float(batch_meta["weight_decay"]), False),
            ("adam_continue", 0.0, True))
    for tag, weight_decay, go_on in runs:
        model = build(weights, meta)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
        # the smallest gradient magnitude each entry had over the steps (plus weight decay, as Adam
        # sees it) tells the C side which entries are driven by round-off
        smallest = {name: None for name, _ in model.named_parameters()}
        phases = [(tokens, labels, lr)] + ([second] if go_on else [])
        for phase_tokens, phase_labels, phase_lr in phases:
            for group in optimizer.param_groups:
                group["lr"] = phase_lr
            for _ in range(steps):
                optimizer.zero_grad()
                loss = ((model(phase_tokens) - phase_labels) ** 2).mean()
                loss.backward()
                for name, param in model.named_parameters():
                    seen = (param.grad + weight_decay * param).abs()
                    smallest[name] = seen if smallest[name] is None else torch.minimum(smallest[name], seen)
                optimizer.step()
        for name, value in smallest.items():
            out[f"{tag}.min_grad.{name}"] = value
        for name, param in model.named_parameters():
            out[f"{tag}.{name}"] = param

    save_safetensors(f"{folder}/reference.safetensors", out)
    print(f"torch_ref: torch {torch.__version__}, batch {tuple(tokens.shape)}, loss {out['loss'].item():.6f}")


if __name__ == "__main__":
    main()
