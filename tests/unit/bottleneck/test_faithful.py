"""cos3, the faithful forms, the sparse final layer in training, and the grid of the compare stage."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sparse_cbm.bottleneck.checkpoint import load_bottleneck, save_bottleneck
from sparse_cbm.bottleneck.config import TrainParams, check_combination
from sparse_cbm.bottleneck.final_layer import StandardizedLinear
from sparse_cbm.bottleneck.model import BottleneckOutput, ConceptBottleneck
from sparse_cbm.bottleneck.objectives import StepContext, get_objective
from sparse_cbm.bottleneck.objectives.contrastive import faithful_contrastive_loss, unit_concept_similarity
from sparse_cbm.bottleneck.objectives.cos3 import cos_cubed_similarity
from sparse_cbm.bottleneck.train import train_bottleneck, unit_cos3_similarity
from sparse_cbm.evaluation.compare import CompareData, CompareSettings, compare_bottlenecks, random_concept_embeddings
from sparse_cbm.simulate import planted_world


def lf_cbm_cos_similarity_cubed_single(clip_feats, target_feats):
    """Label-free CBM's ``cos_similarity_cubed_single`` (utils.py), transcribed."""
    clip_feats = clip_feats - torch.mean(clip_feats, dim=0, keepdim=True)
    target_feats = target_feats - torch.mean(target_feats, dim=0, keepdim=True)
    clip_feats, target_feats = clip_feats ** 3, target_feats ** 3
    clip_feats = clip_feats / torch.norm(clip_feats, p=2, dim=0, keepdim=True)
    target_feats = target_feats / torch.norm(target_feats, p=2, dim=0, keepdim=True)
    return torch.sum(target_feats * clip_feats, dim=0)


@pytest.fixture(scope="module")
def world():
    w = planted_world(num_classes=6, num_concepts=24, concepts_per_class=3, dim=32, seed=0)
    return w, w.split(900, 1)[:2], w.split(300, 2)[:2], w.split(300, 3)[:2]


def test_cos3_is_label_free_cbms_similarity_and_its_loss_is_minus_the_mean():
    gen = torch.Generator().manual_seed(0)
    S, psi = torch.randn(40, 7, generator=gen, dtype=torch.float64), torch.randn(40, 7, generator=gen,
                                                                                 dtype=torch.float64)
    assert torch.allclose(cos_cubed_similarity(S, psi), lf_cbm_cos_similarity_cubed_single(psi, S))
    model = ConceptBottleneck(np.eye(7, dtype=np.float32), 3, 1.0)
    out = BottleneckOutput(psi, S, None)
    loss = get_objective("cos3").loss(out, StepContext(model, TrainParams(), 1.0, gen))
    assert torch.isclose(loss, -lf_cbm_cos_similarity_cubed_single(psi, S).mean())
    assert torch.isclose(cos_cubed_similarity(2 * psi + 5, psi), torch.ones(7, dtype=torch.float64)).all()


def test_faithful_l1_penalises_the_distance_to_the_identity():
    model = ConceptBottleneck(np.eye(4, dtype=np.float32), 2, 1.0)
    model.init_identity()
    assert torch.equal(model.cbl.weight, torch.eye(4))
    ctx = StepContext(model, TrainParams(form="faithful", l1_lambda=0.4), 1.0, torch.Generator())
    assert float(get_objective("l1").loss(None, ctx).detach()) == 0.0
    with torch.no_grad():
        model.cbl.weight[0, 1] = 2.0
    assert float(get_objective("l1").loss(None, ctx).detach()) == pytest.approx(0.4 / 4 * 2.0)
    paper = StepContext(model, TrainParams(form="paper", l1_lambda=0.4), 1.0, torch.Generator())
    assert float(get_objective("l1").loss(None, paper).detach()) == pytest.approx(0.4 / 4 * 6.0)


def test_faithful_contrastive_pairs_unit_m_with_concept_m():
    gen = torch.Generator().manual_seed(1)
    psi = torch.randn(50, 5, generator=gen, dtype=torch.float64)
    units = torch.arange(5)
    aligned = faithful_contrastive_loss(3 * psi + 1, psi, units, alpha=10.0)
    shuffled = faithful_contrastive_loss(psi[:, [1, 2, 3, 4, 0]], psi, units, alpha=10.0)
    assert aligned < shuffled
    M = 10.0 * unit_concept_similarity(psi[:, [1, 2, 3, 4, 0]], psi)
    written = (F.cross_entropy(M, units) + F.cross_entropy(M.T, units)) / 2
    assert torch.isclose(shuffled, written)


def test_combinations_that_are_valid_alone_are_refused_together():
    check_combination("l1", TrainParams(form="faithful", gumbel={"objective": "released"}))
    with pytest.raises(ValueError, match="no targets to pair"):
        check_combination("gumbel", TrainParams(form="faithful", gumbel={"objective": "released"}))
    with pytest.raises(ValueError, match="hard is not built"):
        check_combination("gumbel", TrainParams(form="faithful", gumbel={"hard": True}))


