"""The bottleneck's final layer, dense or sparse, and NEC, its sparsity.

``DenseLayer``: the paper's final layer, logits = W S, trained with the CBL.
``StandardizedLinear``: logits = W (S - mean) / std + b, the sparse final layer fitted on the
standardised activations (``sparse_layer.fit_sparse_path``); the path's points, the model's ``fc``
and the spatial bottleneck's ``fc`` are all this one class. See
docs/methods.md#two-final-layers-dense-and-sparse.
"""

from __future__ import annotations

import math
from typing import Dict, Tuple

import numpy as np
import torch
from torch import nn


def nec(weight: torch.Tensor) -> float:
    """Number of effective concepts: non-zero weights per class of a (C, D) weight (VLG-CBM counts
    |w| > 1e-5; glm-saga's proximal step gives exact zeros)."""
    return int(torch.count_nonzero(weight)) / weight.shape[0]


class DenseLayer(nn.Linear):
    """The paper's final layer: logits = W S, no bias."""

    def __init__(self, units: int, num_classes: int):
        super().__init__(units, num_classes, bias=False)

    def contributions(self, activations: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """W[c, m] * a_m: they sum to the logit of c."""
        return self.weight[classes] * activations


class StandardizedLinear(nn.Module):
    """logits = W (S - mean) / std + b: the sparse final layer, fitted on standardised activations.

    ``weight`` (C, D) and ``bias`` (C,) are parameters; ``mean`` and ``std`` (D,), the train
    activations' mean and sample standard deviation (n - 1; 1 where it is 0), buffers. All float32."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(torch.as_tensor(weight, dtype=torch.float32).clone())
        self.bias = nn.Parameter(torch.as_tensor(bias, dtype=torch.float32).clone())
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).clone())
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).clone())

    @classmethod
    def empty(cls, units: int, num_classes: int) -> "StandardizedLinear":
        return cls(torch.zeros(num_classes, units), torch.zeros(num_classes), torch.zeros(units), torch.ones(units))

    @classmethod
    def from_state_dict(cls, state: Dict[str, torch.Tensor]) -> "StandardizedLinear":
        """The layer of a ``state_dict()`` (weight, bias, mean, std), its shapes checked."""
        t = {k: torch.as_tensor(state[k], dtype=torch.float32) for k in ("weight", "bias", "mean", "std")}
        c, d = t["weight"].shape
        if t["bias"].shape != (c,) or t["mean"].shape != (d,) or t["std"].shape != (d,):
            raise ValueError(f"inconsistent sparse layer shapes: weight {tuple(t['weight'].shape)}, bias "
                             f"{tuple(t['bias'].shape)}, mean {tuple(t['mean'].shape)}, std {tuple(t['std'].shape)}")
        return cls(**t)

    def standardize(self, activations: torch.Tensor) -> torch.Tensor:
        return (activations - self.mean) / self.std

    def forward(self, activations: torch.Tensor) -> torch.Tensor:
        """(B, C) class logits of (B, D) activations."""
        return self.standardize(activations) @ self.weight.T + self.bias

    def contributions(self, activations: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """W[c, m] * (a_m - mean_m) / std_m: they sum to the logit of c minus its bias."""
        return self.weight[classes] * self.standardize(activations)

    @property
    def num_classes(self) -> int:
        return self.weight.shape[0]

    @property
    def nec(self) -> float:
        """Number of effective concepts: non-zero weights per class."""
        return nec(self.weight)

    @torch.no_grad()
    def class_concepts(self, c: int) -> np.ndarray:
        """Indices of the concepts with a non-zero weight for class c, largest |weight| first."""
        w = self.weight[c]
        idx = torch.nonzero(w).flatten()
        return idx[w[idx].abs().argsort(descending=True)].numpy()

    @torch.no_grad()
    def folded(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """(weight, bias) of the same layer on raw activations: W / std and b - (W / std) @ mean."""
        w = self.weight / self.std
        return w, self.bias - w @ self.mean

    @torch.no_grad()
    def truncated(self, target_nec: float) -> "StandardizedLinear":
        """VLG-CBM's ``weight_truncation``: keep the round(target_nec * C) largest |weights| (all the
        weights tied with the smallest kept one), zero the others; no refit."""
        keep = int(round(target_nec * self.num_classes))
        flat = self.weight.flatten().abs()
        if keep >= int((flat > 0).sum()):
            return self
        threshold = flat.sort(descending=True).values[keep - 1] if keep > 0 else math.inf
        w = torch.where(self.weight.abs() >= threshold, self.weight, torch.zeros_like(self.weight))
        return StandardizedLinear(w, self.bias.clone(), self.mean, self.std)
