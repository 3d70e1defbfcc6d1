"""cos3: Label-free CBM's objective (Oikarinen et al., ICLR 2023): CBL unit m should rise and fall
across the batch with CLIP's score of concept m (centred, cubed, cosine-compared).

See docs/methods.md#cos3.
"""

from __future__ import annotations

import torch

from sparse_cbm.bottleneck.objectives import register


def cos_cubed_similarity(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(units,) cos(centred(outputs[:, m])^3, centred(targets[:, m])^3) over the batch (dim 0)."""
    q = outputs - outputs.mean(dim=0, keepdim=True)
    p = targets - targets.mean(dim=0, keepdim=True)
    q, p = q ** 3, p ** 3
    q = q / torch.linalg.vector_norm(q, dim=0, keepdim=True).clamp_min(1e-12)
    p = p / torch.linalg.vector_norm(p, dim=0, keepdim=True).clamp_min(1e-12)
    return (q * p).sum(dim=0)


@register("cos3", ce_to_cbl=False, summary="Label-free CBM: −mean over units of cos(centred(S_m)³, centred(ψ_m)³) "
                                           "across the batch; an interpretability cutoff drops weak units")
def cos3_objective(out, ctx) -> torch.Tensor:
    targets = out.scores.detach()[:, ctx.model.units]
    return -cos_cubed_similarity(out.activations, targets).mean()
