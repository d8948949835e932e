"""PyTorch baseline for bench/bench_train.c: training and inference examples/s of the published
model (d 64, 11 layers, 2 heads, FFN 256) on real pretrain examples (drawn by bench/python_data.py,
the sampler of SPEC §2 in Python), one whole batch per step as the original code ran it, 2 threads
by default. One 512-example round warms up first.

usage: /usr/bin/python3 bench/torch_bench.py BATCH REPEATS [THREADS]
prints: torch_train_examples_per_s MEDIAN and torch_infer_examples_per_s MEDIAN
"""
import random
import statistics
import sys
import time

import torch

sys.path.insert(0, "tests")
sys.path.insert(0, "bench")
from torch_ref import TransformerModel  # noqa: E402  (the reference architecture)
from python_data import pretrain_example  # noqa: E402  (the pretrain sampler)


def pretrain_batch(batch):
    examples = [pretrain_example() for _ in range(batch)]
    tokens = torch.tensor([tokens for tokens, _ in examples], dtype=torch.long)
    return tokens, torch.tensor([float(label) for _, label in examples])


def main():
    batch, repeats = int(sys.argv[1]), int(sys.argv[2])
    torch.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else 2)
    random.seed(0)
    torch.manual_seed(0)
    model = TransformerModel(17, 64, 2, 11, 256)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    warm_up, timed = pretrain_batch(512), pretrain_batch(batch)
    train, infer = [], []
    for round_index in range(repeats + 1):  # round 0 warms up
        tokens, labels = timed if round_index else warm_up
        start = time.perf_counter()
        optimizer.zero_grad()
        loss = ((model(tokens) - labels) ** 2).mean()
        loss.backward()
        optimizer.step()
        train.append(len(tokens) / (time.perf_counter() - start))
        with torch.no_grad():
            model.eval()
            start = time.perf_counter()
            model(tokens)
            infer.append(len(tokens) / (time.perf_counter() - start))
            model.train()
    print(f"torch_train_examples_per_s {statistics.median(train[1:]):.1f}")
    print(f"torch_infer_examples_per_s {statistics.median(infer[1:]):.1f}")


if __name__ == "__main__":
    main()
