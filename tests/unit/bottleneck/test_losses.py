"""Each objective against a direct transcription of its equation, values and gradients."""

import math

import pytest
import torch

import torch.nn.functional as F
from pydantic import ValidationError

from sparse_cbm.bottleneck.config import TrainParams
from sparse_cbm.bottleneck.model import BottleneckOutput
from sparse_cbm.bottleneck.objectives import StepContext, get_objective
from sparse_cbm.bottleneck.objectives.contrastive import contrastive_loss
from sparse_cbm.bottleneck.objectives.gumbel import (gumbel_contrastive_loss, gumbel_form, gumbel_released_loss,
                                                     sample_gumbel, tau_at)
from sparse_cbm.bottleneck.objectives.l1 import l1_penalty

ALPHA = math.exp(2.659)


def transcribed_symmetric_ce(logits: torch.Tensor) -> torch.Tensor:
    """Eq. 8 written out: -1/2k sum_i [log e^{l_ii} / sum_j e^{l_ij} + log e^{l_ii} / sum_b e^{l_bi}]."""
    B, D = logits.shape
    k = min(B, D)
    total = 0.0
    for i in range(k):
        row = sum(torch.exp(logits[i, j]) for j in range(D))
        col = sum(torch.exp(logits[b, i]) for b in range(B))
        total = total - torch.log(torch.exp(logits[i, i]) / row) - torch.log(torch.exp(logits[i, i]) / col)
    return total / (2 * k)


def value_and_grad(fn, S):
    S = S.clone().requires_grad_(True)
    value = fn(S)
    value.backward()
    return value.detach(), S.grad


@pytest.mark.parametrize("shape", [(5, 5), (3, 7), (8, 4)])
def test_contrastive_matches_eq_8(shape):
    S = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 0.1
    v, g = value_and_grad(lambda s: contrastive_loss(s, ALPHA), S)
    rv, rg = value_and_grad(lambda s: transcribed_symmetric_ce(ALPHA * s), S)
    assert torch.allclose(v, rv) and torch.allclose(g, rg)


@pytest.mark.parametrize("shape", [(6, 6), (4, 9), (9, 4)])
def test_gumbel_matches_eq_10_with_one_draw_for_both_directions(shape):
    gen = torch.Generator().manual_seed(2)
    S = torch.randn(shape, dtype=torch.float64, generator=gen) * 0.1
    G = sample_gumbel(shape, gen).double()
    tau = 0.7
    v, g = value_and_grad(lambda s: gumbel_contrastive_loss(s, ALPHA, tau, noise=G), S)
    rv, rg = value_and_grad(lambda s: transcribed_symmetric_ce((ALPHA * s + G) / tau), S)
    assert torch.allclose(v, rv) and torch.allclose(g, rg)
    # without noise given, the draw comes from the generator: same seed, same value
    a = gumbel_contrastive_loss(S, ALPHA, tau, generator=torch.Generator().manual_seed(5))
    b = gumbel_contrastive_loss(S, ALPHA, tau, generator=torch.Generator().manual_seed(5))
    c = gumbel_contrastive_loss(S, ALPHA, tau, generator=torch.Generator().manual_seed(6))
    assert a == b and a != c


def test_hard_gumbel_is_a_straight_through_0_1_loss():
    gen = torch.Generator().manual_seed(3)
    S = torch.randn(5, 7, dtype=torch.float64, generator=gen)
    G = sample_gumbel((5, 7), gen).double()
    tau = 0.5
    logits = (ALPHA * S + G) / tau
    misses = ((logits[:5].argmax(1) != torch.arange(5)).double().mean()
              + (logits[:, :5].T.argmax(1) != torch.arange(5)).double().mean()) / 2
    v, g = value_and_grad(lambda s: gumbel_contrastive_loss(s, ALPHA, tau, hard=True, noise=G), S)
    assert torch.isclose(v, misses)

    def soft_surrogate(s):
        z = (ALPHA * s + G) / tau
        rows = z[:5].softmax(1)[torch.arange(5), torch.arange(5)].mean()
        cols = z[:, :5].T.softmax(1)[torch.arange(5), torch.arange(5)].mean()
        return -(rows + cols) / 2
    _, rg = value_and_grad(soft_surrogate, S)
    assert torch.allclose(g, rg)


def authors_criterion_gumbel(similarity, tau=1.0, hard=False):
    """SparseCBM's released ``criterion_gumbel`` (bottlenecks/cbm.py), transcribed: torch draws the noise."""
    def one_direction(logits, dim):
        return -torch.log(F.gumbel_softmax(logits, tau=tau, dim=dim, hard=hard)).mean()
    return (one_direction(similarity, 0) + one_direction(similarity, 1)) / 2.0


