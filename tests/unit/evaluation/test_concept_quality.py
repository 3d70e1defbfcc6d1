"""Concept-quality metrics against scorers whose truth is built in."""

import numpy as np
import pytest
import torch

from sparse_cbm.classifiers.base import ConceptClassifier, ConceptScorer
from sparse_cbm.datasets.base import Attribute
from sparse_cbm.evaluation.concept_quality import assess_scorers, concept_quality, match_annotations
from sparse_cbm.evaluation.intervention import fit_intervention_values, intervene

CONCEPTS = ["red", "circle", "striped", "large", "zebra", "night sky"]
ATTRIBUTES = [Attribute("colour::red", "red"), Attribute("size::large", "large"), Attribute("shape::circle", "circle"),
              Attribute("texture::striped", "striped"), Attribute("shape::star", "star")]


def world(n=400, seed=0):
    """Images are unit one-hot rows over the 6 concepts' axes (d = 6), annotations in ATTRIBUTES order;
    each image has exactly two of red, circle, striped, large, and the label is 'red'."""
    rng = np.random.default_rng(seed)
    truth4 = np.zeros((n, 4), dtype=bool)  # in CONCEPTS order: red, circle, striped, large
    for i in range(n):
        truth4[i, rng.choice(4, size=2, replace=False)] = True
    annotations = np.zeros((n, len(ATTRIBUTES)), dtype=bool)
    annotations[:, 0], annotations[:, 2], annotations[:, 3], annotations[:, 1] = truth4.T
    x = np.concatenate([truth4.astype(np.float32), rng.uniform(0, 0.2, size=(n, 2)).astype(np.float32)], axis=1)
    x += rng.normal(0, 0.05, size=x.shape).astype(np.float32) + 0.3
    return x, truth4[:, 0].astype(np.int64), annotations


class Scorer(ConceptScorer):
    """Activations = the image's coordinates times ``sign`` (the images are concept scores already)."""

    def __init__(self, sign=1.0):
        self.concepts, self.sign = CONCEPTS, sign

    def concept_activations(self, x):
        return self.sign * x


class Linear(ConceptClassifier, Scorer):
    """Decides 'red' from concept 0 alone: logit_1 = 8 a_0 - 3.2, logit_0 = 0 (a_0 is about 0.67 for
    a red image, 0.16 for another)."""

    def __init__(self, corrupt=False):
        Scorer.__init__(self)
        self.corrupt = corrupt
        self.W = torch.zeros(2, len(CONCEPTS))
        self.W[1, 0] = 8.0
        self.b = torch.tensor([0.0, -3.2])

    def concept_activations(self, x):
        a = x.clone()
        if self.corrupt:  # the bottleneck has concept 0 backwards for every other image... by row parity of x
            flip = (x[:, 5] > x[:, 4])
            a[flip, 0] = 1.0 - a[flip, 0]
        return a

    def decide(self, activations):
        return activations @ self.W.T + self.b

    def contributions(self, activations, classes):
        return self.W[classes] * activations


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_matching_uses_the_normalised_text():
    m = match_annotations(["The Red", "circle", "zebra", "large"], ATTRIBUTES)
    assert m.concept_index.tolist() == [0, 1, 3] and m.attribute_index.tolist() == [0, 2, 1]


def test_auroc_and_precision_of_a_perfect_and_an_inverted_scorer():
    x, y, annotations = world()
    matched = match_annotations(CONCEPTS, ATTRIBUTES)
    # scorers see unit rows; the ranking within a row is what matters, and truth is 2 of the first 4 axes
    good = concept_quality(Scorer(), x, y, annotations, matched, k=2)
    bad = concept_quality(Scorer(-1.0), x, y, annotations, matched, k=2)
    assert good["summary"]["auroc"] == pytest.approx(1.0, abs=1e-3) and bad["summary"]["auroc"] < 0.05
    assert good["summary"]["precision_at_k"]["by_activation"] == pytest.approx(1.0)
    assert bad["summary"]["precision_at_k"]["by_activation"] == 0.0
    assert good["summary"]["precision_at_k"]["random_ranking"] == pytest.approx(2 / 6, abs=1e-4)
    table = good["auroc"]
    assert list(table["concept"]) == ["red", "circle", "striped", "large"]
    assert (table["positives"] + table["negatives"] == len(y)).all()
    assert "intervention" not in good["summary"]  # a scorer that decides nothing


