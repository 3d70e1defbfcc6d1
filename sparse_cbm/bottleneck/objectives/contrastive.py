"""contrastive: CLIP's symmetric cross-entropy on the CBL output (the paper's eq. 8).

See docs/methods.md#contrastive."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from sparse_cbm.bottleneck.objectives import register


def diagonal_cross_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Symmetric cross-entropy with diagonal targets over the first k = min(|B|, |D|) pairs:
    image i should pick concept i among all concepts, and concept i image i among all images."""
    k = min(logits.shape)
    target = torch.arange(k, device=logits.device)
    images = F.cross_entropy(logits[:k], target)  # rows: over the |D| concepts
    concepts = F.cross_entropy(logits[:, :k].T, target)  # columns: over the |B| images
    return (images + concepts) / 2


def contrastive_loss(S: torch.Tensor, alpha: float) -> torch.Tensor:
    """Eq. 8: CLIP's symmetric cross-entropy on the logits alpha * S.

    The paper writes it for |D| = |B|, with targets on the diagonal. For a rectangular S
    the targets are the diagonal of its leading k x k block, k = min(|B|, |D|): row i
    (i < k) is a softmax over all |D| columns with target i, column i a softmax over all
    |B| rows with target i; rows and columns beyond k are only negatives.
    """
    return diagonal_cross_entropy(alpha * S)


def unit_concept_similarity(S: torch.Tensor, psi: torch.Tensor) -> torch.Tensor:
    """(units, |D|): cosine, across the batch, between each CBL unit's centred outputs and each concept's
    centred CLIP scores: the logits of the faithful forms, whose targets pair unit m with its concept."""
    s = S - S.mean(dim=0, keepdim=True)
    p = psi - psi.mean(dim=0, keepdim=True)
    s = s / torch.linalg.vector_norm(s, dim=0, keepdim=True).clamp_min(1e-12)
    p = p / torch.linalg.vector_norm(p, dim=0, keepdim=True).clamp_min(1e-12)
    return s.T @ p


def paired_cross_entropy(logits: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
    """Symmetric cross-entropy with targets unit k <-> concept units[k] (logits: units x |D|): each unit
    should pick its concept among all concepts, and each unit's concept its unit among all units."""
    rows = F.cross_entropy(logits, units)
    cols = F.cross_entropy(logits[:, units].T, torch.arange(len(units), device=logits.device))
    return (rows + cols) / 2


def faithful_contrastive_loss(S: torch.Tensor, psi: torch.Tensor, units: torch.Tensor, alpha: float) -> torch.Tensor:
    """Eq. 8 with the faithful pairing: the symmetric cross-entropy of alpha x cos(unit m, concept n) across
    the batch, targets m <-> units[m] (instead of image i <-> concept i)."""
    return paired_cross_entropy(alpha * unit_concept_similarity(S, psi), units)


@register("contrastive", ce_to_cbl=False, summary="symmetric cross-entropy of α·S with diagonal targets (eq. 8), "
                                                   "α = exp(train.log_alpha)")
def contrastive_objective(out, ctx) -> torch.Tensor:
    alpha = math.exp(ctx.params.log_alpha)
    if ctx.params.form == "faithful":
        return faithful_contrastive_loss(out.activations, out.scores.detach(), ctx.model.units, alpha)
    return contrastive_loss(out.activations, alpha)
