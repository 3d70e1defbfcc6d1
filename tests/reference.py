"""Literal transcriptions that the vectorised code is checked against (tests and benchmarks)."""

import numpy as np


def dedupe_pairwise_loop(sim: np.ndarray, cutoff: float):
    """The near-duplicate rule of sparse_cbm.concept_filter.filter, one pair at a time: visit concepts from
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


def _cos(a, b) -> float:
    dot = sum(float(x) * float(y) for x, y in zip(a, b))
    na = sum(float(x) ** 2 for x in a) ** 0.5
    nb = sum(float(y) ** 2 for y in b) ** 0.5
    return dot / (na * nb)


def concept_matrix_search_loop(images, concepts, classes):
    """Algorithm 1 of arXiv 2404.03323 (Concept Matrix Search), one cosine at a time, in float64:
    V[k][j] = cos(image k, concept j), T[m][j] = cos(class m, concept j), then for every image
    the class m with the largest cos(V[k], T[m]). Returns (predictions, scores[k][m])."""
    V = [[_cos(image, concept) for concept in concepts] for image in images]
    T = [[_cos(cls, concept) for concept in concepts] for cls in classes]
    predictions, scores = [], []
    for k in range(len(images)):
        row = [_cos(V[k], T[m]) for m in range(len(classes))]
        best = 0
        for m in range(1, len(classes)):
            if row[m] > row[best]:
                best = m
        predictions.append(best)
        scores.append(row)
    return np.array(predictions), np.array(scores)
