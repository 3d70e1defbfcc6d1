"""Sparsity measures of concept activations and weights.

- ``concepts_for_mass(A, 0.9)``: per image, the number of concepts that together carry
  90% of its total |activation| (the largest first); lower is sparser, 1 is a single concept.
- ``fraction_below(A, t)``: the share of entries whose |value| is below ``t`` x the largest |value|
  of their row.
"""

from __future__ import annotations

import torch


def concepts_for_mass(activations: torch.Tensor, mass: float = 0.9) -> torch.Tensor:
    """Per row: how many of the largest |entries| it takes to reach ``mass`` of the row's total."""
    a = activations.abs().float()
    top = a.sort(dim=1, descending=True).values
    share = top.cumsum(dim=1) / top.sum(dim=1, keepdim=True).clamp_min(1e-12)
    return (share < mass).sum(dim=1) + 1


def fraction_below(values: torch.Tensor, threshold: float = 0.01) -> float:
    """Share of entries with |value| < threshold x their row's largest |value|."""
    a = values.abs().float()
    return float((a < threshold * a.max(dim=1, keepdim=True).values).float().mean())
