"""Benchmark of the embed_images stage against the bare model, measured in one run.

Prints, for the tiny model, the embedded world's CLIP (the default ``backbone.model`` at its
``backbone.precision``) and ViT-B-32 (random weights), batch 64, on this machine's CPU:

* bare forward throughput on ready tensors (images/s);
* the ``embed_images`` stage's end-to-end throughput with real JPEG decoding,
  run as ``python -m stages.embed_images`` in a scratch project (images/s);
* their ratio (target: end-to-end >= 0.8 x bare forward);
* the stage's peak RSS for 1,000 and for 8,000 images (it must not grow with N).

A stage run on images and a model already run in this invocation is not repeated: the tiny
model's row and the 1,000-image RSS are the same stage run.

Usage: python bench/embed_images.py [--workers 2] [--n-vit 1000] [--out bench/out]
       [--n-tiny 1000] [--tiny-size 64] [--tiny-batches 40] [--vit-batches 4] [--rss-images 1000,8000]
       [--test-images 64] [--batch 64] [--threads auto]
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

from sparse_cbm_app.cli.pipeline import stage_command  # noqa: E402
from sparse_cbm.clip.backbone import TINY_MODEL, load_backbone  # noqa: E402
from sparse_cbm.datasets.shapes import render  # noqa: E402
from sparse_cbm.datasets.shapes_world import ATTRIBUTE_VALUES, SIZES  # noqa: E402
from sparse_cbm_app.params import Params, default_params, deep_merge  # noqa: E402

BATCH = 64
# a tiny run for the unit tier (tests/unit/test_bench.py); {tmp} is a scratch folder. One stage run
# (the RSS sizes are the tiny row's), no ViT-B-32.
SMOKE_ARGS = ["--workers", "0", "--n-vit", "0", "--n-world", "0", "--n-tiny", "16", "--tiny-size", "32", "--tiny-batches", "1",
              "--rss-images", "16,16", "--test-images", "4", "--batch", "8", "--threads", "1", "--out", "{tmp}"]


def make_images(root: Path, n: int, size: tuple[int, int], seed: int = 0, test: int = 64) -> Path:
    """n JPEG files (train) plus ``test`` (test) in class folders, drawn procedurally."""
    if root.exists():
        return root
    tmp = root.with_suffix(".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    rng = np.random.default_rng(seed)
    for split, count in (("train", n), ("test", test)):
        for i in range(count):
            attrs = {k: v[int(rng.integers(len(v)))] for k, v in ATTRIBUTE_VALUES.items()}
            attrs.update(size=list(SIZES)[i % 2], x=0.5, y=0.5)
            img = render(attrs, max(size), rng).resize(size)
            path = tmp / split / str(attrs["shape"]) / f"{i:05d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            img.save(path, quality=90)
    tmp.rename(root)
    return root


def bare_forward(model: str, batches: int, batch: int = BATCH, precision: str = "auto") -> float:
    torch.manual_seed(0)
    bb = load_backbone(model, "none", device="cpu", precision=precision)
    x = torch.randn(batch, *bb.blank_input.shape)
    bb.encode_images(x)  # warm-up
    start = time.perf_counter()
    for _ in range(batches):
        bb.encode_images(x)
    return batch * batches / (time.perf_counter() - start)


def run_stage(project: Path, images: Path, model: str, workers: int, batch: int = BATCH,
              threads: str | None = None, precision: str = "auto") -> tuple[float, float]:
    """Run the real stage in a scratch project; return (images/s over all splits, peak RSS in MiB).
    ``threads``: the stage's param ``threads`` (None: the default, the cores it may use)."""
    shutil.rmtree(project, ignore_errors=True)
    project.mkdir(parents=True)
    params = deep_merge(default_params(), {
        "dataset": {"name": "imagefolder", "root": str(images), "val_fraction": 0.1},
        "backbone": {"model": model, "pretrained": "none", "device": "cpu", "batch_size": batch,
                     "num_workers": workers, "precision": precision}})
    if threads is not None:
        params["threads"] = threads
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    (project / "stages").symlink_to(REPO / "stages")
    args = stage_command("embed_images", REPO)[1:]  # -m stages.embed_images --out ... (dvc.yaml's paths)
    probe = (f"import resource, subprocess, sys; p = subprocess.run([sys.executable, *{args!r}]); "
             "print('MAXRSS', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
             "sys.exit(p.returncode)")
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=project, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    timings = re.findall(r"(train|val|test)(?: \([^)]*\))?: (\d+) images in ([\d.]+) s \(([\d.]+|nan) img/s\)", proc.stderr)
    if not timings:
        raise SystemExit(f"the stage logged no split timings:\n{proc.stderr[-3000:]}")
    n = sum(int(t[1]) for t in timings)
    # a split's seconds from its rate: the log gives seconds to 0.1 s, 0.0 for a small split
    seconds = sum(int(t[1]) / float(t[3]) if float(t[3]) > 0 else float(t[2]) for t in timings)
    rss_kib = int(re.search(r"MAXRSS (\d+)", proc.stderr).group(1))
    return n / seconds, rss_kib / 1024


