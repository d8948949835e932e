"""PyTorch baseline for bench/bench_train.c: training and inference examples/s of the published
model (d 64, 11 layers, 2 heads, FFN 256) on the same batch shape, 2 threads by default.

usage: /usr/bin/python3 bench/torch_bench.py BATCH REPEATS [THREADS]
prints: torch_train_examples_per_s MEDIAN and torch_infer_examples_per_s MEDIAN
"""
import statistics
import sys
import time

import torch

sys.path.insert(0, "tests")
from torch_ref import TransformerModel  # noqa: E402  (the reference architecture)


def random_batch(batch, generator):
    # pretrain-like shapes: 3..15 edges, the rest padding, the target pair last
    tokens = torch.zeros(batch, 16, 2, dtype=torch.long)
    for b in range(batch):
        edges = int(torch.randint(3, 16, (1,), generator=generator))
        tokens[b, :edges] = torch.randint(1, 16, (edges, 2), generator=generator)
        tokens[b, 15] = torch.tensor([2, 16])
    return tokens, torch.rand(batch, generator=generator) * 15


def main():
    batch, repeats = int(sys.argv[1]), int(sys.argv[2])
    torch.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else 2)
    generator = torch.Generator().manual_seed(0)
    model = TransformerModel(17, 64, 2, 11, 256)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    tokens, labels = random_batch(batch, generator)
    train, infer = [], []
    for _ in range(repeats + 1):  # the first round warms up
        start = time.perf_counter()
        optimizer.zero_grad()
        loss = ((model(tokens) - labels) ** 2).mean()
        loss.backward()
        optimizer.step()
        train.append(batch / (time.perf_counter() - start))
        with torch.no_grad():
            model.eval()
            start = time.perf_counter()
            model(tokens)
            infer.append(batch / (time.perf_counter() - start))
            model.train()
    print(f"torch_train_examples_per_s {statistics.median(train[1:]):.1f}")
    print(f"torch_infer_examples_per_s {statistics.median(infer[1:]):.1f}")


if __name__ == "__main__":
    main()
