"""The concept bottleneck model of the paper (section 4.3), on cached CLIP embeddings.

psi(x) = CLIP's logit scale x cos(image, concept_j) for every concept (CLIP's
``logits_per_image``), computed per batch from the caches: the backbone never runs.
CBL = Linear(|D|, |D|, bias=False); FC = Linear(|D|, |C|, bias=False).
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class ConceptBottleneck(nn.Module):
    def __init__(self, concept_embeddings: np.ndarray | torch.Tensor, num_classes: int, logit_scale: float):
        super().__init__()
        concepts = torch.as_tensor(np.asarray(concept_embeddings, dtype=np.float32))
        self.register_buffer("concepts", F.normalize(concepts, dim=1))  # (|D|, d), unit rows
        self.logit_scale = float(logit_scale)
        n = concepts.shape[0]
        self.cbl = nn.Linear(n, n, bias=False)
        self.fc = nn.Linear(n, num_classes, bias=False)

    @property
    def num_concepts(self) -> int:
        return self.concepts.shape[0]

    def concept_scores(self, image_embeddings: torch.Tensor) -> torch.Tensor:
        """psi: logit_scale x cos(image, concept), (|B|, |D|)."""
        return self.logit_scale * F.normalize(image_embeddings.float(), dim=1) @ self.concepts.T

    def forward(self, image_embeddings: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(S, class logits): S = CBL(psi), logits = FC(S)."""
        S = self.cbl(self.concept_scores(image_embeddings))
        return S, self.fc(S)
