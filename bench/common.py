"""What the benchmark scripts share: the machine's own float32 matmul peak, the yardstick their
ratios are measured against, and the best-of-n timer."""

from __future__ import annotations

import time

import torch


def matmul_peak(n: int = 2048, repeats: int = 10) -> float:
    """GFLOP/s of float32 (n x n) @ (n x n) on this machine, best of ``repeats``."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def best_of(fn, repeats: int) -> float:
    """Seconds of ``fn()``, the best of ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)
