"""Benchmark of the training-free classifiers at ImageNet-val's shape, measured in one run.

50,000 simulated image embeddings (d = 768) in a float16 .npy read with ``NpyRows``,
|D| = 4,751 concepts, |C| = 1,000 classes. Prints, for zero-shot, Concept Matrix Search
(factored: one d x |C| product; direct: V = x C^T for the batch, then V T^T) and
classification by descriptions:

* images/s over the whole file (reading, float16 -> float32, normalising, products,
  top-5 included) and top-1 accuracy against the planted labels (chance: 0.001);
* how often the two CMS computations predict the same class;
* the achieved GFLOP/s of the method's matrix products as a fraction of this machine's
  torch float32 matmul peak, measured in the same process before and after (the better
  of the two; the machine may be shared) (target >= 0.6);
* peak RSS of a process that classifies N and 2N rows (flat = bounded by the batch).

Usage: python bench/evaluate.py [--rows 50000] [--batch 4096] [--repeats 3]
       [--concepts 4751] [--classes 1000] [--dim 768] [--peak-n 2048] [--peak-repeats 10]
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
from sparse_cbm.classifiers.cms import ConceptMatrixSearch  # noqa: E402
from sparse_cbm.storage.rows import NpyRows  # noqa: E402
from sparse_cbm.simulate import planted_world, write_planted_npy  # noqa: E402
from sparse_cbm.classifiers.descriptions import classify_by_descriptions  # noqa: E402
from sparse_cbm.classifiers.zero_shot import zero_shot_predict  # noqa: E402

D, C, DIM, PER_CLASS = 4751, 1000, 768, 4
# a tiny run for the unit tier (tests/unit/test_bench.py); {tmp} is a scratch folder
SMOKE_ARGS = ["--rows", "64", "--batch", "32", "--repeats", "1", "--concepts", "24", "--classes", "6", "--dim", "16",
              "--peak-n", "64", "--peak-repeats", "1", "--out", "{tmp}", "--in-process"]


def world_files(out: Path, rows: int, args: argparse.Namespace):
    world = planted_world(num_classes=args.classes, num_concepts=args.concepts, concepts_per_class=PER_CLASS,
                          dim=args.dim, seed=0)
    stem = f"val_{rows}" if (args.concepts, args.classes, args.dim) == (D, C, DIM) else \
        f"val_{rows}_{args.concepts}x{args.classes}x{args.dim}"
    path, labels_path = out / f"{stem}.npy", out / f"{stem}_labels.npy"
    if not path.exists():
        np.save(labels_path, write_planted_npy(path, world, rows, seed=1))
    return world, path, labels_path


def methods(world, batch: int):
    """name -> (setup seconds, classify(rows) -> (top1, top5), matmul FLOPs an image)."""
    (n_class, dim), n_concept = world.class_text.shape, len(world.concept_text)
    concept_text, class_text = world.concept_text, world.class_text  # properties: computed on each access
    t0 = time.perf_counter()
    cms = ConceptMatrixSearch(concept_text, class_text)
    cms_s = time.perf_counter() - t0
    owner, concept = np.nonzero(world.class_concepts)
    desc = class_text[owner] + concept_text[concept]  # "{class}, which has {concept}"
    return {
        "zero-shot": (0.0, lambda rows: zero_shot_predict(rows, class_text, batch), 2 * dim * n_class),
        "CMS factored": (cms_s, lambda rows: cms.predict(rows, batch, method="factored"), 2 * dim * n_class),
        "CMS direct": (cms_s, lambda rows: cms.predict(rows, batch, method="direct"),
                       2 * dim * n_concept + 2 * n_concept * n_class),
        "descriptions": (0.0, lambda rows: classify_by_descriptions(rows, desc, owner, n_class, batch),
                         2 * dim * n_class),
    }


def child(out: Path, rows: int, batch: int, repeats: int, args: argparse.Namespace) -> dict:
    world, path, labels_path = world_files(out, rows, args)
    labels = np.load(labels_path)
    data = NpyRows(path)
    peaks = [matmul_peak(args.peak_n, args.peak_repeats)]
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # torch alone holds ~500 MiB
    result = {"rows": rows, "baseline_rss_mib": baseline, "methods": {}}
    predictions = {}
    for name, (setup_s, classify, flops) in methods(world, batch).items():
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            top1, top5 = classify(data)
            best = min(best, time.perf_counter() - t0)
        predictions[name] = top1
        result["methods"][name] = {"seconds": best, "setup_s": setup_s, "flops_per_image": flops,
                                   "top1": float((top1 == labels).mean()),
                                   "top5": float((top5 == labels[:, None]).any(axis=1).mean())}
    result["cms_same_predictions"] = float((predictions["CMS factored"] == predictions["CMS direct"]).mean())
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    peaks.append(matmul_peak(args.peak_n, args.peak_repeats))
    result["peak_gflops"] = max(peaks)  # the machine is shared: the better of before and after
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concepts", type=int, default=D, help="|D|")
    parser.add_argument("--classes", type=int, default=C, help="|C|")
    parser.add_argument("--dim", type=int, default=DIM, help="embedding width d")
    parser.add_argument("--out", default=str(REPO / "bench" / "out" / "evaluate"))
    add_scaling_args(parser)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.child:
        print(json.dumps(child(out, args.rows, args.batch, args.repeats, args)))
        return

    sizes = ["--concepts", str(args.concepts), "--classes", str(args.classes), "--dim", str(args.dim),
             "--peak-n", str(args.peak_n), "--peak-repeats", str(args.peak_repeats)]
    runs = []
    for rows, repeats in ((args.rows, args.repeats), (2 * args.rows, 1)):
        world_files(out, rows, args)
        runs.append(child_result(__file__, ["--rows", str(rows), "--batch", str(args.batch), "--repeats", str(repeats),
                                            "--out", str(out), *sizes],
                                 lambda: child(out, rows, args.batch, repeats, args), args.in_process))
    first = runs[0]
    peak = first["peak_gflops"]
    print(f"{first['rows']:,} x {args.dim} float16 image embeddings (NpyRows), |D|={args.concepts} concepts, "
          f"|C|={args.classes} classes, batch {args.batch}, {torch.get_num_threads()} threads; matmul peak "
          f"{peak:.1f} GFLOP/s (float32 {args.peak_n}^3, same process); best of {args.repeats}")
    for name, m in first["methods"].items():
        rate = first["rows"] / m["seconds"]
        achieved = m["flops_per_image"] * rate / 1e9
        print(f"{name:13s}: {rate:9.0f} images/s | {m['flops_per_image'] / 1e6:5.2f} MFLOP/image | "
              f"{achieved:6.1f} GFLOP/s, ratio {achieved / peak:.2f} (target >= 0.6) | setup {m['setup_s']:.2f} s | "
              f"top-1 {m['top1']:.3f}, top-5 {m['top5']:.3f}")
    print(f"CMS factored and direct predict the same class for {100 * first['cms_same_predictions']:.3f}% of images")
    growth = [r["peak_rss_mib"] - r["baseline_rss_mib"] for r in runs]
    print(f"peak RSS: {runs[0]['peak_rss_mib']:.0f} MiB for {runs[0]['rows']:,} rows, {runs[1]['peak_rss_mib']:.0f} MiB "
          f"for {runs[1]['rows']:,} rows (ratio {runs[1]['peak_rss_mib'] / runs[0]['peak_rss_mib']:.2f}; flat = bounded "
          f"by the batch); above the process after importing torch: {growth[0]:.0f} and {growth[1]:.0f} MiB")


if __name__ == "__main__":
    main()