def test_intervention_repairs_a_bottleneck_that_has_a_concept_backwards():
    x, y, annotations = world()
    matched = match_annotations(CONCEPTS, ATTRIBUTES)
    broken = Linear(corrupt=True)
    result = concept_quality(broken, x, y, annotations, matched, k=1, train_embeddings=x, max_k=3,
                             deletion_steps=3)
    s = result["summary"]
    assert 0.3 < s["intervention"]["accuracy_at_0"] < 0.7
    assert s["intervention"]["policies"] == ["worst_first", "contribution", "random"]
    curves = result["curves"]["intervention"]
    worst = curves["worst_first"]
    # the backwards concept is the most wrong one: checking one concept repairs every image
    assert worst[0] == pytest.approx(s["intervention"]["accuracy_at_0"]) and worst[1] == pytest.approx(1.0)
    assert s["intervention"]["gain_at_3"]["worst_first"] == pytest.approx(1.0 - worst[0])
    # the decision for "red" cites concept 0 only: a broken image called red is repaired by its first check;
    # one called not-red cites nothing (all contributions 0), so its concepts come in a random order
    assert curves["contribution"][1] > curves["random"][1] + 0.1
    # a random order reaches it among the 4 annotated concepts in a quarter of the broken images per check
    random = curves["random"]
    broken_share = 1.0 - random[0]
    for k in (1, 2, 3):
        assert random[k] - random[0] == pytest.approx(k / 4 * broken_share, abs=0.05)
    assert s["intervention"]["gain_at_3"]["random"] == pytest.approx(random[3] - random[0])
    healthy = concept_quality(Linear(), x, y, annotations, matched, k=1, train_embeddings=x, max_k=5)
    assert healthy["summary"]["intervention"]["accuracy_at_0"] == 1.0
    assert healthy["summary"]["intervention"]["gain_at_5"] == {"worst_first": 0.0, "contribution": 0.0, "random": 0.0}


def test_intervention_policies_are_chosen_by_name_and_an_unknown_one_is_refused():
    x, y, annotations = world()
    matched = match_annotations(CONCEPTS, ATTRIBUTES)
    result = concept_quality(Linear(corrupt=True), x, y, annotations, matched, train_embeddings=x, max_k=5,
                             deletion_steps=2, policies=["random"])
    assert list(result["curves"]["intervention"]) == ["random"]
    assert result["summary"]["intervention"]["gain_at_5"]["random"] > 0.3
    with pytest.raises(ValueError, match="unknown intervention policy 'oracle'; use one of: worst_first"):
        concept_quality(Linear(), x, y, annotations, matched, train_embeddings=x, max_k=5, policies=["oracle"])
    with pytest.raises(ValueError, match="must be distinct"):
        concept_quality(Linear(), x, y, annotations, matched, train_embeddings=x, max_k=5, policies=["random"] * 2)


def test_deletion_in_the_explanation_order_hurts_more_than_a_random_one():
    x, y, annotations = world()
    matched = match_annotations(CONCEPTS, ATTRIBUTES)
    result = concept_quality(Linear(), x, y, annotations, matched, k=1, train_embeddings=x, deletion_steps=6)
    d = result["summary"]["deletion"]
    curve = result["curves"]["deletion"]["by_contribution"]
    # red images rest on one concept, removed first: their class's probability falls from ~0.9 to ~0.04
    assert curve[0] > 0.8 and curve[1] < curve[0] - 0.3
    assert d["auc"] < d["random_order_auc"]


def test_intervene_sets_present_and_absent_values_from_train():
    x, y, annotations = world()
    clf = Linear()
    values = fit_intervention_values(clf, x, [0, 3])
    a = torch.from_numpy(unit(x))
    assert values.present[0] > values.absent[0]
    on = intervene(clf, a, {0: True}, values).argmax(dim=1)
    off = intervene(clf, a, {0: False}, values).argmax(dim=1)
    assert bool((on == 1).all()) and bool((off == 0).all())
    with pytest.raises(ValueError, match="no intervention values for concepts \\[2\\]"):
        intervene(clf, a, {2: True}, values)


def test_assess_scorers_tables_and_curves():
    x, y, annotations = world()
    result = assess_scorers({"clip": Scorer(), "cbm": Linear()}, x, y, annotations, ATTRIBUTES, train_embeddings=x,
                            k=2, max_k=5, deletion_steps=4)
    assert set(result["summary"]) == {"clip", "cbm"} and set(result["auroc"]["model"]) == {"clip", "cbm"}
    assert list(result["intervention"].columns) == ["k", "cbm_worst_first", "cbm_contribution", "cbm_random"]
    assert len(result["intervention"]) == 6
    assert list(result["deletion"].columns) == ["step", "cbm_by_contribution", "cbm_random"]
