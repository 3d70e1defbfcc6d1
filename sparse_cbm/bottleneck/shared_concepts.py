"""Concepts shared by the classes: a group lasso chooses the sparse final layer's concepts first.

The per-class lasso of the sparse final layer prices each (class, concept) weight on its own, so
for each class it takes whatever concept separates that class best. A concept that stands for a
whole class rule ("outer space" for a star on a black background) then beats the attributes the
rule combines, though it is not what the image shows. The group lasso (glm-saga's ``group=True``:
one l2 norm per concept over its weights for all classes) prices a concept once for every class
that uses it, so concepts that many classes share (the attributes that their rules reuse) come
cheaper than one concept a class. ``train.sparse.shared_concepts: K`` runs that group path on
the same standardised activations until a point uses more than K concepts, keeps the concepts of its
densest point within K, and then runs the usual per-class path on those alone
(``sparse_layer.fit_sparse_path``). Measured: docs/methods.md#concepts-shared-by-the-classes.
"""

from __future__ import annotations

import logging
from typing import Callable, Optional

import numpy as np

from sparse_cbm.errors import TrainingError

log = logging.getLogger(__name__)


def concepts_used(weight) -> np.ndarray:
    """Which concepts have a non-zero weight for some class (``weight``: classes x concepts)."""
    return (np.asarray(weight) != 0).any(axis=0)


def choose_shared(group_path: Callable[[], "SparsePath"], k: int,  # noqa: F821
                  width: Optional[int] = None) -> Optional[np.ndarray]:
    """The concepts (indices, ascending) of the densest point of the group path (``group_path()``
    fits it, stopping past ``k`` concepts) that uses at most ``k`` concepts; None (every concept) when
    there are no more than ``k`` of them (``width``), without fitting the group path. When the path
    goes from no concept to more than ``k`` in one step (a coarse grid), the ``k`` concepts whose
    weights have the largest l2 norm at that point, the group lasso's own order."""
    if k < 1:
        raise TrainingError(f"train.sparse.shared_concepts must be at least 1, got {k}.")
    if width is not None and width <= k:
        log.info("shared concepts: %d concepts, at most %d shared: every one, no group path", width, k)
        return None
    path = group_path()
    chosen, past = None, None
    for point in path.points:
        used = concepts_used(point.weight)
        if used.sum() > k:
            past = point if past is None else past
        elif used.any() and (chosen is None or used.sum() >= chosen.sum()):
            chosen = used
    if chosen is None and past is not None:
        norms = np.linalg.norm(np.asarray(past.weight, dtype=np.float64), axis=0)
        top = np.sort(np.argsort(-norms, kind="stable")[:k])
        log.info("shared concepts: the group path went from none to %d concepts in one step; kept the %d of "
                 "largest norm (more path_points would resolve it)", int(concepts_used(past.weight).sum()), k)
        return top
    if chosen is None:
        raise TrainingError(f"the group path chose no concept set of 1 to {k} concepts (its points used "
                            f"{[int(concepts_used(p.weight).sum()) for p in path.points]}); raise "
                            f"sparse.shared_concepts or sparse.path_points.")
    log.info("shared concepts: the group path chose %d of %d concepts (at most %d)", chosen.sum(), len(chosen), k)
    return np.flatnonzero(chosen)
