"""CLIP's own concept scores as concept activations: psi = logit_scale x cos(image, concept).

Not a classifier (it names concepts but decides nothing): the reference every bottleneck's
concepts are measured against. A bottleneck that says less about the image than these
scores do has lost what CLIP saw.
"""

from __future__ import annotations

import numpy as np
import torch

from sparse_cbm.classifiers.base import ConceptScorer
from sparse_cbm.classifiers.batched import unit_rows


class ClipConceptScores(ConceptScorer):
    label = "CLIP concept scores"

    def __init__(self, concept_embeddings: np.ndarray, concepts: list, logit_scale: float = 1.0):
        self.concepts_t = unit_rows(concept_embeddings).T.contiguous()
        self.concepts, self.logit_scale = list(concepts), float(logit_scale)

    @torch.inference_mode()
    def concept_activations(self, x: torch.Tensor) -> torch.Tensor:
        return self.logit_scale * (x @ self.concepts_t)
