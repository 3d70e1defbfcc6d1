"""Benchmark of the embed_images stage against the bare model, measured in one run.

Prints, for the tiny model and for ViT-B-32 (random weights), batch 64, on this
machine's CPU:

* bare forward throughput on ready tensors (images/s);
* the ``embed_images`` stage's end-to-end throughput with real JPEG decoding,
  run as ``python -m stages.embed_images`` in a scratch project (images/s);
* their ratio (target: end-to-end >= 0.8 x bare forward);
* the stage's peak RSS for 1,000 and for 8,000 images (it must not grow with N).

Usage: python bench/embed_images.py [--workers 2] [--n-vit 1000] [--out bench/out]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sparse_cbm.clip.backbone import TINY_MODEL, load_backbone  # noqa: E402
from sparse_cbm.datasets.shapes import ATTRIBUTE_VALUES, SIZES, render  # noqa: E402
from sparse_cbm.params import default_params, deep_merge  # noqa: E402

BATCH = 64


def make_images(root: Path, n: int, size: tuple[int, int], seed: int = 0) -> Path:
    """n JPEG files (train) plus 64 (test) in class folders, drawn procedurally."""
    if root.exists():
        return root
    tmp = root.with_suffix(".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    rng = np.random.default_rng(seed)
    for split, count in (("train", n), ("test", 64)):
        for i in range(count):
            attrs = {k: v[int(rng.integers(len(v)))] for k, v in ATTRIBUTE_VALUES.items()}
            attrs.update(size=list(SIZES)[i % 2], x=0.5, y=0.5)
            img = render(attrs, max(size), rng).resize(size)
            path = tmp / split / str(attrs["shape"]) / f"{i:05d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            img.save(path, quality=90)
    tmp.rename(root)
    return root


def bare_forward(model: str, batches: int) -> float:
    torch.manual_seed(0)
    bb = load_backbone(model, "none", device="cpu")
    size = bb.model.visual.image_size
    x = torch.randn(BATCH, 3, *size)
    bb.encode_images(x)  # warm-up
    start = time.perf_counter()
    for _ in range(batches):
        bb.encode_images(x)
    return BATCH * batches / (time.perf_counter() - start)


def run_stage(project: Path, images: Path, model: str, workers: int) -> tuple[float, float]:
    """Run the real stage in a scratch project; return (images/s over all splits, peak RSS in MiB)."""
    shutil.rmtree(project, ignore_errors=True)
    project.mkdir(parents=True)
    params = deep_merge(default_params(), {
        "dataset": {"name": "imagefolder", "root": str(images), "val_fraction": 0.1},
        "backbone": {"model": model, "pretrained": "none", "device": "cpu", "batch_size": BATCH,
                     "num_workers": workers}})
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    (project / "stages").symlink_to(REPO / "stages")
    probe = ("import resource, subprocess, sys; p = subprocess.run([sys.executable, '-m', 'stages.embed_images']); "
             "print('MAXRSS', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
             "sys.exit(p.returncode)")
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=project, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    timings = re.findall(r"(train|val|test): (\d+) images in ([\d.]+) s", proc.stderr)
    n = sum(int(t[1]) for t in timings)
    seconds = sum(float(t[2]) for t in timings)
    rss_kib = int(re.search(r"MAXRSS (\d+)", proc.stderr).group(1))
    return n / seconds, rss_kib / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--n-vit", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    args = parser.parse_args()
    out = args.out
    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"batch {BATCH}, DataLoader workers {args.workers}", flush=True)

    rows = []
    for model, n, size, batches in ((TINY_MODEL, 1000, (64, 64), 40), ("ViT-B-32", args.n_vit, (320, 240), 4)):
        images = make_images(out / f"images_{n}_{size[0]}x{size[1]}", n, size)
        bare = bare_forward(model, batches)
        e2e, rss = run_stage(out / "project", images, model, args.workers)
        rows.append((model, n, f"{size[0]}x{size[1]}", bare, e2e, e2e / bare, rss))
        print(f"{model:>16}: bare forward {bare:9.1f} img/s | stage end-to-end {e2e:9.1f} img/s "
              f"({n} JPEGs {size[0]}x{size[1]}) | ratio {e2e / bare:.2f} (target >= 0.8) | peak RSS {rss:.0f} MiB",
              flush=True)

    rss = {}
    for n in (1000, 8000):
        images = make_images(out / f"images_{n}_64x64", n, (64, 64))
        _, rss[n] = run_stage(out / "project", images, TINY_MODEL, args.workers)
    print(f"peak RSS of the stage ({TINY_MODEL}): {rss[1000]:.0f} MiB for 1,000 images, "
          f"{rss[8000]:.0f} MiB for 8,000 images (ratio {rss[8000] / rss[1000]:.2f}; flat = bounded by the batch)")


if __name__ == "__main__":
    main()