def sizes(text: str) -> tuple[int, int]:
    """``64`` or ``320x240`` -> (width, height)."""
    w, _, h = text.partition("x")
    return int(w), int(h or w)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--n-vit", type=int, default=1000, help="JPEGs for ViT-B-32's row (0: no ViT-B-32 row)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    parser.add_argument("--n-tiny", type=int, default=1000, help="JPEGs for the tiny model's row")
    parser.add_argument("--n-world", type=int, default=1000, help="64 px JPEGs for the world CLIP's row (0: none)")
    parser.add_argument("--tiny-size", type=sizes, default=(64, 64), help="the tiny row's JPEG size, W or WxH")
    parser.add_argument("--tiny-batches", type=int, default=40, help="batches timed in the tiny bare forward")
    parser.add_argument("--vit-batches", type=int, default=4, help="batches timed in ViT-B-32's bare forward")
    parser.add_argument("--rss-images", default="1000,8000", help="the two image counts of the RSS line")
    parser.add_argument("--test-images", type=int, default=64, help="JPEGs in the test split")
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--threads", help="the stage's param threads (default: its default, the usable cores)")
    args = parser.parse_args(argv)
    out = args.out
    small, large = (int(n) for n in args.rss_images.split(","))
    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"batch {args.batch}, DataLoader workers {args.workers}", flush=True)

    runs = {}

    def stage(images: Path, model: str, precision: str = "auto") -> tuple[float, float]:
        key = (images, model, precision)
        if key not in runs:
            runs[key] = run_stage(out / "project", images, model, args.workers, args.batch, args.threads, precision)
        return runs[key]

    configs = [(TINY_MODEL, args.n_tiny, args.tiny_size, args.tiny_batches, "auto")]
    if args.n_world:
        world = Params().backbone
        configs.append((world.model, args.n_world, (64, 64), args.tiny_batches, world.precision))
    if args.n_vit:
        configs.append(("ViT-B-32", args.n_vit, (320, 240), args.vit_batches, "auto"))
    rows = []
    for model, n, size, batches, precision in configs:
        images = make_images(out / f"images_{n}_{size[0]}x{size[1]}", n, size, test=args.test_images)
        bare = bare_forward(model, batches, args.batch, precision)
        e2e, rss = stage(images, model, precision)
        rows.append((model, n, f"{size[0]}x{size[1]}", bare, e2e, e2e / bare, rss))
        print(f"{model:>16} ({precision}): bare forward {bare:9.1f} img/s | stage end-to-end {e2e:9.1f} img/s "
              f"({n} JPEGs {size[0]}x{size[1]}) | ratio {e2e / bare:.2f} (target >= 0.8) | peak RSS {rss:.0f} MiB",
              flush=True)

    rss = {}
    for n in (small, large):
        images = make_images(out / f"images_{n}_{args.tiny_size[0]}x{args.tiny_size[1]}", n, args.tiny_size,
                             test=args.test_images)
        _, rss[n] = stage(images, TINY_MODEL)
    print(f"peak RSS of the stage ({TINY_MODEL}): {rss[small]:.0f} MiB for {small:,} images, "
          f"{rss[large]:.0f} MiB for {large:,} images (ratio {rss[large] / rss[small]:.2f}; flat = bounded by the "
          f"batch)")


if __name__ == "__main__":
    main()
