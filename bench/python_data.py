"""Python baseline for bench/bench_data.c: the pretrain sampler of SPEC §2 written the way a Python
experiment draws its data (random module, adjacency sets, BFS over a deque), encoded as token pairs.

usage: python3 bench/python_data.py EXAMPLES [REPEATS]
prints: python_pretrain_examples_per_s MEDIAN
"""
import random
import statistics
import sys
import time
from collections import deque

MIN_V, MAX_V, SEQ, TARGET = 3, 15, 16, 16


def random_graph(n):
    ids = [random.randint(1, n) for _ in range(2 * n)]
    edges, adjacency = [], {v: set() for v in range(1, n + 1)}
    for u, v in zip(ids[0::2], ids[1::2]):
        if u == v:
            continue
        edges.append((min(u, v), max(u, v)))
        adjacency[u].add(v)
        adjacency[v].add(u)
    return edges, adjacency


def distance(adjacency, source, target):
    seen, queue = {source: 0}, deque([source])
    while queue:
        u = queue.popleft()
        if u == target:
            return seen[u]
        for v in sorted(adjacency[u]):
            if v not in seen:
                seen[v] = seen[u] + 1
                queue.append(v)
    return MAX_V


def pretrain_example():
    n = random.randint(MIN_V, MAX_V)
    while True:
        edges, adjacency = random_graph(n)
        d = distance(adjacency, 1, 2)
        if d == MAX_V:
            accept = 1 / 15
        elif d < 6:
            accept = 1 / (2 * (6 - d))
        else:
            accept = 1.0
        if random.random() < accept:
            break
    tokens = [list(edge) for edge in edges[: SEQ - 1]]
    tokens += [[0, 0]] * (SEQ - 1 - len(tokens)) + [[2, TARGET]]
    return tokens, d


def main():
    count = int(sys.argv[1])
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    random.seed(1)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(count):
            pretrain_example()
        rates.append(count / (time.perf_counter() - start))
    print(f"python_pretrain_examples_per_s {statistics.median(rates):.1f}")


if __name__ == "__main__":
    main()
