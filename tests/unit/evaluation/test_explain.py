"""Explanations and the model loader's refusals, on the planted-concept simulator."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from sparse_cbm.errors import CacheMismatchError
from sparse_cbm.bottleneck.checkpoint import load_bottleneck
from sparse_cbm.bottleneck.model import ConceptBottleneck
from sparse_cbm.classifiers.cbm import BottleneckClassifier
from sparse_cbm.evaluation.embedding_map import embedding_map
from sparse_cbm.classifiers.clip_scores import ClipConceptScores
from sparse_cbm.evaluation.explain import class_top_concepts, explain_images, sample_per_class
from sparse_cbm.simulate import planted_world

BACKBONE = {"model": "sparse-cbm-shapes", "pretrained": "file:shapes-clip.pt", "checkpoint_sha256": "ab" * 32}


@pytest.fixture()
def saved(tmp_path):
    w = planted_world(num_classes=3, num_concepts=12, concepts_per_class=4, dim=16, seed=0)
    torch.manual_seed(0)
    model = ConceptBottleneck(w.concept_text, 3, 100.0)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "weights.safetensors"))
    config = {"classes": ["a", "b", "c"], "logit_scale": 100.0, "concept_list_sha256": "1" * 64, "backbone": BACKBONE}
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path, model, w


def test_loader_round_trips_and_refuses_mismatches(saved):
    folder, model, w = saved
    loaded, config = load_bottleneck(folder, expect_concepts_sha256="1" * 64, expect_backbone=BACKBONE)
    x = torch.from_numpy(w.split(10, 1)[0])
    assert torch.equal(loaded(x).logits, model(x).logits)
    with pytest.raises(CacheMismatchError, match="another concept list"):
        load_bottleneck(folder, expect_concepts_sha256="2" * 64)
    with pytest.raises(CacheMismatchError, match="sparse-cbm-shapes .* but the caches come from ViT-B-32"):
        load_bottleneck(folder, expect_backbone={**BACKBONE, "model": "ViT-B-32", "checkpoint_sha256": None})
    with pytest.raises(CacheMismatchError, match="dvc repro train"):
        load_bottleneck(folder / "nowhere")


def test_explanations_rank_name_their_ranking_and_contributions_sum_to_the_logit(saved):
    _, model, w = saved
    x, _, _ = w.split(4, 2)
    concepts = [f"c{j}" for j in range(12)]
    clf = BottleneckClassifier(model, concepts)
    records = explain_images(clf, x, ["a", "b", "c"], top=12, clip_scores=ClipConceptScores(w.concept_text, concepts),
                             true_concepts=[["c1"], [], ["c2", "c3"], ["c0"]])
    with torch.no_grad():
        out = model(torch.from_numpy(x))
    for i, r in enumerate(records):
        assert r["predicted_index"] == int(out.logits[i].argmax())
        values = [v["value"] for v in r["by_activation"]]
        assert values == sorted(values, reverse=True) and len(values) == 12
        total = sum(v["value"] for v in r["by_contribution"])
        assert total == pytest.approx(float(out.logits[i].max()), abs=1e-2)
        assert set(r["rankings"]) == {"by_activation", "by_contribution", "by_clip_score"}
        assert r["rankings"]["by_contribution"] == "weight x activation, for the predicted class"
        assert r["rankings"]["by_activation"] == "activation"
    assert records[2]["true_concepts"] == ["c2", "c3"]
    top = class_top_concepts(model.fc.weight, concepts, ["a", "b", "c"], top=3)
    assert top["ranking"] == "final-layer weight" and set(top["classes"]) == {"a", "b", "c"}
    assert len(top["classes"]["a"]) == 3
    top1, top5 = clf.predict(x)
    assert np.array_equal(top1, out.logits.argmax(1).numpy()) and top5.shape == (4, 3)


def test_sample_and_map_are_seeded():
    labels = np.repeat(np.arange(3), 5)
    a = sample_per_class(labels, 2, 100, seed=0)
    assert len(a) == 6 and np.array_equal(a, sample_per_class(labels, 2, 100, seed=0))
    assert np.bincount(labels[a]).tolist() == [2, 2, 2] and len(sample_per_class(labels, 2, 4, 0)) == 4
    rng = np.random.default_rng(0)
    points = embedding_map(rng.normal(size=(15, 8)), labels, rng.normal(size=(4, 8)), rng.normal(size=(3, 8)),
                           list("wxyz"), ["a", "b", "c"], 10, seed=1)
    assert points["kind"].value_counts().to_dict() == {"image": 10, "concept": 4, "class": 3}
