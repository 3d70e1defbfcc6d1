"""Benchmark of ``embed_prompted`` sharded over worker processes (torchrun, gloo), measured in one run.

The real stage (``python -m stages.embed_prompted``) on the default world and its prompting CLIP, in a
scratch project under a temporary folder, with ``threads: 1`` in every worker:

* 1 worker, then ``--processes`` workers (the param ``processes``; the stage launches them), on the same
  ``--images`` train images: the embedding throughput (images / the slowest worker's embedding time, from
  the workers' own log lines) and the stage's wall time, start-up included;
* their ratio (target on our 2 cores: 2 workers >= 1.6 x 1 worker);
* each worker's peak RSS at ``--images`` and at twice as many (flat: bounded by the batch, not by N);
* whether the caches are byte-identical (every file but the manifest's ``run`` record).

Usage: python bench/sharded.py [--images 128] [--processes 2]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sparse_cbm.runtime.cpus import usable_cores  # noqa: E402

SMOKE_ARGS = ["--images", "4", "--grid", "2", "--no-scaling"]  # a tiny run for the unit tier (tests/unit/test_bench.py)

# a worker's line: its images, its seconds (one decimal) and its rate (two); the time is taken as images / rate,
# which stays exact when a tiny smoke run logs "0.0 s"
EMBEDDED = re.compile(r"prompted copies train(?: \(worker (\d+)\))?: (\d+) images in [\d.]+ s \(([\d.]+) img/s\)")
DONE = re.compile(r"stage embed_prompted: done in [\d.]+ s, peak RSS (\d+) MiB")


def project(root: Path, processes: int, images: int, grid: int | None) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params.update(processes=processes, threads=1)
    params["spatial"].update(train_images=images, test_images=1)
    if grid:
        params["spatial"]["grid"] = grid
    root.mkdir(parents=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    (root / "data").mkdir()
    (root / "data" / "pretrained").symlink_to(REPO / "data" / "pretrained")
    return root


def run(root: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "DVC_NO_ANALYTICS": "1"}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "stages.embed_prompted", "--out", "out", "--scratch", "scratch"],
                          cwd=root, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode:
        sys.exit(f"embed_prompted failed in {root}:\n{proc.stderr[-3000:]}")
    shards = [(int(m.group(2)), int(m.group(2)) / float(m.group(3))) for m in EMBEDDED.finditer(proc.stderr)]
    rss = [int(m.group(1)) for m in DONE.finditer(proc.stderr)]
    images = sum(n for n, _ in shards)
    slowest = max(t for _, t in shards)
    return {"images": images, "rate": images / slowest, "wall": wall, "rss": rss}


def cache_files(folder: Path) -> dict:
    """Every file of a cache folder by its path, each manifest without its ``run`` record (how many workers
    made it, on which devices: the one thing that differs with their number), which comes under
    ``<path>:run``. Two caches made by different numbers of workers have equal entries but the runs."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            if path.name == "manifest.json":
                manifest = json.loads(data)
                out[str(path.relative_to(folder)) + ":run"] = manifest.pop("run")
                data = json.dumps(manifest, sort_keys=True).encode()
            out[str(path.relative_to(folder))] = data
    return out


def same_but_runs(a: dict, b: dict) -> bool:
    return {k: v for k, v in a.items() if not k.endswith(":run")} == {k: v for k, v in b.items()
                                                                     if not k.endswith(":run")}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=128, help="train images whose ringed copies are embedded")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--grid", type=int, default=None, help="the prompt grid (default: params.yaml's)")
    ap.add_argument("--no-scaling", action="store_true", help="skip the run at twice the images (RSS flatness)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-sharded-") as tmp:
        tmp = Path(tmp)
        one = run(project(tmp / "one", 1, args.images, args.grid))
        many = run(project(tmp / "many", args.processes, args.images, args.grid))
        same = same_but_runs(cache_files(tmp / "one" / "out"), cache_files(tmp / "many" / "out"))
        grid = args.grid or yaml.safe_load((REPO / "params.yaml").read_text())["spatial"]["grid"]
        print(f"machine: {usable_cores()} usable cores, torch {torch.__version__}; embed_prompted on the default "
              f"prompting CLIP, grid {grid} ({grid * grid} copies an image), threads 1 a worker")
        for name, r in ((" 1 worker ", one), (f"{args.processes:2d} workers", many)):
            print(f"{name}: {r['images']} images, embedding {r['rate']:.2f} img/s | stage wall {r['wall']:.1f} s "
                  f"({r['images'] / r['wall']:.2f} img/s with start-up) | peak RSS a worker "
                  f"{', '.join(map(str, r['rss'][:args.processes]))} MiB")
        ratio = many["rate"] / one["rate"]
        verdict = "met" if ratio >= 0.8 * args.processes else "missed"
        print(f"ratio {args.processes} workers / 1 (embedding throughput): {ratio:.2f} (target >= "
              f"{0.8 * args.processes:.1f}): {verdict} | with start-up: {one['wall'] / many['wall']:.2f} | "
              f"caches byte-identical: {same}")
        if not args.no_scaling:
            double = run(project(tmp / "double", args.processes, 2 * args.images, args.grid))
            print(f"peak RSS a worker at {args.images} and {2 * args.images} images: "
                  f"{max(many['rss'][:args.processes])} and {max(double['rss'][:args.processes])} MiB "
                  f"(ratio {max(double['rss'][:args.processes]) / max(many['rss'][:args.processes]):.2f}; "
                  f"flat = bounded by the batch)")


if __name__ == "__main__":
    main()
