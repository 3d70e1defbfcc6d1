"""contrastive: CLIP's symmetric cross-entropy on the CBL output (the paper's eq. 8)."""

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


@register("contrastive", ce_to_cbl=False, summary="symmetric cross-entropy of α·S with diagonal targets (eq. 8), "
                                                   "α = exp(train.log_alpha)")
def contrastive_objective(out, ctx) -> torch.Tensor:
    return contrastive_loss(out.activations, math.exp(ctx.params.log_alpha))
