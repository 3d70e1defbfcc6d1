"""Eq. 1 over all N, streamed (``spatial.full_batch``): the same loss and gradient as autograd on the
whole batch in memory, whatever the chunks."""

import numpy as np
import pytest
import torch

from sparse_cbm.bottleneck.objectives.cos3 import cos_cubed_similarity
from sparse_cbm.spatial.full_batch import chunk_bounds, full_batch_cos3_backward


def problem(n=37, inputs=5, columns=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, inputs, generator=g, dtype=torch.float64)
    p = torch.randn(n, columns, generator=g, dtype=torch.float64) + x[:, :1]  # P related to the inputs
    layer = torch.nn.Linear(inputs, columns, bias=False).double()
    return x, p, layer


@pytest.mark.parametrize("size", [1, 5, 37])
def test_the_streamed_gradient_is_autograds_on_the_whole_batch(size):
    x, p, layer = problem()
    loss = -cos_cubed_similarity(layer(x), p).mean()
    loss.backward()
    expected = layer.weight.grad.clone()
    layer.weight.grad = None
    bounds = chunk_bounds(len(x), size)
    assert bounds[0][0] == 0 and bounds[-1][1] == len(x) and all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    cos = full_batch_cos3_backward(lambda i, grad: (layer(x[slice(*bounds[i])]) if grad else
                                                    layer(x[slice(*bounds[i])]).detach(), p[slice(*bounds[i])]),
                                   len(bounds))
    assert float(-cos.mean()) == pytest.approx(float(loss.detach()), abs=1e-12)
    torch.testing.assert_close(layer.weight.grad, expected, rtol=1e-9, atol=1e-12)


def test_centring_over_all_n_is_not_centring_per_chunk():
    # the term through the mean matters: per-chunk centring (what a mini-batch step does) gives another gradient
    x, p, layer = problem(seed=1)
    bounds = chunk_bounds(len(x), 8)
    full_batch_cos3_backward(lambda i, grad: (layer(x[slice(*bounds[i])]), p[slice(*bounds[i])]), len(bounds))
    streamed = layer.weight.grad.clone()
    layer.weight.grad = None
    for lo, hi in bounds:
        (-cos_cubed_similarity(layer(x[lo:hi]), p[lo:hi]).mean()).backward()
    assert not torch.allclose(streamed, layer.weight.grad, rtol=1e-3)
    assert np.isfinite(streamed.numpy()).all()
