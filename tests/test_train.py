"""Training on the planted-concept simulator: isolation of gradients, determinism, and that
every objective learns."""

import dataclasses

import numpy as np
import pytest
import torch

from sparse_cbm.model import ConceptBottleneck
from sparse_cbm.simulate import planted_world
from sparse_cbm.train import (OptimizerConfig, TrainConfig, batch_losses, evaluate_split, resolve_ce_to_cbl,
                              train_bottleneck)


@pytest.fixture(scope="module")
def world():
    w = planted_world(num_classes=10, num_concepts=60, concepts_per_class=4, dim=64, seed=0)
    return w, w.split(2000, 1), w.split(500, 2), w.split(500, 3)


def config(loss, **kw):
    base = dict(loss=loss, epochs=10, batch_size=64, ce_to_cbl=resolve_ce_to_cbl(loss, "auto"),
                cbl=OptimizerConfig(lr=1e-3), fc=OptimizerConfig(lr=1e-2))
    base.update(kw)
    return TrainConfig(**base)


def cbl_grad(model, x, y, cfg, with_ce):
    model.zero_grad()
    cbl_loss, ce, _ = batch_losses(model, x, y, cfg, 0.5, torch.Generator().manual_seed(0))
    (cbl_loss + ce if with_ce else cbl_loss).backward()
    return model.cbl.weight.grad.clone()


@pytest.mark.parametrize("loss", ["contrastive", "gumbel", "l1"])
def test_ce_reaches_w_cbl_only_when_asked(world, loss):
    w, (x, y, _), _, _ = world
    torch.manual_seed(0)
    model = ConceptBottleneck(w.concept_text, 10, 100.0)
    x, y = torch.from_numpy(x[:32]), torch.from_numpy(y[:32])
    off = config(loss, ce_to_cbl=False)
    assert torch.equal(cbl_grad(model, x, y, off, True), cbl_grad(model, x, y, off, False))
    on = config(loss, ce_to_cbl=True)
    assert not torch.allclose(cbl_grad(model, x, y, on, True), cbl_grad(model, x, y, on, False))


def test_defaults_follow_eq_11_for_l1_only():
    assert resolve_ce_to_cbl("l1", "auto") is True
    assert resolve_ce_to_cbl("contrastive", "auto") is False and resolve_ce_to_cbl("gumbel", "auto") is False
    assert resolve_ce_to_cbl("gumbel", True) is True


def test_same_seed_same_weights(world):
    w, train, val, _ = world
    cfg = config("gumbel", epochs=2)
    a = train_bottleneck(w.concept_text, 10, 100.0, train[:2], val[:2], cfg)
    b = train_bottleneck(w.concept_text, 10, 100.0, train[:2], val[:2], cfg)
    c = train_bottleneck(w.concept_text, 10, 100.0, train[:2], val[:2], dataclasses.replace(cfg, seed=1))
    for key, value in a.model.state_dict().items():
        assert torch.equal(value, b.model.state_dict()[key])
    assert not torch.equal(a.model.cbl.weight, c.model.cbl.weight)
    assert a.steps == b.steps and a.steps[-1]["tau"] == pytest.approx(cfg.tau_end)


def test_early_stopping_keeps_the_best_epoch(world):
    w, train, val, _ = world
    result = train_bottleneck(w.concept_text, 10, 100.0, train[:2], val[:2],
                              config("contrastive", epochs=30, early_stopping_patience=1, cbl=OptimizerConfig(lr=0.05)))
    val_top1 = [e["val_top1"] for e in result.epochs]
    assert len(val_top1) < 30 and result.best_epoch == int(np.argmax(val_top1)) + 1
    assert evaluate_split(result.model, *val[:2])["top1"] == pytest.approx(max(val_top1))


def test_every_objective_learns_the_planted_concepts(world):
    """Chance is 10%. Sparsity: the mean number of concepts carrying 90% of an image's |CBL activation|.

    On this simulator l1 gives clearly sparser activations than contrastive; the Gumbel
    objectives do not (README, "Training": measured numbers), so that is not asserted."""
    w, train, val, test = world
    results = {}
    for name, cfg in {"l1": config("l1"), "contrastive": config("contrastive"), "gumbel": config("gumbel"),
                      "gumbel_released": config("gumbel", gumbel_objective="released")}.items():
        model = train_bottleneck(w.concept_text, 10, 100.0, train[:2], val[:2], cfg).model
        results[name] = evaluate_split(model, *test[:2])
    for name, m in results.items():
        assert m["top1"] > 0.5, (name, m)
    dense = results["contrastive"]["concepts_for_90pct_mass"]
    assert results["l1"]["concepts_for_90pct_mass"] < 0.8 * dense
