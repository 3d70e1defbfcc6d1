"""What the benchmark scripts share: the machine's own float32 matmul peak, the yardstick their
ratios are measured against, the best-of-n timer, and a size's run in a child process."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

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


# Linux gives a process started from this one this one's resident size as the floor of its peak RSS
# (the high-water mark is copied at fork and kept across exec), so a child that reports its own peak
# is started by a small launcher, whose resident size is all it inherits.
LAUNCHER = "import subprocess, sys; sys.exit(subprocess.run(sys.argv[1:]).returncode)"


def child_result(script: str, argv: list, run, in_process: bool = False) -> dict:
    """The dict ``python script --child *argv`` prints as its last line: a fresh process, whose peak
    RSS is the size's own. With ``in_process``, ``run()`` in this process instead (smoke runs, which
    skip the child's imports; their RSS figures are then this process's and mean nothing)."""
    if in_process:
        return json.loads(json.dumps(run()))
    proc = subprocess.run([sys.executable, "-c", LAUNCHER, sys.executable, str(script), "--child", *argv],
                          capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{Path(script).name} --child {' '.join(argv)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def add_scaling_args(parser: argparse.ArgumentParser) -> None:
    """The options every script that measures growth with size shares: the matmul peak's size, and
    where each size runs (a child process, or this one for smoke runs)."""
    parser.add_argument("--peak-n", type=int, default=2048, help="side of the matmul that measures the peak")
    parser.add_argument("--peak-repeats", type=int, default=10)
    parser.add_argument("--in-process", action="store_true",
                        help="run each size in this process, not a child (smoke runs: the RSS figures mean nothing)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)


def prompting_clip(params):
    """The params section (``model``, ``pretrained``) of SALF-CBM's prompting CLIP: ``spatial.prompts``, or the
    pipeline's ``backbone`` when it is null (as ``stages.common.prompting_backbone`` resolves it)."""
    prompts = params.spatial.prompts
    return params.backbone if prompts.pretrained is None else prompts
