"""Literal transcriptions that the vectorised code is checked against (tests and benchmarks)."""

import numpy as np


def dedupe_pairwise_loop(sim: np.ndarray, cutoff: float):
    """The near-duplicate rule of sparse_cbm.concept_filter, one pair at a time: visit concepts from
    the highest mean similarity to the others down (ties by position); drop one when an earlier kept
    concept is more similar than the cutoff (the most similar such concept is named)."""
    n = len(sim)
    mean = [(sum(float(sim[i, j]) for j in range(n)) - float(sim[i, i])) / max(n - 1, 1) for i in range(n)]
    order = sorted(range(n), key=lambda i: (-mean[i], i))
    keep = [True] * n
    near = [-1] * n
    seen = []
    for i in order:
        best = None
        for j in seen:
            if keep[j] and sim[i, j] > cutoff and (best is None or sim[i, j] > sim[i, best]):
                best = j
        if best is not None:
            keep[i], near[i] = False, best
        seen.append(i)
    return np.array(keep), np.array(near)
