"""A linear probe on CLIP image embeddings: the accuracy a linear layer reaches without concepts
(scikit-learn's logistic regression, C chosen on val). See docs/methods.md#linear-probe.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from sparse_cbm.classifiers.base import Classifier, EvaluationInputs, register
from sparse_cbm.classifiers.batched import Buffers, Predictions, predict_batches, unit_batches

log = logging.getLogger(__name__)


def unit_matrix(embeddings, batch_size: int = 65536) -> np.ndarray:
    """All rows, unit-normalised, as one float32 (N, d) array (what scikit-learn fits on)."""
    out = np.empty((len(embeddings), embeddings.shape[1]), dtype=np.float32)
    for lo, x in unit_batches(embeddings, batch_size):
        out[lo:lo + len(x)] = x.numpy()
    return out


@dataclass
class LinearProbe(Classifier):
    model: LogisticRegression
    C: float
    val_accuracy: Dict[float, float]  # val top-1 for every C of the grid
    iterations: Dict[float, int] = field(default_factory=dict)  # L-BFGS iterations for every C
    label = "linear probe"

    def __post_init__(self):
        coef = torch.as_tensor(self.model.coef_, dtype=torch.float32)
        bias = torch.as_tensor(self.model.intercept_, dtype=torch.float32)
        if coef.shape[0] == 1:  # two classes: one logit for classes_[1], zero for classes_[0]
            coef, bias = torch.cat([torch.zeros_like(coef), coef]), torch.cat([torch.zeros_like(bias), bias])
        self._coef_t, self._bias, self._buffers = coef.T.contiguous(), bias, Buffers()
        self._labels = self.model.classes_.astype(np.int64)

    @torch.inference_mode()
    def class_scores(self, x: torch.Tensor) -> torch.Tensor:
        """Scores of the classes seen in train (``model.classes_``, in that order)."""
        return self._buffers.mm("scores", x, self._coef_t).add_(self._bias)

    def predict(self, embeddings, batch_size: int = 4096, k: int = 5) -> Predictions:
        """(top-1 int64 (N,), top-k int64 (N, min(k, classes seen in train)) or None for k <= 1) labels."""
        pred, top = predict_batches(embeddings, self.class_scores, batch_size, k)
        return self._labels[pred], None if top is None else self._labels[top]


def fit_linear_probe(train: Tuple[np.ndarray, np.ndarray], val: Tuple[np.ndarray, np.ndarray],
                     cs: Sequence[float] = (0.01, 0.1, 1.0, 10.0), max_iter: int = 1000, seed: int = 0,
                     max_train: Optional[int] = None) -> LinearProbe:
    """Fit one logistic regression per C on ``train`` ((embeddings, labels)), keep the best on ``val``.

    ``max_train`` fits on a seeded random subset of that many training images (the fit
    holds the training embeddings in memory as float32: ImageNet's 1.28M x 768 is 3.9 GB).
    """
    cs = [float(c) for c in cs]
    if not cs or any(not np.isfinite(c) or c <= 0 for c in cs):
        raise ValueError(f"cs must be a non-empty list of positive numbers, got {cs!r}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
    x_train, y_train = train
    y_train = np.asarray(y_train, dtype=np.int64)
    if max_train is not None and max_train < len(y_train):
        keep = np.sort(np.random.default_rng(seed).choice(len(y_train), size=max_train, replace=False))
        x = unit_matrix(_Rows(x_train, keep))
        y_train = y_train[keep]
    else:
        x = unit_matrix(x_train)
    if len(np.unique(y_train)) < 2:
        raise ValueError("the training split must hold at least two classes for a linear probe")
    y_val = np.asarray(val[1], dtype=np.int64)
    best: Optional[LinearProbe] = None
    accuracy: Dict[float, float] = {}
    iterations: Dict[float, int] = {}
    for c in sorted(cs):
        model = LogisticRegression(C=c, max_iter=max_iter, random_state=seed)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            model.fit(x, y_train)
        if any(issubclass(w.category, ConvergenceWarning) for w in caught):
            log.warning("linear probe: C=%g did not converge in %d iterations", c, max_iter)
        probe = LinearProbe(model=model, C=c, val_accuracy=accuracy, iterations=iterations)
        accuracy[c] = float((probe.predict(val[0], k=1)[0] == y_val).mean()) if len(y_val) else float("nan")
        iterations[c] = int(np.max(model.n_iter_))
        if best is None or accuracy[c] > accuracy[best.C]:
            best = probe
    return best


class _Rows:
    """Rows ``keep`` of an embedding array, sliced like an array (for ``unit_batches``)."""

    def __init__(self, embeddings, keep: np.ndarray):
        self.embeddings, self.keep = embeddings, keep
        self.shape = (len(keep), embeddings.shape[1])

    def __len__(self) -> int:
        return len(self.keep)

    def __getitem__(self, index: slice) -> np.ndarray:
        return np.asarray(self.embeddings[self.keep[index]])


@register("linear_probe")
def build(inputs: EvaluationInputs) -> LinearProbe:
    options = inputs.options.get("linear_probe", {})
    probe = fit_linear_probe(inputs.train, inputs.val, seed=inputs.seed, **options)
    log.info("linear probe: C = %g (val accuracy per C: %s)", probe.C, probe.val_accuracy)
    return probe
