"""The concept bottleneck model of the paper (section 4.3), on cached CLIP embeddings:
psi (CLIP's concept scores) -> CBL -> final layer (``final_layer.DenseLayer``, or
``final_layer.StandardizedLinear``: the sparse layer's standardised activations, weights and bias).
See docs/methods.md#the-model.

``forward`` returns all three stages of a pass (``BottleneckOutput``), so no caller rewrites the
pass to get at the middle of it. ``units[k]`` is the concept index of CBL unit k: every concept by
default, fewer after cos3's interpretability cutoff.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sparse_cbm.bottleneck.final_layer import DenseLayer, StandardizedLinear


class BottleneckOutput(NamedTuple):
    scores: torch.Tensor  # psi: logit_scale x cos(image, concept), (B, |D|)
    activations: torch.Tensor  # S = CBL(psi), (B, units): the bottleneck, one unit per concept
    logits: torch.Tensor  # final layer (S), (B, |C|)


class ConceptBottleneck(nn.Module):
    def __init__(self, concept_embeddings: np.ndarray | torch.Tensor, num_classes: int, logit_scale: float,
                 units: Optional[Sequence[int]] = None, final_layer: str = "dense"):
        super().__init__()
        concepts = torch.as_tensor(np.asarray(concept_embeddings, dtype=np.float32))
        self.register_buffer("concepts", F.normalize(concepts, dim=1))  # (|D|, d), unit rows
        self.logit_scale = float(logit_scale)
        n = concepts.shape[0]
        index = torch.arange(n) if units is None else torch.as_tensor(list(units), dtype=torch.long)
        self.register_buffer("units", index)  # the concept each CBL output names
        self.cbl = nn.Linear(n, len(index), bias=False)
        self.fc = DenseLayer(len(index), num_classes) if final_layer == "dense" else \
            StandardizedLinear.empty(len(index), num_classes)

    @property
    def num_concepts(self) -> int:
        return self.concepts.shape[0]

    @property
    def num_classes(self) -> int:
        return self.fc.weight.shape[0]

    @torch.no_grad()
    def init_identity(self) -> None:
        """W_CBL = I (each output starts as its own concept's score): the faithful forms start here."""
        self.cbl.weight.zero_()
        self.cbl.weight[torch.arange(len(self.units)), self.units] = 1.0

    def concept_scores(self, image_embeddings: torch.Tensor) -> torch.Tensor:
        """psi: logit_scale x cos(image, concept), (|B|, |D|)."""
        return self.logit_scale * F.normalize(image_embeddings.float(), dim=1) @ self.concepts.T

    def forward(self, image_embeddings: torch.Tensor, ce_to_cbl: bool = True) -> BottleneckOutput:
        """psi, S = CBL(psi) and the logits FC(S). With ``ce_to_cbl=False`` the FC sees S detached,
        so a loss on the logits trains the FC only (the sequential bottleneck)."""
        psi = self.concept_scores(image_embeddings)
        S = self.cbl(psi)
        return BottleneckOutput(psi, S, self.fc(S if ce_to_cbl else S.detach()))

    @torch.no_grad()
    def keep_units(self, keep: torch.Tensor) -> None:
        """Drop the CBL output units not in ``keep`` (bool, one per unit), and their final-layer columns."""
        keep = torch.as_tensor(keep, dtype=torch.bool)
        self.units = self.units[keep]
        cbl = nn.Linear(self.cbl.in_features, int(keep.sum()), bias=False)
        cbl.weight.copy_(self.cbl.weight[keep])
        self.cbl = cbl
        if isinstance(self.fc, DenseLayer):
            fc = DenseLayer(int(keep.sum()), self.fc.out_features)
            fc.weight.copy_(self.fc.weight[:, keep])
            self.fc = fc
        else:
            self.fc = StandardizedLinear(self.fc.weight[:, keep], self.fc.bias, self.fc.mean[keep], self.fc.std[keep])
