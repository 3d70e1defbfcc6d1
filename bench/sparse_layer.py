"""Benchmark of the sparse final layer (glm-saga on streamed CBL activations) at ImageNet's shape.

|D| = 4,751 concepts, |C| = 1,000 classes, d = 768, batch 256, simulated image embeddings in a
float16 .npy of N and 2N rows (default N = 100,000) read with ``NpyRows``, a CBL
(``ConceptBottleneck``, random weights: the time does not depend on them) computing the
activations per batch, glm-saga's SAGA table on disk (``DiskTable``). Measured in one run, each
size in a child process:

* a streaming pass over all rows computing the activations (``activation_stats``: the
  standardisation and the maximum lambda, what ``fit_sparse_path`` does first);
* one SAGA epoch at one lambda (glm-saga's ``train_saga``, unmodified, with the loader, the
  ``preprocess`` and the disk table ``fit_sparse_path`` gives it) on the first ``--steps`` + 1
  blocks of the epoch's seeded order, the first a warm-up, scaled to a whole pass: a full epoch
  takes about half an hour on 2 cores at N = 100,000; and the same steps with our loop
  (``sparse_cbm.bottleneck.saga``: the gradients as matrix products), its ratio to the matmul
  peak (target >= 0.5) and how far its weights end from glm-saga's;
* the products' GFLOP/s (activations, glm-saga's two forward passes of the final layer, its two
  gradient products, counted as matrix products) against the float32 matmul peak measured in
  the same run, and, to show where the time goes, glm-saga's gradient (a B x C x D broadcast
  then a mean) timed beside the same gradient as a matrix product;
* peak RSS for N and 2N rows: after the streaming pass, and over the whole run (flat = nothing
  grows with N; the B x C x D broadcast, 4.9 GB at batch 256, dominates the second).

Usage: python bench/sparse_layer.py [--rows 100000] [--steps 4] [--batch 256] [--out bench/out/sparse_layer]
       [--concepts 4751] [--classes 1000] [--dim 768] [--peak-n 2048] [--peak-repeats 10]
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import add_scaling_args, child_result, matmul_peak  # noqa: E402

from sparse_cbm.bottleneck.model import ConceptBottleneck  # noqa: E402
from sparse_cbm.bottleneck.saga_rows import BlockLoader, DiskTable  # noqa: E402
from sparse_cbm.bottleneck.sparse_layer import Standardised, activation_stats, bottleneck_activations  # noqa: E402
from sparse_cbm.simulate import planted_world, write_planted_npy  # noqa: E402
from sparse_cbm.storage.rows import NpyRows  # noqa: E402

D, C, DIM = 4751, 1000, 768
DEFAULT_SHAPE = (D, C, DIM)  # the files of other shapes carry theirs in their names
# a tiny run for the unit tier (tests/unit/test_bench.py); {tmp} is a scratch folder
SMOKE_ARGS = ["--rows", "48", "--steps", "2", "--batch", "8", "--concepts", "16", "--classes", "4", "--dim", "16",
              "--peak-n", "64", "--peak-repeats", "1", "--out", "{tmp}", "--in-process"]


def activation_flops(batch: int, D: int = D, DIM: int = DIM) -> float:
    return 2.0 * batch * DIM * D + 2.0 * batch * D * D  # psi, then the CBL


def saga_step_flops(batch: int, D: int = D, C: int = C, DIM: int = DIM) -> float:
    """A glm-saga step's products: the activations, the final layer's forward twice (it computes
    linear(X) for the loss and again for the softmax), and the two gradients (new and table's) that
    it forms as broadcasts, counted as the matrix products they amount to."""
    return activation_flops(batch, D, DIM) + 2 * (2.0 * batch * D * C) + 2 * (2.0 * batch * C * D)


def fast_step_flops(batch: int, D: int = D, C: int = C, DIM: int = DIM) -> float:
    """Our step's products: the activations, the final layer once, one gradient product."""
    return activation_flops(batch, D, DIM) + 2.0 * batch * D * C + 2.0 * batch * C * D


def world_files(out: Path, rows: int, D: int = D, C: int = C, DIM: int = DIM):
    world = planted_world(num_classes=C, num_concepts=D, concepts_per_class=4, dim=DIM, seed=0)
    stem = f"train_{rows}" if (D, C, DIM) == DEFAULT_SHAPE else f"train_{rows}_{D}x{C}x{DIM}"
    path, labels_path = out / f"{stem}.npy", out / f"{stem}_labels.npy"
    if not path.exists() or not labels_path.exists():
        np.save(labels_path, write_planted_npy(path, world, rows, seed=1))
    return world, path, labels_path


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Timed:
    """Wraps a loader and notes the time each batch is handed out."""

    def __init__(self, loader):
        self.loader, self.stamps = loader, []

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            self.stamps.append(time.perf_counter())
            yield batch


def child_run(out: Path, rows: int, steps: int, batch: int, D: int = D, C: int = C, DIM: int = DIM) -> dict:
    from glm_saga.elasticnet import train_saga as reference_saga

    from sparse_cbm.bottleneck.saga import train_saga as fast_saga

    world, path, labels_path = world_files(out, rows, D, C, DIM)
    torch.manual_seed(0)
    model = ConceptBottleneck(world.concept_text, C, 100.0)
    activations = bottleneck_activations(model)
    embeddings, labels = NpyRows(path), np.load(labels_path)
    rss_start = peak_rss_mib()

    t0 = time.perf_counter()
    stats = activation_stats(activations, embeddings, labels, C, batch_size=batch)
    stream_s = time.perf_counter() - t0
    rss_stream = peak_rss_mib()

    lam = 0.05 * stats.max_reg / 0.99  # a point inside the path (the cost of a step does not depend on it)
    preprocess = Standardised(activations, stats.mean.float(), stats.std.float())
    timed = {}
    for name, saga in (("ours", fast_saga), ("glm-saga", reference_saga)):  # ours first: its peak RSS is its own
        linear = torch.nn.Linear(D, C)
        linear.weight.data.zero_()
        linear.bias.data.zero_()
        loader = Timed(BlockLoader(embeddings, labels, batch, shuffle=True, seed=0, max_blocks=steps + 1))
        with tempfile.TemporaryDirectory(prefix="sparse-layer-bench-") as tmp:
            table = DiskTable(Path(tmp) / "saga_table.f32", rows, C)
            state = {"a_table": table, "w_grad_avg": torch.zeros_like(linear.weight),
                     "b_grad_avg": torch.zeros_like(linear.bias)}
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Implicit dimension choice for softmax")
                saga(linear, loader, 0.1, 1, lam, 0.99, group=False, state=state, table_device="cpu", n_ex=rows,
                     n_classes=C, tol=0.0, preprocess=preprocess, logger=lambda *a: None)
            end = time.perf_counter()
            table.close()
        stamps = loader.stamps + [end]
        timed[name] = {"step_s": float(np.mean(np.diff(stamps)[1:])),  # the first step is a warm-up
                       "steps": len(stamps) - 2, "weight": linear.weight.detach().clone(), "rss_mib": peak_rss_mib()}
    ours, ref = timed["ours"], timed["glm-saga"]
    return {"rows": rows, "stream_s": stream_s, "step_s": ref["step_s"], "fast_step_s": ours["step_s"],
            "steps": ref["steps"], "max_weight_difference": float((ours["weight"] - ref["weight"]).abs().max()),
            "rss_start_mib": rss_start, "rss_stream_mib": rss_stream, "rss_fast_mib": ours["rss_mib"],
            "rss_peak_mib": peak_rss_mib()}


def gradient_forms(batch: int, repeats: int = 3, D: int = D, C: int = C) -> tuple:
    """Seconds of glm-saga's gradient (a[:, :, None] * X[:, None, :]).mean(0) and of a.T @ X / B."""
    a, x = torch.randn(batch, C), torch.randn(batch, D)
    best = [float("inf"), float("inf")]
    for _ in range(repeats):
        t0 = time.perf_counter()
        (a.unsqueeze(2) * x.unsqueeze(1)).mean(0)
        best[0] = min(best[0], time.perf_counter() - t0)
        t0 = time.perf_counter()
        a.T @ x / batch
        best[1] = min(best[1], time.perf_counter() - t0)
    return best[0], best[1]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--steps", type=int, default=4, help="SAGA steps timed (after one warm-up step)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--out", default=str(REPO / "bench" / "out" / "sparse_layer"))
    parser.add_argument("--concepts", type=int, default=D, help="|D|")
    parser.add_argument("--classes", type=int, default=C, help="|C|")
    parser.add_argument("--dim", type=int, default=DIM, help="embedding width d")
    add_scaling_args(parser)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n_d, n_c, dim = args.concepts, args.classes, args.dim
    if args.child:
        print(json.dumps(child_run(out, args.rows, args.steps, args.batch, n_d, n_c, dim)))
        return

    runs = []
    for rows in (args.rows, 2 * args.rows):
        world_files(out, rows, n_d, n_c, dim)
        runs.append(child_result(__file__, ["--rows", str(rows), "--steps", str(args.steps), "--batch", str(args.batch),
                                            "--out", str(out), "--concepts", str(n_d), "--classes", str(n_c),
                                            "--dim", str(dim)],
                                 lambda: child_run(out, rows, args.steps, args.batch, n_d, n_c, dim), args.in_process))
    peak = matmul_peak(args.peak_n, args.peak_repeats)
    broadcast_s, matmul_s = gradient_forms(args.batch, D=n_d, C=n_c)
    first = runs[0]
    b = args.batch
    blocks = math.ceil(first["rows"] / b)
    stream_gflops = activation_flops(b, n_d, dim) * blocks / first["stream_s"] / 1e9
    saga_gflops = saga_step_flops(b, n_d, n_c, dim) / first["step_s"] / 1e9
    fast_gflops = fast_step_flops(b, n_d, n_c, dim) / first["fast_step_s"] / 1e9
    print(f"|D|={n_d} |C|={n_c} d={dim} batch {b}, {torch.get_num_threads()} threads, {first['rows']:,} rows in a "
          f"float16 .npy (NpyRows), SAGA table on disk; matmul peak {peak:.1f} GFLOP/s (float32 {args.peak_n}^3, "
          f"same run)")
    print(f"streaming pass (activations per batch, mean/std/max lambda): {first['stream_s']:7.1f} s per pass | "
          f"{first['rows'] / first['stream_s']:8.0f} rows/s | {stream_gflops:6.1f} GFLOP/s, ratio {stream_gflops / peak:.2f}")
    print(f"SAGA epoch at one lambda (glm-saga train_saga): {first['step_s']:.2f} s a step (mean of {first['steps']} "
          f"after a warm-up) -> {first['step_s'] * blocks / 60:7.1f} min per pass of {first['rows']:,} rows "
          f"({first['step_s'] * math.ceil(1_281_167 / b) / 3600:.1f} h for ImageNet's 1,281,167) | "
          f"{saga_gflops:6.1f} GFLOP/s, ratio {saga_gflops / peak:.3f}")
    print(f"SAGA epoch at one lambda (ours, sparse_cbm.bottleneck.saga): {first['fast_step_s']:.3f} s a step -> "
          f"{first['fast_step_s'] * blocks / 60:7.1f} min per pass ({first['fast_step_s'] * math.ceil(1_281_167 / b) / 3600:.1f} h "
          f"for ImageNet) | {fast_gflops:6.1f} GFLOP/s, ratio {fast_gflops / peak:.3f} (target >= 0.5) | "
          f"{first['step_s'] / first['fast_step_s']:.1f}x glm-saga's step; weights after the same steps differ by "
          f"{first['max_weight_difference']:.1e} at most")
    print(f"  where it goes: glm-saga forms each of a step's two gradients as a {b} x {n_c} x {n_d} broadcast then a "
          f"mean ({b * n_c * n_d * 4 / 1e9:.1f} GB): {broadcast_s:.2f} s; the same gradient as a matrix product: "
          f"{matmul_s:.3f} s ({broadcast_s / matmul_s:.0f}x)")
    print(f"peak RSS after the streaming pass: {runs[0]['rss_stream_mib']:.0f} MiB for {runs[0]['rows']:,} rows, "
          f"{runs[1]['rss_stream_mib']:.0f} MiB for {runs[1]['rows']:,} rows "
          f"(ratio {runs[1]['rss_stream_mib'] / runs[0]['rss_stream_mib']:.2f}; flat = bounded by the batch)")
    print(f"peak RSS with our SAGA steps: {runs[0]['rss_fast_mib']:.0f} MiB for {runs[0]['rows']:,} rows, "
          f"{runs[1]['rss_fast_mib']:.0f} MiB for {runs[1]['rows']:,} rows "
          f"(ratio {runs[1]['rss_fast_mib'] / runs[0]['rss_fast_mib']:.2f}; flat = bounded by the batch)")
    print(f"peak RSS of the whole run (streaming pass + SAGA steps): {runs[0]['rss_peak_mib']:.0f} MiB for "
          f"{runs[0]['rows']:,} rows, {runs[1]['rss_peak_mib']:.0f} MiB for {runs[1]['rows']:,} rows "
          f"(ratio {runs[1]['rss_peak_mib'] / runs[0]['rss_peak_mib']:.2f}; the {b} x {n_c} x {n_d} broadcast dominates)")


if __name__ == "__main__":
    main()
