"""Concept Matrix Search (CMS): a training-free classifier through the concept space.

Semenov et al., *Sparse Concept Bottleneck Models: Gumbel Tricks in Contrastive
Learning* (arXiv 2404.03323), section 4.2, Algorithm 1:

    V = cos(E_I(images), E_T(concepts))      N x |D|
    T = cos(E_T(classes), E_T(concepts))     |C| x |D|
    class of image k = argmax_m cos(V_k, T_m)

An image goes to the class whose profile over the concepts looks most like the
image's own. (The authors' code also divides each row of V by its sum; a positive
row scale does not change a cosine.)

Two exact ways to compute it, a batch of images at a time (V is never held whole):

* ``direct``: V for the batch, then V @ T^T (2 d|D| + 2 |D||C| FLOPs an image);
* ``factored`` (the default): with unit rows x (image), c_j (concept), t_m (class) and
  T_m = (c_j . t_m)_j, V_k . T_m = x_k^T (sum_j c_j c_j^T) t_m, so the numerator is one
  product with the d x |C| matrix W = C^T T^T, precomputed once in float64 (2 d|C| FLOPs
  an image, 6x fewer at ImageNet's shape). |V_k| = sqrt(x_k^T G x_k), G = C^T C, is only
  needed for the score values: the arg-max ignores a positive per-row scale.
"""

from __future__ import annotations

import numpy as np
import torch

from sparse_cbm.batched import Predictions, predict_batches, unit_rows

METHODS = ("factored", "direct")


class ConceptMatrixSearch:
    """Algorithm 1 prepared once for a concept set and a class set.

    ``concept_emb`` (|D|, d) and ``class_emb`` (|C|, d): unnormalised text embeddings
    (for several prompt templates per class, average them first, e.g. with
    ``sparse_cbm.zero_shot.class_text_embeddings``).
    """

    def __init__(self, concept_emb, class_emb):
        concepts = unit_rows(concept_emb).double()  # (|D|, d)
        classes = unit_rows(class_emb).double()  # (|C|, d)
        if concepts.shape[1] != classes.shape[1]:
            raise ValueError(f"concept_emb has dimension {concepts.shape[1]} but class_emb has {classes.shape[1]}")
        T = classes @ concepts.T  # (|C|, |D|): cos(class, concept)
        T_unit = T / torch.linalg.vector_norm(T, dim=1, keepdim=True).clamp_min(1e-12)
        self.concepts = concepts.float()
        self.T = T.float()
        self.T_unit_t = T_unit.T.float().contiguous()  # (|D|, |C|)
        self.W = (concepts.T @ T_unit.T).float().contiguous()  # (d, |C|): V_k . T_m / |T_m| = x_k . W[:, m]
        self.G = (concepts.T @ concepts).float()  # (d, d): |V_k|^2 = x_k^T G x_k

    @property
    def num_classes(self) -> int:
        return self.W.shape[1]

    def concept_scores(self, x: torch.Tensor) -> torch.Tensor:
        """V for a batch of unit image rows: cos(image, concept), (B, |D|)."""
        return x @ self.concepts.T

    def _scores_unscaled(self, method: str):
        if method == "factored":
            return lambda x: x @ self.W
        if method == "direct":
            return lambda x: self.concept_scores(x) @ self.T_unit_t
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")

    @torch.inference_mode()
    def scores(self, image_emb, method: str = "factored") -> np.ndarray:
        """cos(V_k, T_m) for one batch of images (unnormalised (B, d)): float32 (B, |C|)."""
        x = unit_rows(image_emb)
        if method == "direct":
            V = self.concept_scores(x)
            norm = torch.linalg.vector_norm(V, dim=1, keepdim=True)
            out = V @ self.T_unit_t
        else:
            out = self._scores_unscaled(method)(x)
            norm = ((x @ self.G) * x).sum(dim=1, keepdim=True).clamp_min_(0).sqrt_()
        return out.div_(norm.clamp_min_(1e-12)).numpy()

    def predict(self, image_emb, batch_size: int = 4096, k: int = 5, method: str = "factored") -> Predictions:
        """(top-1 (N,), top-k (N, min(k, |C|)) or None for k <= 1) class indices, a batch at a time."""
        return predict_batches(image_emb, self._scores_unscaled(method), batch_size, k)


def cms_scores(image_emb, concept_emb, class_emb) -> np.ndarray:
    """cos(V_k, T_m) of Algorithm 1 for one (small) batch of images: float32 (B, |C|)."""
    return ConceptMatrixSearch(concept_emb, class_emb).scores(image_emb)


def concept_matrix_search(image_emb, concept_emb, class_emb, batch_size: int = 4096,
                          method: str = "factored") -> np.ndarray:
    """Predicted class index of every image (int64 (N,)) by Concept Matrix Search (Algorithm 1 of
    arXiv 2404.03323). ``image_emb`` (N, d) may be an array, a memory map or ``NpyRows``; it is
    read ``batch_size`` rows at a time. ``method``: ``factored`` or ``direct`` (same result,
    see the module docstring)."""
    return ConceptMatrixSearch(concept_emb, class_emb).predict(image_emb, batch_size, k=1, method=method)[0]