def fit(world, loss, **kw):
    w, train, val, _ = world
    return train_bottleneck(w.concept_text, 6, 50.0, train, val, loss=loss,
                            params=TrainParams.model_validate({"epochs": 8, "batch_size": 64, "form": "paper",
                                                               "final_layer": "dense", **kw}))


def test_faithful_units_track_their_concepts_and_final_weights_stay_non_negative(world):
    w, _, _, test = world
    paper, faithful = fit(world, "l1"), fit(world, "l1", form="faithful")
    assert (faithful.model.fc.weight >= 0).all() and (paper.model.fc.weight < 0).any()
    sim_faithful = unit_cos3_similarity(faithful.model, test[0])
    sim_paper = unit_cos3_similarity(paper.model, test[0])
    assert sim_faithful.mean() > 0.9 > sim_paper.mean()


def test_cos3_cutoff_drops_units_and_lists_them(world):
    lenient = fit(world, "cos3", cos3={"cutoff": -1.0})
    cutoff = float(np.median(lenient.unit_similarity))
    strict = fit(world, "cos3", cos3={"cutoff": cutoff})
    with pytest.raises(ValueError, match="drops every concept"):
        fit(world, "cos3", cos3={"cutoff": 0.9999})
    assert lenient.dropped_units == [] and len(lenient.model.units) == 24
    assert 0 < len(strict.dropped_units) < 24
    kept = set(strict.model.units.tolist())
    assert kept.isdisjoint(strict.dropped_units) and len(kept) + len(strict.dropped_units) == 24
    assert strict.model.cbl.weight.shape == (len(kept), 24) and strict.model.fc.weight.shape == (6, len(kept))
    assert set(strict.dropped_units) == set(np.flatnonzero(strict.unit_similarity < cutoff).tolist())


def test_sparse_final_layer_keeps_at_most_the_target_nec_and_round_trips(world, tmp_path):
    w, _, _, test = world
    result = fit(world, "cos3", final_layer="sparse", form="faithful", sparse={"target_nec": 3.0})
    model = result.model
    assert isinstance(model.fc, StandardizedLinear)
    assert float((model.fc.weight != 0).sum()) / 6 <= 3.0 and (model.fc.weight >= 0).all()
    assert result.sparse_path and {"lambda", "nec", "val_top1"} <= set(result.sparse_path[0])
    x = torch.from_numpy(test[0])
    out = model(x)
    contrib = model.fc.contributions(out.activations, out.logits.argmax(1))
    assert torch.allclose(contrib.sum(1) + model.fc.bias[out.logits.argmax(1)], out.logits.max(1).values, atol=1e-4)
    accuracy = float((out.logits.argmax(1).numpy() == test[1]).mean())
    assert accuracy > 0.5  # chance is 1/6
    config = {"classes": list("abcdef"), "logit_scale": 50.0, "concept_list_sha256": "0" * 64,
              "backbone": {"model": "m"}, "train": {"final_layer": "sparse"}}
    save_bottleneck(tmp_path, model, config)
    loaded, _ = load_bottleneck(tmp_path)
    assert torch.equal(loaded(x).logits, out.logits)


def test_random_control_embeddings_match_the_concepts_first_two_moments():
    w = planted_world(num_classes=4, num_concepts=200, concepts_per_class=3, dim=8, seed=2)
    real = w.concept_text / np.linalg.norm(w.concept_text, axis=1, keepdims=True)
    fake = random_concept_embeddings(w.concept_text, seed=0)
    assert fake.shape == real.shape and not np.allclose(fake, real)
    assert np.abs(fake.mean(0) - real.mean(0)).max() < 0.05
    assert np.array_equal(fake, random_concept_embeddings(w.concept_text, seed=0))


def test_compare_grid_records_every_configuration(world):
    w, train, val, test = world
    records = compare_bottlenecks(
        CompareData(w.concept_text, [f"c{j}" for j in range(24)], 6, 50.0, train, val, test),
        CompareSettings(losses=["l1", "cos3"], final_layers=["dense", "sparse"], forms=["paper", "faithful"],
                        params=TrainParams(epochs=4, batch_size=64, sparse={"target_nec": 3.0}), seed=0))
    assert [(r["loss"], r["form"], r["final_layer"]) for r in records] == [
        (loss, form, layer) for loss in ("l1", "cos3") for form in ("paper", "faithful") for layer in ("dense", "sparse")]
    for r in records:
        assert 0 <= r["top1"] <= 1 and 0 <= r["random_concepts_top1"] <= 1 and 0 <= r["anec5"] <= 1
        assert r["nec"] <= 3.0 if r["final_layer"] == "sparse" else r["nec"] > 3.0
    dense, sparse = records[0], records[1]
    assert dense["anec5"] == sparse["anec5"]  # one CBL, one path
