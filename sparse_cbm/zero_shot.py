"""Training-free CLIP classifiers on text embeddings: zero-shot and classification by descriptions.

* Zero-shot (Radford et al., 2021): the class of an image is the arg-max of
  cos(image, class text), the class text being CLIP's template ensemble (normalise
  each template's embedding, average over templates, renormalise).
* Classification by descriptions (Menon & Vondrick, *Visual Classification via
  Description from Large Language Models*, ICLR 2023): the score of class c is the mean
  cosine of the image to the descriptions "{class}, which has {concept}" of c. The mean
  of cosines is the cosine-free product x . mean_p(unit e_p), so it is one matrix
  product with a (|C|, d) matrix of per-class mean unit descriptions. A class without
  descriptions scores -inf and is never predicted.

Image embeddings are read a batch at a time (arrays, memory maps or ``NpyRows``).
"""

from __future__ import annotations

import numpy as np
import torch

from sparse_cbm.batched import Buffers, Predictions, predict_batches, unit_rows


def class_text_embeddings(prompt_emb) -> np.ndarray:
    """CLIP's template ensemble: (T, C, d) prompt embeddings -> float32 (C, d) unit rows."""
    prompts = torch.tensor(np.asarray(prompt_emb), dtype=torch.float32)
    if prompts.ndim != 3:
        raise ValueError(f"prompt_emb must have shape (templates, classes, dim), got {tuple(prompts.shape)}")
    prompts = prompts / torch.linalg.vector_norm(prompts, dim=2, keepdim=True).clamp_min(1e-12)
    return unit_rows(prompts.mean(dim=0)).numpy()


@torch.inference_mode()
def zero_shot_scores(image_emb, class_emb) -> np.ndarray:
    """cos(image, class) for one batch: float32 (B, C)."""
    return (unit_rows(image_emb) @ unit_rows(class_emb).T).numpy()


def zero_shot_predict(image_emb, class_emb, batch_size: int = 4096, k: int = 5) -> Predictions:
    """(top-1 int64 (N,), top-k int64 (N, min(k, C)) or None for k <= 1): arg-max of cos(image, class)."""
    classes_t, buffers = unit_rows(class_emb).T.contiguous(), Buffers()
    return predict_batches(image_emb, lambda x: buffers.mm("scores", x, classes_t), batch_size, k)


def description_class_matrix(description_emb, description_class, num_classes: int) -> torch.Tensor:
    """(d, C) float32: column c is the mean unit embedding of class c's descriptions, 0 for a class without."""
    desc = unit_rows(description_emb).double()
    owner = torch.as_tensor(np.asarray(description_class, dtype=np.int64))
    if owner.shape != (desc.shape[0],):
        raise ValueError(f"description_class must have one entry per description ({desc.shape[0]}), "
                         f"got shape {tuple(owner.shape)}")
    if len(owner) and (owner.min() < 0 or owner.max() >= num_classes):
        raise ValueError(f"description_class must lie in [0, num_classes={num_classes}), "
                         f"got values from {int(owner.min())} to {int(owner.max())}")
    sums = torch.zeros(num_classes, desc.shape[1], dtype=torch.float64).index_add_(0, owner, desc)
    counts = torch.bincount(owner, minlength=num_classes).double()
    return (sums / counts.clamp_min(1)[:, None]).T.float().contiguous()


def _description_scorer(description_emb, description_class, num_classes: int):
    means = description_class_matrix(description_emb, description_class, num_classes)
    missing = torch.bincount(torch.as_tensor(np.asarray(description_class, dtype=np.int64)),
                             minlength=num_classes) == 0
    if bool(missing.all()):
        raise ValueError("no class has a description: classification by descriptions needs at least one")

    buffers, any_missing = Buffers(), bool(missing.any())

    def score(x: torch.Tensor) -> torch.Tensor:
        out = buffers.mm("scores", x, means)
        return out.masked_fill_(missing, float("-inf")) if any_missing else out
    return score


@torch.inference_mode()
def description_scores(image_emb, description_emb, description_class, num_classes: int) -> np.ndarray:
    """Mean cos(image, description) per class for one batch: float32 (B, C); -inf for a class without
    descriptions."""
    return _description_scorer(description_emb, description_class, num_classes)(unit_rows(image_emb)).numpy()


def classify_by_descriptions(image_emb, description_emb, description_class, num_classes: int,
                             batch_size: int = 4096, k: int = 5) -> Predictions:
    """(top-1 int64 (N,), top-k int64 (N, min(k, C)) or None for k <= 1) by mean description cosine.
    ``description_emb`` (P, d); ``description_class`` (P,) the class index of each description (the
    text cache's ``descriptions.parquet`` column ``class_index``). A class without descriptions is
    never predicted (it can fill the top-k only when fewer than k classes have descriptions)."""
    return predict_batches(image_emb, _description_scorer(description_emb, description_class, num_classes),
                           batch_size, k)
