"""How many cores this process may use, and thread pools sized to match.

``os.cpu_count()`` counts the machine's cores, not the ones a process is given: a cluster job,
a container or ``taskset`` hands out fewer, through the affinity mask or a cgroup CPU quota.
PyTorch's intra-op pool (OpenMP) and its BLAS size themselves from the machine, so a stage given
two cores of a 64-core node starts 64 threads that take turns on two, and every parallel region
waits at its barrier for a thread that is not running.

``usable_cores`` is the smaller of the affinity mask and the cgroup quota (v2 ``cpu.max``, v1
``cpu.cfs_quota_us``/``cpu.cfs_period_us``), rounded down and at least 1, as Go's automaxprocs
does. ``use_threads`` sizes PyTorch's pool from it, or from the ``threads`` param when that is
a number. ``QUIET_OPENMP`` is the environment a stage process sets before it imports torch, so
that OpenMP threads with no work sleep instead of spinning: with two pipelines on two cores a
spinning thread holds the core its sibling process needs (``bench/threads.py`` measures both).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from pathlib import Path
from typing import Iterator, Optional, Union

log = logging.getLogger(__name__)

CGROUP = Path("/sys/fs/cgroup")
THREADS_AUTO = "auto"
# Read by the OpenMP runtime when it loads (set before `import torch`): idle threads block instead of
# spin-waiting for the next parallel region. GNU OpenMP (PyTorch's on Linux) and Intel's read these.
QUIET_OPENMP = {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"}
# A loop whose steps each cost fewer FLOPs than this runs on one thread (``threads_for``): its products
# take tens of microseconds, and with idle threads asleep (QUIET_OPENMP) waking one for each parallel
# region costs more than the second core gives back. Measured on the default world's sparse path (steps
# of 256 x 112 x 20, about 8 MFLOP): 24 s on two sleeping threads, 8.3 s on one (docs/benchmarks.md#threads).
# Steps of ImageNet's shape (about 18 GFLOP) keep every thread.
SMALL_STEP_FLOPS = 5e7


def affinity_cores() -> int:
    """The cores the affinity mask allows (``os.cpu_count()`` where the OS has no mask)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def cgroup_quota(root: Path = CGROUP) -> Optional[float]:
    """The CPU quota of this process's cgroup in cores (1.5 = 150 ms per 100 ms), or None when unlimited
    or unknown. Reads cgroup v2's ``cpu.max``, else v1's ``cpu/cpu.cfs_quota_us`` and ``cpu.cfs_period_us``."""
    try:
        text = (root / "cpu.max").read_text().split()
        if text and text[0] != "max":
            return int(text[0]) / int(text[1])
        if text:
            return None
    except (OSError, ValueError, IndexError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def usable_cores(root: Path = CGROUP) -> int:
    """The cores this process may use: the affinity mask, capped by the cgroup quota (rounded down, >= 1)."""
    cores = affinity_cores()
    quota = cgroup_quota(root)
    if quota is not None:
        cores = min(cores, max(1, math.floor(quota)))
    return cores


def thread_count(threads: Union[int, str] = THREADS_AUTO, root: Path = CGROUP) -> int:
    """``threads`` as a number of threads: ``"auto"`` is ``usable_cores()``; a positive int is itself."""
    if threads == THREADS_AUTO:
        return usable_cores(root)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be 'auto' or a positive integer, got {threads!r}")
    return threads


@contextlib.contextmanager
def threads_for(step_flops: float) -> Iterator[int]:
    """While the block runs, PyTorch's pool is one thread if each step of its loop costs fewer than
    ``SMALL_STEP_FLOPS``, else as it was; yields the count. Restored after, even on an error."""
    import torch

    before = torch.get_num_threads()
    n = 1 if step_flops < SMALL_STEP_FLOPS else before
    if n != before:
        torch.set_num_threads(n)
    try:
        yield n
    finally:
        if n != before:
            torch.set_num_threads(before)


def use_threads(threads: Union[int, str] = THREADS_AUTO) -> int:
    """Size PyTorch's intra-op pool (and the BLAS and OpenMP pools it drives) for this process; returns
    the count. Call it at the start of a stage, before any parallel work. With ``auto``, the workers that
    torchrun starts on a node (``LOCAL_WORLD_SIZE``) share its usable cores."""
    import torch

    n = thread_count(threads)
    sharing = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    if threads == THREADS_AUTO and sharing > 1:
        n = max(1, n // sharing)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    log.info("threads: %d (%s; %d usable cores)", n, "param threads" if threads != THREADS_AUTO else "auto",
             usable_cores())
    return n
