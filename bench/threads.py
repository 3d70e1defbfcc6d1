"""Benchmark: two processes sharing this machine's cores, under each thread setting, measured in one run.

The workload is the compare stage's inner loop at the default world's size: glm-saga's sparse path
(``fit_sparse_path``) on a planted world of ``--rows`` train rows, ``--concepts`` concepts and
``--classes`` classes, batch 256: thousands of small products, each an OpenMP parallel region.
Each setting runs the workload once alone, then twice at the same time (two child processes), and
prints the path's seconds (process start and imports excluded) and the ratio ``slower of the two /
alone``. Sharing the cores fairly costs 2x;
a setting whose threads spin-wait or outnumber the cores costs more.

Settings (``--settings``, comma-separated):

* ``torch-default``: what a process gets without this project's settings (PyTorch's pool as large as
  the machine, OpenMP's default wait policy);
* ``stage``: what a stage gets (``sparse_cbm.runtime.cpus``: threads from the usable cores, idle
  OpenMP threads sleep);
* ``spin``: threads from the usable cores, OpenMP's default (spinning) wait policy;
* ``one-thread``: one thread per process.

Usage: python bench/threads.py [--rows 5400] [--concepts 112] [--classes 20] [--epochs 5] [--settings ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SETTINGS = {
    "torch-default": ({}, None),
    "stage": ("quiet", "auto"),
    "spin": ({}, "auto"),
    "one-thread": ("quiet", 1),
}
SMOKE_ARGS = ["--rows", "300", "--concepts", "12", "--classes", "3", "--epochs", "1", "--points", "2", "--settings", "stage"]


def workload(args: argparse.Namespace, threads) -> float:
    """One sparse path; returns its seconds. Runs in a child process (``--child``)."""
    import torch

    from sparse_cbm.bottleneck.model import ConceptBottleneck
    from sparse_cbm.bottleneck.sparse_layer import bottleneck_activations, fit_sparse_path
    from sparse_cbm.runtime.cpus import use_threads
    from sparse_cbm.simulate import planted_world

    if threads is not None:
        use_threads(threads)
    world = planted_world(num_classes=args.classes, num_concepts=args.concepts, concepts_per_class=4, dim=64, seed=0)
    model = ConceptBottleneck(world.concept_text, args.classes, 100.0)
    with torch.no_grad():
        model.cbl.weight.copy_(torch.eye(args.concepts))
    train, val = world.split(args.rows, 1), world.split(max(args.rows // 9, 50), 2)
    started = time.perf_counter()
    fit_sparse_path(bottleneck_activations(model), train[:2], val[:2], args.classes, seed=0,
                    path_points=args.points, max_epochs=args.epochs, tol=0.0)
    return time.perf_counter() - started


def child_env(setting: str) -> dict:
    from sparse_cbm.runtime.cpus import QUIET_OPENMP

    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "KMP_BLOCKTIME", "OMP_NUM_THREADS")}
    if SETTINGS[setting][0] == "quiet":
        env.update(QUIET_OPENMP)
    return env


def run_children(args: argparse.Namespace, setting: str, count: int) -> tuple:
    """``count`` children started together; (wall seconds of the slowest, each child's own seconds)."""
    cmd = [sys.executable, __file__, "--child", setting, *args.forward]
    started = time.perf_counter()
    procs = [subprocess.Popen(cmd, env=child_env(setting), stdout=subprocess.PIPE, text=True) for _ in range(count)]
    outs = [p.communicate()[0] for p in procs]
    wall = time.perf_counter() - started
    if any(p.returncode for p in procs):
        raise SystemExit(f"a child failed under {setting}: {outs}")
    return wall, [json.loads(o.strip().splitlines()[-1])["seconds"] for o in outs]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=5400)
    parser.add_argument("--concepts", type=int, default=112)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=5, help="glm-saga epochs per path point (tol 0: all run)")
    parser.add_argument("--points", type=int, default=4, help="path points")
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--child", choices=list(SETTINGS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.forward = ["--rows", str(args.rows), "--concepts", str(args.concepts), "--classes", str(args.classes),
                    "--epochs", str(args.epochs), "--points", str(args.points)]
    if args.child:
        seconds = workload(args, SETTINGS[args.child][1])
        print(json.dumps({"seconds": seconds}))
        return {"seconds": seconds}
    from sparse_cbm.runtime.cpus import cgroup_quota, usable_cores

    print(f"machine: os.cpu_count() {os.cpu_count()}, usable cores {usable_cores()} (cgroup quota "
          f"{cgroup_quota()}); workload: sparse path, {args.rows} rows x {args.concepts} concepts x "
          f"{args.classes} classes, {args.points} points x {args.epochs} epochs")
    results = {}
    for setting in args.settings.split(","):
        if setting not in SETTINGS:
            raise SystemExit(f"unknown setting {setting!r}; choose from {', '.join(SETTINGS)}")
        _, (alone,) = run_children(args, setting, 1)
        _, each = run_children(args, setting, 2)
        together = max(each)
        results[setting] = {"alone_s": alone, "together_s": together, "ratio": together / alone}
        print(f"{setting:14s} alone {alone:7.2f} s   two at once {each[0]:7.2f} s and {each[1]:7.2f} s   "
              f"ratio {together / alone:5.2f} (fair sharing: 2.00)")
    return results


if __name__ == "__main__":
    main()
