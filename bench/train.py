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
       [--concepts 4751] [--classes 1000] [--dim 768] [--batch 256] [--val-rows 2048]
       [--peak-n 2048] [--peak-repeats 10] [--released-model ViT-B-32]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import add_scaling_args, child_result, matmul_peak  # noqa: E402

from sparse_cbm.storage.rows import NpyRows  # noqa: E402
from sparse_cbm.simulate import planted_world, write_planted_npy  # noqa: E402
from sparse_cbm.bottleneck.config import TrainParams  # noqa: E402
from sparse_cbm.bottleneck.train import evaluate_split, train_bottleneck  # noqa: E402

D, C, DIM, BATCH = 4751, 1000, 768, 256
DEFAULT_SHAPE, VAL_ROWS = (D, C, DIM), 2048  # the files of other shapes carry theirs in their names
# a tiny run for the unit tier (tests/unit/test_bench.py); {tmp} is a scratch folder
SMOKE_ARGS = ["--rows", "32", "--steps", "2", "--batch", "8", "--concepts", "16", "--classes", "4", "--dim", "16",
              "--val-rows", "16", "--peak-n", "64", "--peak-repeats", "1", "--released-texts", "2",
              "--released-model", "sparse-cbm-tiny", "--out", "{tmp}", "--in-process"]


def step_flops(batch: int, with_ce_to_cbl: bool = False, D: int = D, C: int = C, DIM: int = DIM) -> float:
    """Multiply-adds x 2 of one training step's matrix products."""
    psi = 2 * batch * DIM * D  # normalised images @ concepts^T (no gradient)
    cbl = 2 * batch * D * D * 2  # forward + gradient of W_CBL (psi needs no gradient)
    fc = 2 * batch * D * C * (3 if with_ce_to_cbl else 2)  # forward + grad W_FC (+ grad S)
    return float(psi + cbl + fc)


def world_files(out: Path, rows: int, D: int = D, C: int = C, DIM: int = DIM, val_rows: int = VAL_ROWS):
    """The world, its train rows and labels; its val rows and labels lie beside them (``val_paths``)."""
    world = planted_world(num_classes=C, num_concepts=D, concepts_per_class=4, dim=DIM, seed=0)
    tag = "" if (D, C, DIM) == DEFAULT_SHAPE else f"_{D}x{C}x{DIM}"
    path = out / f"train_{rows}{tag}.npy"
    labels_path = out / f"train_{rows}{tag}_labels.npy"
    if not path.exists():
        labels = write_planted_npy(path, world, rows, seed=1)
        np.save(labels_path, labels)
    val, val_labels = val_paths(out, D, C, DIM, val_rows)
    if not val.exists():
        np.save(val_labels, write_planted_npy(val, world, val_rows, seed=2))
    return world, path, labels_path


def val_paths(out: Path, D: int, C: int, DIM: int, val_rows: int) -> tuple:
    if (D, C, DIM) == DEFAULT_SHAPE and val_rows == VAL_ROWS:
        return out / "val.npy", out / "val_labels.npy"
    return out / f"val_{val_rows}_{D}x{C}x{DIM}.npy", out / f"val_{val_rows}_{D}x{C}x{DIM}_labels.npy"


