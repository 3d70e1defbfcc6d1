"""Zero-shot CLIP (Radford et al., 2021): the class of an image is the arg-max of
cos(image, class text), the class text being CLIP's template ensemble (normalise each
template's embedding, average over templates, renormalise).

Image embeddings are read a batch at a time (arrays, memory maps or ``NpyRows``).
"""

from __future__ import annotations

import numpy as np
import torch

from sparse_cbm.classifiers.base import Classifier, EvaluationInputs, register
from sparse_cbm.classifiers.batched import Buffers, Predictions, unit_rows


def class_text_embeddings(prompt_emb) -> np.ndarray:
    """CLIP's template ensemble: (T, C, d) prompt embeddings -> float32 (C, d) unit rows."""
    prompts = torch.tensor(np.asarray(prompt_emb), dtype=torch.float32)
    if prompts.ndim != 3:
        raise ValueError(f"prompt_emb must have shape (templates, classes, dim), got {tuple(prompts.shape)}")
    prompts = prompts / torch.linalg.vector_norm(prompts, dim=2, keepdim=True).clamp_min(1e-12)
    return unit_rows(prompts.mean(dim=0)).numpy()


class ZeroShot(Classifier):
    label = "zero-shot CLIP"

    def __init__(self, class_emb):
        self.classes_t, self._buffers = unit_rows(class_emb).T.contiguous(), Buffers()

    @torch.inference_mode()
    def class_scores(self, x: torch.Tensor) -> torch.Tensor:
        return self._buffers.mm("scores", x, self.classes_t)


@torch.inference_mode()
def zero_shot_scores(image_emb, class_emb) -> np.ndarray:
    """cos(image, class) for one batch: float32 (B, C)."""
    return ZeroShot(class_emb).class_scores(unit_rows(image_emb)).clone().numpy()


def zero_shot_predict(image_emb, class_emb, batch_size: int = 4096, k: int = 5) -> Predictions:
    """(top-1 int64 (N,), top-k int64 (N, min(k, C)) or None for k <= 1): arg-max of cos(image, class)."""
    return ZeroShot(class_emb).predict(image_emb, batch_size, k)


@register("zero_shot")
def build(inputs: EvaluationInputs) -> ZeroShot:
    return ZeroShot(inputs.class_embeddings)
