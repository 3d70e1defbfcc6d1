"""Classification by descriptions (Menon & Vondrick, ICLR 2023): the score of class c is the mean
cosine of the image to its descriptions "{class}, which has {concept}", computed as one matrix
product with the per-class mean unit descriptions. See docs/methods.md#classification-by-descriptions.
"""

from __future__ import annotations

import numpy as np
import torch

from sparse_cbm.classifiers.base import Classifier, EvaluationInputs, register
from sparse_cbm.classifiers.batched import Buffers, Predictions, unit_rows


def description_class_matrix(description_emb, description_class, num_classes: int) -> torch.Tensor:
    """(d, C) float32: column c is the mean unit embedding of class c's descriptions, 0 for a class without."""
    desc = unit_rows(description_emb).double()
    owner = torch.tensor(np.asarray(description_class, dtype=np.int64))  # a copy: the cache's array is read-only
    if owner.shape != (desc.shape[0],):
        raise ValueError(f"description_class must have one entry per description ({desc.shape[0]}), "
                         f"got shape {tuple(owner.shape)}")
    if len(owner) and (owner.min() < 0 or owner.max() >= num_classes):
        raise ValueError(f"description_class must lie in [0, num_classes={num_classes}), "
                         f"got values from {int(owner.min())} to {int(owner.max())}")
    sums = torch.zeros(num_classes, desc.shape[1], dtype=torch.float64).index_add_(0, owner, desc)
    counts = torch.bincount(owner, minlength=num_classes).double()
    return (sums / counts.clamp_min(1)[:, None]).T.float().contiguous()


class DescriptionClassifier(Classifier):
    label = "classification by descriptions"

    def __init__(self, description_emb, description_class, num_classes: int):
        self.means = description_class_matrix(description_emb, description_class, num_classes)
        self.missing = torch.bincount(torch.tensor(np.asarray(description_class, dtype=np.int64)),
                                      minlength=num_classes) == 0
        if bool(self.missing.all()):
            raise ValueError("no class has a description: classification by descriptions needs at least one")
        self._any_missing, self._buffers = bool(self.missing.any()), Buffers()

    @torch.inference_mode()
    def class_scores(self, x: torch.Tensor) -> torch.Tensor:
        out = self._buffers.mm("scores", x, self.means)
        return out.masked_fill_(self.missing, float("-inf")) if self._any_missing else out


@torch.inference_mode()
def description_scores(image_emb, description_emb, description_class, num_classes: int) -> np.ndarray:
    """Mean cos(image, description) per class for one batch: float32 (B, C); -inf for a class without
    descriptions."""
    clf = DescriptionClassifier(description_emb, description_class, num_classes)
    return clf.class_scores(unit_rows(image_emb)).clone().numpy()


def classify_by_descriptions(image_emb, description_emb, description_class, num_classes: int,
                             batch_size: int = 4096, k: int = 5) -> Predictions:
    """(top-1 int64 (N,), top-k int64 (N, min(k, C)) or None for k <= 1) by mean description cosine.
    ``description_emb`` (P, d); ``description_class`` (P,) the class index of each description (the
    text cache's ``descriptions.parquet`` column ``class_index``). A class without descriptions is
    never predicted (it can fill the top-k only when fewer than k classes have descriptions)."""
    return DescriptionClassifier(description_emb, description_class, num_classes).predict(image_emb, batch_size, k)


@register("descriptions")
def build(inputs: EvaluationInputs):
    if not len(inputs.description_class):
        return None  # every concept is shared by all classes: no class has a description of its own
    return DescriptionClassifier(inputs.description_embeddings, inputs.description_class, len(inputs.classes))
