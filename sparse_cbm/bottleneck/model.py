"""The concept bottleneck model of the paper (section 4.3), on cached CLIP embeddings.

psi(x) = CLIP's logit scale x cos(image, concept_j) for every concept (CLIP's
``logits_per_image``), computed per batch from the caches: the backbone never runs.
CBL = Linear(|D|, |D|, bias=False); FC = Linear(|D|, |C|, bias=False).

``forward`` returns all three stages of a pass (``BottleneckOutput``): the CLIP
concept scores, the CBL activations and the class logits, so no caller rewrites
the pass to get at the middle of it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class BottleneckOutput(NamedTuple):
    scores: torch.Tensor  # psi: logit_scale x cos(image, concept), (B, |D|)
    activations: torch.Tensor  # S = CBL(psi), (B, |D|): the bottleneck, one unit per concept
    logits: torch.Tensor  # FC(S), (B, |C|)


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

    @property
    def num_classes(self) -> int:
        return self.fc.weight.shape[0]

    def concept_scores(self, image_embeddings: torch.Tensor) -> torch.Tensor:
        """psi: logit_scale x cos(image, concept), (|B|, |D|)."""
        return self.logit_scale * F.normalize(image_embeddings.float(), dim=1) @ self.concepts.T

    def forward(self, image_embeddings: torch.Tensor, ce_to_cbl: bool = True) -> BottleneckOutput:
        """psi, S = CBL(psi) and the logits FC(S). With ``ce_to_cbl=False`` the FC sees S detached,
        so a loss on the logits trains the FC only (the sequential bottleneck)."""
        psi = self.concept_scores(image_embeddings)
        S = self.cbl(psi)
        return BottleneckOutput(psi, S, self.fc(S if ce_to_cbl else S.detach()))