def test_released_objective_written_out_with_fixed_noise():
    gen = torch.Generator().manual_seed(4)
    S = torch.randn(4, 6, dtype=torch.float64, generator=gen)
    G0, G1 = sample_gumbel((4, 6), gen).double(), sample_gumbel((4, 6), gen).double()
    v, g = value_and_grad(lambda s: gumbel_released_loss(s, 0.8, noise=(G0, G1)), S)

    def written_out(s):
        z0, z1 = torch.exp((s + G0) / 0.8), torch.exp((s + G1) / 0.8)
        over_batch = z0 / z0.sum(dim=0, keepdim=True)  # softmax along the batch axis
        over_concepts = z1 / z1.sum(dim=1, keepdim=True)  # ... and along the concept axis
        return (-torch.log(over_batch).sum() / s.numel() - torch.log(over_concepts).sum() / s.numel()) / 2
    rv, rg = value_and_grad(written_out, S)
    assert torch.allclose(v, rv) and torch.allclose(g, rg)


def test_released_objective_mean_over_draws_equals_the_authors_code():
    """Over many noise draws, E[ours] = E[criterion_gumbel] (alpha = 1: the training objective ignores
    train.log_alpha). Both means come with their standard errors; they must agree within 4 of them,
    and the one-axis objective we had before must not."""
    S = torch.randn(8, 12, generator=torch.Generator().manual_seed(0)) * 2
    draws = 4000
    torch.manual_seed(1)
    theirs = torch.stack([authors_criterion_gumbel(S, tau=0.7) for _ in range(draws)])
    gen = torch.Generator().manual_seed(2)
    p = TrainParams.model_validate({"log_alpha": 2.659, "form": "paper", "gumbel": {"objective": "released"}})
    ctx = StepContext(model=None, params=p, tau=0.7, generator=gen)
    out = BottleneckOutput(scores=None, activations=S, logits=None)
    ours = torch.stack([get_objective("gumbel").loss(out, ctx) for _ in range(draws)])
    se = float((theirs.var() / draws + ours.var() / draws).sqrt())
    assert abs(float(ours.mean() - theirs.mean())) < 4 * se
    one_axis = torch.stack([-F.log_softmax((S + sample_gumbel(S.shape, gen)) / 0.7, dim=1).mean()
                            for _ in range(draws)])
    assert abs(float(one_axis.mean() - theirs.mean())) > 10 * se


def test_released_hard_mode_is_refused_where_the_authors_code_returns_inf():
    S = torch.randn(4, 6)
    torch.manual_seed(0)
    assert torch.isinf(authors_criterion_gumbel(S, hard=True))
    with pytest.raises(ValueError, match="returns inf"):
        gumbel_released_loss(S, 1.0, hard=True)
    with pytest.raises(ValidationError, match="returns inf"):
        TrainParams.model_validate({"form": "paper", "gumbel": {"objective": "released", "hard": True}})


def test_unknown_gumbel_form_is_a_named_error_not_a_silent_fallback():
    with pytest.raises(ValueError, match="train.gumbel.objective 'relased'; use one of: paper, released"):
        gumbel_form("relased")
    with pytest.raises(ValidationError, match="'paper' or 'released'"):
        TrainParams.model_validate({"gumbel": {"objective": "relased"}})


def test_l1_penalty_is_lambda_over_d_times_the_l1_norm():
    W = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0], [2.0, 0.0, 0.0]], requires_grad=True)
    value = l1_penalty(W, 0.3)
    value.backward()
    assert torch.isclose(value, torch.tensor(0.3 / 3 * 9.5))
    assert torch.equal(W.grad, 0.1 * torch.sign(W.detach()))


@pytest.mark.parametrize("schedule", ["linear", "exponential", "cosine"])
def test_tau_schedules_start_and_end_where_asked(schedule):
    taus = [tau_at(s, 50, 2.0, 0.1, schedule) for s in range(50)]
    assert taus[0] == pytest.approx(2.0) and taus[-1] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(taus, taus[1:]))
    assert tau_at(10, 50, 2.0, 0.1, "constant") == 2.0
    assert tau_at(0, 1, 2.0, 0.1, "constant") == 2.0
    with pytest.raises(ValueError, match="unknown tau schedule"):
        tau_at(0, 5, 1.0, 0.5, "cubic")


def test_gumbel_noise_for_another_device_is_the_cpu_draw_moved():
    # the CPU values are -log(-log U) of the generator's uniforms, as before the change
    u = torch.rand((3, 4), generator=torch.Generator().manual_seed(9)).clamp_min(torch.finfo(torch.float32).tiny)
    expected = -(-u.log()).log()
    assert torch.equal(sample_gumbel((3, 4), torch.Generator().manual_seed(9)), expected)
    assert torch.equal(sample_gumbel((3, 4), torch.Generator().manual_seed(9), device="cpu"), expected)
    here, there = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    cpu = sample_gumbel((3, 4), here)
    moved = sample_gumbel((3, 4), there, device="meta")
    assert moved.device.type == "meta" and moved.shape == cpu.shape and moved.dtype == cpu.dtype
    # the same stream was consumed: the next draws agree
    assert torch.equal(torch.rand(5, generator=here), torch.rand(5, generator=there))
