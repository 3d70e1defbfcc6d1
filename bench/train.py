"""Benchmark of bottleneck training at ImageNet's shape, measured in one run.

|D| = 4,751 concepts, |C| = 1,000 classes, d = 768, batch 256, simulated image
embeddings in a float16 .npy of at least 100,000 rows, read as the train stage reads
them (``NpyRows``). Prints:

* samples/s of ``train_bottleneck`` (Gumbel objective, Adam, CE kept off the CBL);
* the achieved GFLOP/s (matrix products of forward and backward: psi, CBL, FC) as a
  fraction of this machine's torch float32 matmul peak, measured in the same run
  (target >= 0.5);
* peak RSS of a training process for N and for 2N rows (it must not grow with N);
* for contrast, a step the way the authors' released code trains (SparseCBM's
  ``BottleneckTrainer``): a CLIP forward over the batch's images and over all |D| concept
  texts, every step, before the same CBL and FC. Measured with open_clip's ViT-B-32
  (random weights: the time does not depend on them) on the batch's images and on
  ``--released-texts`` concept texts, the text part scaled linearly to |D| (each text is
  encoded on its own, so its cost is linear in their number).

Usage: python bench/train.py [--rows 100000] [--steps 60] [--released-texts 256] [--out bench/out]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import matmul_peak  # noqa: E402

from sparse_cbm.storage.rows import NpyRows  # noqa: E402
from sparse_cbm.simulate import planted_world, write_planted_npy  # noqa: E402
from sparse_cbm.bottleneck.config import TrainParams  # noqa: E402
from sparse_cbm.bottleneck.train import evaluate_split, train_bottleneck  # noqa: E402

D, C, DIM, BATCH = 4751, 1000, 768, 256


def step_flops(batch: int, with_ce_to_cbl: bool = False) -> float:
    """Multiply-adds x 2 of one training step's matrix products."""
    psi = 2 * batch * DIM * D  # normalised images @ concepts^T (no gradient)
    cbl = 2 * batch * D * D * 2  # forward + gradient of W_CBL (psi needs no gradient)
    fc = 2 * batch * D * C * (3 if with_ce_to_cbl else 2)  # forward + grad W_FC (+ grad S)
    return float(psi + cbl + fc)


def world_files(out: Path, rows: int):
    world = planted_world(num_classes=C, num_concepts=D, concepts_per_class=4, dim=DIM, seed=0)
    path = out / f"train_{rows}.npy"
    labels_path = out / f"train_{rows}_labels.npy"
    if not path.exists():
        labels = write_planted_npy(path, world, rows, seed=1)
        np.save(labels_path, labels)
    val = out / "val.npy"
    if not val.exists():
        np.save(out / "val_labels.npy", write_planted_npy(val, world, 2048, seed=2))
    return world, path, labels_path


def train_run(out: Path, rows: int, steps: int) -> dict:
    world, path, labels_path = world_files(out, rows)
    params = TrainParams(epochs=1, batch_size=BATCH)
    train = (NpyRows(path), np.load(labels_path))
    val = (NpyRows(out / "val.npy"), np.load(out / "val_labels.npy"))
    t0 = time.perf_counter()
    result = train_bottleneck(world.concept_text, C, 100.0, train, val, loss="gumbel", params=params, seed=0,
                              max_steps=steps)
    elapsed = time.perf_counter() - t0
    # the loop alone: take out the validation pass at the end of the epoch
    t1 = time.perf_counter()
    evaluate_split(result.model, *val)
    val_s = time.perf_counter() - t1
    return {"rows": rows, "steps": len(result.steps), "seconds": elapsed - val_s,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


@torch.inference_mode()
def released_step_seconds(texts: int, batch: int = BATCH) -> dict:
    """Seconds of the CLIP forward the released code runs every step: ViT-B-32 on ``batch`` images of
    224 px and on ``texts`` concept texts (the text part is then scaled to |D|)."""
    import open_clip

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32", pretrained=None).eval()
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    images = torch.randn(batch, 3, 224, 224)
    tokens = tokenizer([f"concept number {i}" for i in range(texts)])
    model.encode_image(images[:8]), model.encode_text(tokens[:8])  # warm-up
    t0 = time.perf_counter()
    model.encode_image(images)
    image_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    model.encode_text(tokens)
    text_s = time.perf_counter() - t0
    return {"image_s": image_s, "text_s": text_s * D / texts, "texts_measured": texts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--released-texts", type=int, default=256,
                        help="concept texts encoded to time the released code's step (scaled to |D|)")
    parser.add_argument("--out", default=str(REPO / "bench" / "out" / "train"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.child:
        print(json.dumps(train_run(out, args.rows, args.steps)))
        return

    runs = []
    for rows in (args.rows, 2 * args.rows):
        world_files(out, rows)
        proc = subprocess.run([sys.executable, __file__, "--child", "--rows", str(rows), "--steps", str(args.steps),
                               "--out", str(out)], capture_output=True, text=True, check=True)
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    peak = matmul_peak()
    first = runs[0]
    samples = first["steps"] * BATCH / first["seconds"]
    achieved = step_flops(BATCH) * first["steps"] / first["seconds"] / 1e9
    print(f"|D|={D} |C|={C} d={DIM} batch {BATCH}, gumbel, {torch.get_num_threads()} threads, "
          f"{first['rows']:,} rows in a float16 .npy")
    print(f"train: {samples:8.1f} samples/s | {achieved:6.1f} GFLOP/s vs matmul peak {peak:6.1f} GFLOP/s: "
          f"ratio {achieved / peak:.2f} (target >= 0.5)")
    print(f"peak RSS: {runs[0]['peak_rss_mib']:.0f} MiB for {runs[0]['rows']:,} rows, {runs[1]['peak_rss_mib']:.0f} MiB "
          f"for {runs[1]['rows']:,} rows (ratio {runs[1]['peak_rss_mib'] / runs[0]['peak_rss_mib']:.2f}; "
          f"flat = bounded by the batch)")
    released = released_step_seconds(args.released_texts)
    ours = first["seconds"] / first["steps"]
    clip_s = released["image_s"] + released["text_s"]
    print(f"released code's step (ViT-B-32 forward every step): {clip_s + ours:8.2f} s = image forward "
          f"{released['image_s']:.2f} s for {BATCH} images + text forward {released['text_s']:.2f} s for {D:,} "
          f"concepts (measured on {released['texts_measured']}, scaled) + the bottleneck {ours:.3f} s | ours, on "
          f"cached embeddings: {ours:.3f} s a step, {(clip_s + ours) / ours:,.0f}x less")


if __name__ == "__main__":
    main()
