"""Our SAGA loop against glm-saga's, the reference: the same iterates step by step, the same path."""

import contextlib
import io

import pytest
import torch
from torch import nn

from sparse_cbm.bottleneck.saga import train_saga
from sparse_cbm.bottleneck.saga_rows import BlockLoader
from sparse_cbm.bottleneck.glm_saga_calls import non_negative_prox
from sparse_cbm.bottleneck.sparse_layer import Standardised, fit_sparse_path
from tests.unit.bottleneck.test_sparse_layer import identity, multinomial_problem


class OneBatch:
    """A loader of one given (X, y, idx) batch: one call of train_saga with nepochs=1 is one step."""

    def __init__(self, batch):
        self.batch = batch

    def __iter__(self):
        yield self.batch


def run(saga, linear, batch, state, lam, alpha, **kw):
    with contextlib.redirect_stdout(io.StringIO()):
        return saga(linear, OneBatch(batch), torch.tensor(0.1), 1, torch.tensor(lam), alpha, group=False, state=state,
                    n_ex=kw.pop("n_ex"), n_classes=4, tol=0.0, **kw)


@pytest.mark.filterwarnings("ignore:Implicit dimension choice for softmax")
@pytest.mark.parametrize("alpha, nonneg", [(0.99, False), (1.0, False), (0.9, True)])
def test_every_step_matches_glm_saga(alpha, nonneg):
    from glm_saga.elasticnet import train_saga as reference

    x, y = multinomial_problem(n=320, d=12)
    # raw embeddings in, standardised by the preprocess hook, as the sparse layer runs it
    pre = Standardised(identity, torch.from_numpy(x.mean(0)), torch.from_numpy(x.std(0)))
    loader = BlockLoader(x, y, 32, shuffle=True, seed=1)
    linears = [nn.Linear(12, 4), nn.Linear(12, 4)]
    for layer in linears:
        layer.weight.data.zero_()
        layer.bias.data.zero_()
    states = [None, None]
    with non_negative_prox(nonneg):
        for epoch in range(3):
            for batch in loader:
                for k, saga in enumerate((reference, train_saga)):
                    states[k] = run(saga, linears[k], batch, states[k], 0.01, alpha, n_ex=len(y), preprocess=pre)
                ours, ref = linears[1], linears[0]
                assert torch.allclose(ours.weight, ref.weight, atol=1e-5), (epoch, batch[2][0])
                assert torch.allclose(ours.bias, ref.bias, atol=1e-5)
                for key in ("a_table", "w_grad_avg", "b_grad_avg"):
                    assert torch.allclose(states[1][key], states[0][key], atol=1e-5), key
    assert (linears[1].weight != 0).sum() < linears[1].weight.numel()  # the l1 step did zero some weights
    if nonneg:
        assert bool((linears[1].weight >= 0).all())


def test_the_whole_path_matches_glm_sagas():
    x, y = multinomial_problem()
    kw = dict(alpha=0.99, path_points=6, epsilon=0.05, max_epochs=20, batch_size=64, seed=0)
    fast = fit_sparse_path(identity, (x, y), (x[:100], y[:100]), 4, solver="fast", **kw)
    reference = fit_sparse_path(identity, (x, y), (x[:100], y[:100]), 4, solver="glm-saga", **kw)
    # the same NEC at every point (within one weight in 4 classes: a weight at the threshold may round either way)
    assert all(abs(a.nec - b.nec) <= 0.25 for a, b in zip(fast.points, reference.points))
    assert len(fast.points) == len(reference.points)
    assert [p.converged for p in fast.points] == [p.converged for p in reference.points]
    for a, b in zip(fast.points, reference.points):
        assert torch.allclose(a.weight, b.weight, atol=1e-4) and torch.allclose(a.bias, b.bias, atol=1e-4)
        assert a.train_top1 == pytest.approx(b.train_top1, abs=2e-3)


def test_the_loop_refuses_what_it_does_not_implement():
    linear = nn.Linear(3, 2)
    batch = (torch.randn(4, 3), torch.tensor([0, 1, 0, 1]), torch.arange(4))
    with pytest.raises(ValueError, match="multinomial family only"):
        train_saga(linear, OneBatch(batch), 0.1, 1, 0.01, 0.99, family="gaussian", n_ex=4, n_classes=2)
    with pytest.raises(ValueError, match="use train.sparse.solver glm-saga"):
        train_saga(linear, OneBatch((*batch[:2], torch.ones(4), batch[2])), 0.1, 1, 0.01, 0.99, n_ex=4, n_classes=2)


def test_an_unknown_solver_is_named():
    x, y = multinomial_problem(n=40)
    with pytest.raises(ValueError, match="solver must be one of fast, glm-saga"):
        fit_sparse_path(identity, (x, y), None, 4, solver="sklearn", path_points=2)


@pytest.mark.parametrize("alpha", [1.0, 0.9])
@pytest.mark.parametrize("nonneg", [False, True])
@pytest.mark.parametrize("as_tensors", [False, True])  # glm_saga passes lr and lam as 0-dim float32 tensors
def test_the_fused_proximal_step_gives_glm_sagas_bits(alpha, nonneg, as_tensors):
    import glm_saga.elasticnet as glm

    from sparse_cbm.bottleneck.saga import _prox

    torch.manual_seed(0)
    v = torch.randn(50, 41)  # not a multiple of the vector width: the kernels' scalar tails run too
    v[0, :4] = torch.tensor([0.05, -0.05, 0.0, 0.0499])  # on and beside the threshold t = lr * lam * alpha
    v[-1, -3:] = torch.tensor([-0.01, -0.0, 0.02])  # the last elements, inside the threshold
    lr, lam = 0.1, 0.5 / alpha
    if as_tensors:
        lr, lam = torch.tensor(lr), torch.tensor(lam)
    with non_negative_prox(nonneg):
        op = glm.soft_threshold if alpha == 1 else glm.soft_threshold_with_shrinkage
        args = (lr * lam * alpha,) if alpha == 1 else (lr * lam * alpha, lr * lam * (1 - alpha))
        expected = op(v.clone(), *args)
        got = _prox(v.clone(), lr, lam, alpha, group=False)
    assert torch.equal(got.view(torch.int32), expected.view(torch.int32))  # bit for bit, the sign of zero too
    assert 0 < int((got == 0).sum()) < got.numel()
    if nonneg:
        assert bool((got >= 0).all())


@pytest.mark.parametrize("alpha", [1.0, 0.9])
def test_an_operator_patched_in_by_someone_else_is_called_as_glm_saga_calls_it(monkeypatch, alpha):
    import glm_saga.elasticnet as glm

    from sparse_cbm.bottleneck.saga import _prox

    calls = []
    # glm-saga's shrink form calls soft_threshold by name: patching that one alone must reach it too
    monkeypatch.setattr(glm, "soft_threshold", lambda beta, lam: calls.append(lam) or beta * 0 + 7)
    out = _prox(torch.ones(3, 2), 0.1, 0.2, alpha, group=False)
    assert torch.allclose(out, torch.full((3, 2), 7 / (1 + 0.1 * 0.2 * (1 - alpha))))
    assert calls == [pytest.approx(0.02 * alpha)]
