"""The bottleneck objectives of the Sparse-CBM paper (Semenov et al., arXiv 2404.03323).

Each takes ``S``, the CBL output for a batch (|B| x |D|: images x concepts), and
returns a scalar. ``alpha`` is the contrastive scale exp(alpha~) (alpha~ = 2.659 by
default, CLIP's initial logit scale).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

DEFAULT_LOG_ALPHA = 2.659


def l1_penalty(weight: torch.Tensor, lam: float) -> torch.Tensor:
    """lambda / |D| * ||W_CBL||_1 (eq. 11): |D| is the number of rows of the CBL weight."""
    return lam / weight.shape[0] * weight.abs().sum()


def _diagonal_cross_entropy(logits: torch.Tensor) -> torch.Tensor:
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
    return _diagonal_cross_entropy(alpha * S)


def sample_gumbel(shape, generator: Optional[torch.Generator] = None, device=None) -> torch.Tensor:
    """i.i.d. Gumbel(0, 1) noise: -log(-log U), U ~ Uniform(0, 1), computed in place (on a CPU,
    torch draws uniforms about 5x faster than exponentials)."""
    u = torch.rand(shape, generator=generator, device=device)
    return u.clamp_min_(torch.finfo(u.dtype).tiny).log_().neg_().log_().neg_()


def gumbel_contrastive_loss(S: torch.Tensor, alpha: float, tau: float, hard: bool = False,
                            noise: Optional[torch.Tensor] = None,
                            generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Eq. 10: the contrastive loss on (alpha * S + G) / tau, one Gumbel(0, 1) draw per entry
    of the logit matrix, the same G for both directions (pass ``noise`` to fix G).

    Eq. 10's log(alpha <w, phi>) is read as the log-probabilities of the logits
    alpha <w, phi>; inside the softmax that is the same thing.

    ``hard=True`` uses straight-through one-hot samples: the forward value is the share
    of rows and columns whose one-hot Gumbel sample misses its diagonal target (a 0-1
    loss, since the log of a one-hot is not finite), the backward pass the gradient of
    minus the soft sample's probability of the target.
    """
    if noise is None:
        noise = sample_gumbel(S.shape, generator, S.device)
    logits = (alpha * S + noise) / tau
    if not hard:
        return _diagonal_cross_entropy(logits)
    k = min(logits.shape)
    idx = torch.arange(k, device=S.device)
    total = []
    for z in (logits[:k], logits[:, :k].T):
        soft = z.softmax(dim=1)
        one_hot = F.one_hot(soft.argmax(dim=1), z.shape[1]).to(soft.dtype)
        sample = one_hot - soft.detach() + soft
        total.append(1.0 - sample[idx, idx].mean())
    return (total[0] + total[1]) / 2


def gumbel_released_loss(S: torch.Tensor, alpha: float, tau: float, hard: bool = False,
                         noise: Optional[torch.Tensor] = None,
                         generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """The objective in the authors' released code: the mean of -log over all entries of the
    Gumbel-softmax of (alpha * S + G) / tau along the concepts, with no diagonal targets."""
    if noise is None:
        noise = sample_gumbel(S.shape, generator, S.device)
    z = (alpha * S + noise) / tau
    if not hard:
        return -F.log_softmax(z, dim=1).mean()
    soft = z.softmax(dim=1)
    sample = F.one_hot(soft.argmax(dim=1), S.shape[1]).to(soft.dtype) - soft.detach() + soft
    return -torch.log(sample.clamp_min(1e-12)).mean()


def tau_at(step: int, total_steps: int, start: float, end: float, schedule: str) -> float:
    """Gumbel temperature at ``step`` of ``total_steps``: ``start`` at step 0, ``end`` at the last."""
    if total_steps <= 1:
        return end
    t = min(max(step / (total_steps - 1), 0.0), 1.0)
    if schedule == "constant":
        return start
    if schedule == "linear":
        return start + (end - start) * t
    if schedule == "exponential":
        return start * (end / start) ** t
    if schedule == "cosine":
        return end + (start - end) * (1 + math.cos(math.pi * t)) / 2
    raise ValueError(f"unknown tau schedule {schedule!r}; use constant, linear, exponential or cosine")
