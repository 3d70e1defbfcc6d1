"""gumbel: the contrastive objective on Gumbel-perturbed logits (the paper's eq. 10), in two forms:
``paper`` (eq. 10) and ``released`` (the authors' ``criterion_gumbel``), with soft or hard samples.

See docs/methods.md#gumbel. The released form with hard samples is refused with an error (their
code returns inf for every batch) rather than given a loss of our own.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F

from sparse_cbm.bottleneck.objectives import register
from sparse_cbm.bottleneck.objectives.contrastive import diagonal_cross_entropy

RELEASED_HARD_ERROR = ("train.gumbel.hard: true with train.gumbel.objective: released is undefined: the authors' "
                       "code takes -log of the zeros of a one-hot sample and returns inf for every batch. Use "
                       "hard: false, or objective: paper (whose hard form is a straight-through 0-1 loss).")
FAITHFUL_RELEASED_ERROR = ("train.form: faithful pairs CBL output m with concept m, and the released Gumbel objective "
                           "has no targets to pair: with loss gumbel use train.gumbel.objective: paper.")


def sample_gumbel(shape, generator: Optional[torch.Generator] = None, device=None) -> torch.Tensor:
    """i.i.d. Gumbel(0, 1) noise: -log(-log U), U ~ Uniform(0, 1), computed in place (on a CPU,
    torch draws uniforms about 5x faster than exponentials), on ``generator``'s device, then moved to
    ``device``. Training hands a CPU generator whatever its device, so that a seed draws the same noise
    on a GPU as on a CPU: CUDA's Philox stream is not the CPU's Mersenne Twister, and a Gumbel run
    on a GPU otherwise trains on another seed's noise (bench/device.py saw it move the compare grid)."""
    where = generator.device if generator is not None else device
    u = torch.rand(shape, generator=generator, device=where)
    u = u.clamp_min_(torch.finfo(u.dtype).tiny).log_().neg_().log_().neg_()
    return u if device is None else u.to(device)


def gumbel_contrastive_loss(S: torch.Tensor, alpha: float, tau: float, hard: bool = False,
                            noise: Optional[torch.Tensor] = None,
                            generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Eq. 10: the contrastive loss on (alpha * S + G) / tau (pass ``noise`` to fix G)."""
    if noise is None:
        noise = sample_gumbel(S.shape, generator, S.device)
    logits = (alpha * S + noise) / tau
    if not hard:
        return diagonal_cross_entropy(logits)
    k = min(logits.shape)
    idx = torch.arange(k, device=S.device)
    total = []
    for z in (logits[:k], logits[:, :k].T):
        soft = z.softmax(dim=1)
        one_hot = F.one_hot(soft.argmax(dim=1), z.shape[1]).to(soft.dtype)
        sample = one_hot - soft.detach() + soft
        total.append(1.0 - sample[idx, idx].mean())
    return (total[0] + total[1]) / 2


def gumbel_released_loss(S: torch.Tensor, tau: float, hard: bool = False,
                         noise: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
                         generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """The authors' ``criterion_gumbel``: 1/2 [mean -log softmax((S + G0) / tau, batch axis) +
    mean -log softmax((S + G1) / tau, concept axis)], G0 and G1 independent (pass ``noise=(G0, G1)``
    to fix them). No alpha. ``hard=True`` raises (their code returns inf; see the module docstring)."""
    if hard:
        raise ValueError(RELEASED_HARD_ERROR)
    if noise is None:
        noise = (sample_gumbel(S.shape, generator, S.device), sample_gumbel(S.shape, generator, S.device))
    g0, g1 = noise
    over_batch = -F.log_softmax((S + g0) / tau, dim=0).mean()
    over_concepts = -F.log_softmax((S + g1) / tau, dim=1).mean()
    return (over_batch + over_concepts) / 2


def faithful_gumbel_loss(S: torch.Tensor, psi: torch.Tensor, units: torch.Tensor, alpha: float, tau: float,
                         generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Eq. 10 with the faithful pairing: the cross-entropy of (alpha x cos(unit m, concept n) + G) / tau,
    targets m <-> units[m], one Gumbel draw per entry shared by both directions."""
    from sparse_cbm.bottleneck.objectives.contrastive import paired_cross_entropy, unit_concept_similarity

    logits = alpha * unit_concept_similarity(S, psi)
    noise = sample_gumbel(logits.shape, generator, logits.device)
    return paired_cross_entropy((logits + noise) / tau, units)


def _paper(out, ctx) -> torch.Tensor:
    g = ctx.params.gumbel
    if ctx.params.form == "faithful":
        if g.hard:
            raise ValueError("train.gumbel.hard is not built for train.form: faithful; use hard: false.")
        return faithful_gumbel_loss(out.activations, out.scores.detach(), ctx.model.units,
                                    math.exp(ctx.params.log_alpha), ctx.tau, ctx.generator)
    return gumbel_contrastive_loss(out.activations, math.exp(ctx.params.log_alpha), ctx.tau, hard=g.hard,
                                   generator=ctx.generator)


def _released(out, ctx) -> torch.Tensor:
    if ctx.params.form == "faithful":
        raise ValueError(FAITHFUL_RELEASED_ERROR)
    return gumbel_released_loss(out.activations, ctx.tau, hard=ctx.params.gumbel.hard, generator=ctx.generator)


GUMBEL_FORMS: Dict[str, Callable] = {"paper": _paper, "released": _released}


def gumbel_form(name: str) -> Callable:
    """The Gumbel objective called ``name`` (train.gumbel.objective); a ValueError naming the forms otherwise."""
    try:
        return GUMBEL_FORMS[name]
    except KeyError:
        raise ValueError(f"unknown train.gumbel.objective {name!r}; use one of: {', '.join(GUMBEL_FORMS)}") from None


@register("gumbel", ce_to_cbl=False, summary="contrastive loss on Gumbel-perturbed logits at temperature τ "
                                              "(eq. 10), or the authors' released form")
def gumbel_objective(out, ctx) -> torch.Tensor:
    return gumbel_form(ctx.params.gumbel.objective)(out, ctx)


def _linear(t: float, start: float, end: float) -> float:
    return start + (end - start) * t


def _exponential(t: float, start: float, end: float) -> float:
    return start * (end / start) ** t


def _cosine(t: float, start: float, end: float) -> float:
    return end + (start - end) * (1 + math.cos(math.pi * t)) / 2


TAU_SCHEDULES: Dict[str, Callable[[float, float, float], float]] = {
    "constant": lambda t, start, end: start, "linear": _linear, "exponential": _exponential, "cosine": _cosine}


def tau_at(step: int, total_steps: int, start: float, end: float, schedule: str) -> float:
    """Gumbel temperature at ``step`` of ``total_steps``: ``start`` at step 0, ``end`` at the last
    (``constant`` stays at ``start``)."""
    if schedule not in TAU_SCHEDULES:
        raise ValueError(f"unknown tau schedule {schedule!r}; use one of: {', '.join(TAU_SCHEDULES)}")
    if total_steps <= 1:
        return start if schedule == "constant" else end
    t = min(max(step / (total_steps - 1), 0.0), 1.0)
    return TAU_SCHEDULES[schedule](t, start, end)