def train_run(out: Path, rows: int, steps: int, D: int = D, C: int = C, DIM: int = DIM, batch: int = BATCH,
              val_rows: int = VAL_ROWS) -> dict:
    world, path, labels_path = world_files(out, rows, D, C, DIM, val_rows)
    params = TrainParams(epochs=1, batch_size=batch)
    train = (NpyRows(path), np.load(labels_path))
    val_path, val_labels = val_paths(out, D, C, DIM, val_rows)
    val = (NpyRows(val_path), np.load(val_labels))
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
def released_step_seconds(texts: int, batch: int = BATCH, D: int = D, model_name: str = "ViT-B-32") -> dict:
    """Seconds of the CLIP forward the released code runs every step: ViT-B-32 (or ``model_name``) on
    ``batch`` images of its size (224 px) and on ``texts`` concept texts (the text part is then scaled to |D|)."""
    import open_clip

    if model_name not in open_clip.list_models():
        import sparse_cbm.clip.backbone  # noqa: F401  (registers this project's model configs)
    torch.manual_seed(0)
    model = open_clip.create_model(model_name, pretrained=None).eval()
    tokenizer = open_clip.get_tokenizer(model_name)
    size = model.visual.image_size
    images = torch.randn(batch, 3, *((size, size) if isinstance(size, int) else size))
    tokens = tokenizer([f"concept number {i}" for i in range(texts)])
    model.encode_image(images[:8]), model.encode_text(tokens[:8])  # warm-up
    t0 = time.perf_counter()
    model.encode_image(images)
    image_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    model.encode_text(tokens)
    text_s = time.perf_counter() - t0
    return {"image_s": image_s, "text_s": text_s * D / texts, "texts_measured": texts}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--released-texts", type=int, default=256,
                        help="concept texts encoded to time the released code's step (scaled to |D|)")
    parser.add_argument("--out", default=str(REPO / "bench" / "out" / "train"))
    parser.add_argument("--concepts", type=int, default=D, help="|D|")
    parser.add_argument("--classes", type=int, default=C, help="|C|")
    parser.add_argument("--dim", type=int, default=DIM, help="embedding width d")
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--val-rows", type=int, default=VAL_ROWS)
    parser.add_argument("--released-model", default="ViT-B-32", help="the open_clip model of the released code's step")
    add_scaling_args(parser)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n_d, n_c, dim, batch = args.concepts, args.classes, args.dim, args.batch
    if args.child:
        print(json.dumps(train_run(out, args.rows, args.steps, n_d, n_c, dim, batch, args.val_rows)))
        return

    runs = []
    for rows in (args.rows, 2 * args.rows):
        world_files(out, rows, n_d, n_c, dim, args.val_rows)
        runs.append(child_result(__file__, ["--rows", str(rows), "--steps", str(args.steps), "--out", str(out),
                                            "--concepts", str(n_d), "--classes", str(n_c), "--dim", str(dim),
                                            "--batch", str(batch), "--val-rows", str(args.val_rows)],
                                 lambda: train_run(out, rows, args.steps, n_d, n_c, dim, batch, args.val_rows),
                                 args.in_process))
    peak = matmul_peak(args.peak_n, args.peak_repeats)
    first = runs[0]
    samples = first["steps"] * batch / first["seconds"]
    achieved = step_flops(batch, D=n_d, C=n_c, DIM=dim) * first["steps"] / first["seconds"] / 1e9
    print(f"|D|={n_d} |C|={n_c} d={dim} batch {batch}, gumbel, {torch.get_num_threads()} threads, "
          f"{first['rows']:,} rows in a float16 .npy")
    print(f"train: {samples:8.1f} samples/s | {achieved:6.1f} GFLOP/s vs matmul peak {peak:6.1f} GFLOP/s: "
          f"ratio {achieved / peak:.2f} (target >= 0.5)")
    print(f"peak RSS: {runs[0]['peak_rss_mib']:.0f} MiB for {runs[0]['rows']:,} rows, {runs[1]['peak_rss_mib']:.0f} MiB "
          f"for {runs[1]['rows']:,} rows (ratio {runs[1]['peak_rss_mib'] / runs[0]['peak_rss_mib']:.2f}; "
          f"flat = bounded by the batch)")
    released = released_step_seconds(args.released_texts, batch, n_d, args.released_model)
    ours = first["seconds"] / first["steps"]
    clip_s = released["image_s"] + released["text_s"]
    print(f"released code's step ({args.released_model} forward every step): {clip_s + ours:8.2f} s = image forward "
          f"{released['image_s']:.2f} s for {batch} images + text forward {released['text_s']:.2f} s for {n_d:,} "
          f"concepts (measured on {released['texts_measured']}, scaled) + the bottleneck {ours:.3f} s | ours, on "
          f"cached embeddings: {ours:.3f} s a step, {(clip_s + ours) / ours:,.0f}x less")


if __name__ == "__main__":
    main()
