"""Concept Matrix Search (CMS): the paper's training-free classifier through the concept space
(section 4.2, Algorithm 1), and its variant over descriptions. See docs/methods.md#concept-matrix-search.

Computed exactly a batch of images at a time (V is never held whole), ``direct`` (V for the batch,
then V @ T^T) or ``factored`` (the default: one product with a precomputed d x |C| matrix), ranking
classes in a centred form that keeps float32 exact enough (``ConceptMatrixSearch``).
"""

from __future__ import annotations

import numpy as np
import torch

from sparse_cbm.classifiers.base import Classifier, EvaluationInputs, register
from sparse_cbm.classifiers.batched import Buffers, Predictions, predict_batches, unit_rows

METHODS = ("factored", "direct")


class ConceptMatrixSearch(Classifier):
    """Algorithm 1 prepared once for a concept set and a class set.

    ``concept_emb`` (|D|, d) and ``class_emb`` (|C|, d): unnormalised text embeddings
    (for several prompt templates per class, average them first, e.g. with
    ``sparse_cbm.zero_shot.class_text_embeddings``).

    Precision: with CLIP's modality gap every row of V and of T points almost the same
    way, so cos(V_k, T_m) is about 0.999 for every class and the classes differ in the
    sixth decimal, below float32's resolution of a sum of |D| terms near 1. So the
    classes are ranked by V_k . (T^_m - t), where T^_m is T_m / |T_m| and t the mean of
    the T^_m over classes: V_k . t is the same for every class, and the small centred
    rows (made in float64) keep float32's error far below the gaps.
    """

    label = "Concept Matrix Search"

    def __init__(self, concept_emb, class_emb):
        concepts = unit_rows(concept_emb).double()  # (|D|, d)
        classes = unit_rows(class_emb).double()  # (|C|, d)
        if concepts.shape[1] != classes.shape[1]:
            raise ValueError(f"concept_emb has dimension {concepts.shape[1]} but class_emb has {classes.shape[1]}")
        T = classes @ concepts.T  # (|C|, |D|): cos(class, concept)
        T_unit = T / torch.linalg.vector_norm(T, dim=1, keepdim=True).clamp_min(1e-12)
        mean = T_unit.mean(dim=0)  # (|D|,)
        centred = T_unit - mean  # (|C|, |D|)
        self.T = T.float()  # (|C|, |D|): the class-concept matrix itself, for explanations
        self.concepts_t = concepts.T.float().contiguous()  # (d, |D|)
        self.centred_t = centred.T.float().contiguous()  # (|D|, |C|)
        self.mean = mean.float()
        self.W = (concepts.T @ centred.T).float().contiguous()  # (d, |C|): V_k . (T^_m - t) = x_k . W[:, m]
        self.w_mean = (concepts.T @ mean).float()  # (d,): V_k . t = x_k . w_mean
        self.G = (concepts.T @ concepts).float()  # (d, d): |V_k|^2 = x_k^T G x_k

    @property
    def num_classes(self) -> int:
        return self.W.shape[1]

    @torch.inference_mode()
    def class_scores(self, x: torch.Tensor) -> torch.Tensor:
        """Scores that order the classes as cos(V_k, T_m) does (the factored form)."""
        return x @ self.W

    def concept_scores(self, x: torch.Tensor) -> torch.Tensor:
        """V for a batch of unit image rows: cos(image, concept), (B, |D|)."""
        return x @ self.concepts_t

    def _ranking(self, method: str):
        """x (unit rows) -> (B, |C|) scores that order the classes as cos(V_k, T_m) does."""
        buffers = Buffers()
        if method == "factored":
            return lambda x: buffers.mm("scores", x, self.W)
        if method == "direct":
            return lambda x: buffers.mm("scores", buffers.mm("V", x, self.concepts_t), self.centred_t)
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")

    @torch.inference_mode()
    def scores(self, image_emb, method: str = "factored") -> np.ndarray:
        """cos(V_k, T_m) for one batch of images (unnormalised (B, d)): float64 (B, |C|), ordered within
        each row exactly as ``predict`` orders the classes."""
        ranking = self._ranking(method)
        x = unit_rows(image_emb)
        if method == "direct":
            V = self.concept_scores(x)
            offset, norm = V @ self.mean, torch.linalg.vector_norm(V, dim=1)
        else:
            offset, norm = x @ self.w_mean, ((x @ self.G) * x).sum(dim=1).clamp_min_(0).sqrt_()
        out = ranking(x).double().add_(offset.double()[:, None])
        return out.div_(norm.double().clamp_min_(1e-12)[:, None]).numpy()

    def predict(self, image_emb, batch_size: int = 4096, k: int = 5, method: str = "factored") -> Predictions:
        """(top-1 (N,), top-k (N, min(k, |C|)) or None for k <= 1) class indices, a batch at a time."""
        return predict_batches(image_emb, self._ranking(method), batch_size, k)


def cms_scores(image_emb, concept_emb, class_emb) -> np.ndarray:
    """cos(V_k, T_m) of Algorithm 1 for one (small) batch of images: float64 (B, |C|)."""
    return ConceptMatrixSearch(concept_emb, class_emb).scores(image_emb)


def concept_matrix_search(image_emb, concept_emb, class_emb, batch_size: int = 4096,
                          method: str = "factored") -> np.ndarray:
    """Predicted class index of every image (int64 (N,)) by Concept Matrix Search (Algorithm 1 of
    arXiv 2404.03323). ``image_emb`` (N, d) may be an array, a memory map or ``NpyRows``; it is
    read ``batch_size`` rows at a time. ``method``: ``factored`` or ``direct`` (same result,
    see the module docstring)."""
    return ConceptMatrixSearch(concept_emb, class_emb).predict(image_emb, batch_size, k=1, method=method)[0]


class DescribedConceptMatrixSearch(ConceptMatrixSearch):
    label = "Concept Matrix Search (classes as their descriptions)"


@register("cms")
def build(inputs: EvaluationInputs) -> ConceptMatrixSearch:
    """Algorithm 1 as the paper has it: T from the class names' prompt embeddings."""
    return ConceptMatrixSearch(inputs.concept_embeddings, inputs.class_embeddings)


@register("cms_descriptions")
def build_described(inputs: EvaluationInputs):
    """Algorithm 1 with each class's text the mean of its descriptions ("{class}, which has {concept}")
    instead of its name alone (a class without descriptions keeps its name). Where class names tell
    CLIP nothing (invented names, rare species), the paper's T carries no information and only this
    form can use what the concept set knows about each class. None when no class has descriptions."""
    if not len(inputs.description_class):
        return None
    from sparse_cbm.classifiers.descriptions import description_class_matrix

    means = description_class_matrix(inputs.description_embeddings, inputs.description_class,
                                     len(inputs.classes)).T.numpy()  # (|C|, d), zero rows without descriptions
    described = np.where((np.abs(means).sum(axis=1) > 0)[:, None], means, inputs.class_embeddings)
    return DescribedConceptMatrixSearch(inputs.concept_embeddings, described)
