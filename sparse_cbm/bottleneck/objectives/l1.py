"""l1: cross-entropy plus a sparsity penalty on the CBL's weights (the paper's eq. 11).

See docs/methods.md#l1 (and #two-forms-paper-and-faithful for the penalty on W - I)."""

from __future__ import annotations

import torch

from sparse_cbm.bottleneck.objectives import register


def l1_penalty(weight: torch.Tensor, lam: float) -> torch.Tensor:
    """lambda / |D| * ||W_CBL||_1 (eq. 11): |D| is the number of rows of the CBL weight."""
    return lam / weight.shape[0] * weight.abs().sum()


@register("l1", ce_to_cbl=True, summary="CE + λ/|D|·‖W_CBL‖₁ (eq. 11); the cross-entropy must reach W_CBL, "
                                        "or the penalty alone drives it to zero")
def l1_objective(out, ctx) -> torch.Tensor:
    weight = ctx.model.cbl.weight
    if ctx.params.form == "faithful":  # anchored at the identity: lambda/|D| ||W - I||_1
        anchor = torch.zeros_like(weight)
        anchor[torch.arange(len(ctx.model.units)), ctx.model.units] = 1.0
        weight = weight - anchor
    return l1_penalty(weight, ctx.params.l1_lambda)
