"""The attributes world: nonce-named classes defined by rules, annotated images, its concept list."""

import csv

import numpy as np

from sparse_cbm.datasets import load_dataset
from sparse_cbm.datasets.shapes_world import ALL_VALUES, ATTRIBUTES, annotated_attributes, concept
from sparse_cbm.datasets.shapes_rules import (ASSOCIATES, CONCEPTS_FILE, EXCLUSIVE, RULES, candidate_concept_rows,
                                              concept_list_csv, constant_concepts, main, rule_concepts, satisfies)
from sparse_cbm.datasets.shapes_text import DISTRACTORS
from tests.conftest import REPO


def world(n_train=400, n_test=200, seed=0):
    return load_dataset("shapes", seed=seed, shapes_n_train=n_train, shapes_n_test=n_test, shapes_preset="attributes")


def test_twenty_classes_with_invented_names_and_two_attribute_rules():
    d = world()
    assert d.classes == list(RULES) and len(d.classes) >= 20
    words = {concept(a, v) for a in ATTRIBUTES for v in ALL_VALUES[a]} | {"red", "blue", "green"}
    assert not any(w in name for name in d.classes for w in words)
    assert all(len(rule) == 2 and rule[0][0] != rule[1][0] for rule in RULES.values())
    uses = {}
    for rule in RULES.values():
        for attribute_value in rule:
            uses[attribute_value] = uses.get(attribute_value, 0) + 1
    assert max(uses.values()) >= 4  # attributes overlap between classes, CUB-like


def test_every_image_satisfies_its_own_rule_and_no_other():
    d = world()
    src = d.splits["test"]
    for attrs, label in zip(src.attributes, src.labels):
        matching = [name for name, rule in RULES.items() if satisfies(attrs, rule)]
        assert matching == [d.classes[label]]
    assert all(len(combos) >= 6 for combos in EXCLUSIVE.values())


def test_annotations_are_every_attribute_value_of_every_image():
    d = world()
    attributes = d.attributes
    assert [a.concept for a in attributes] == [concept(a, v) for a in ATTRIBUTES for v in ALL_VALUES[a]]
    assert len(attributes) == 16
    src = d.splits["train"]
    annotations = src.annotations()
    assert annotations.shape == (len(src), 16) and annotations.dtype == bool
    assert (annotations.sum(axis=1) == len(ATTRIBUTES)).all()  # one value of each attribute
    cols = src.extra_columns()
    for i in range(0, len(src), 37):
        true = {a.concept for a, on in zip(attributes, annotations[i]) if on}
        assert true == {concept(a, cols[a][i]) for a in ATTRIBUTES}
        assert set(constant_concepts(d.classes[src.labels[i]])) <= true


def test_classes_are_balanced_and_seeded():
    a, b, c = world(seed=0), world(seed=0), world(seed=1)
    assert np.bincount(a.splits["test"].labels).tolist() == [10] * 20
    assert a.splits["test"].attributes == b.splits["test"].attributes
    assert a.splits["test"].attributes != c.splits["test"].attributes
    assert np.array_equal(a.splits["train"].annotations(), b.splits["train"].annotations())
    assert a.splits["test"].fingerprint_parts() != load_dataset(
        "shapes", shapes_n_train=400, shapes_n_test=200, shapes_preset="easy").splits["test"].fingerprint_parts()


def test_candidate_concepts_hold_the_truth_and_a_hundred_others():
    rows = candidate_concept_rows()
    concepts = list(dict.fromkeys(c for _, c in rows))
    annotated = {a.concept for a in annotated_attributes()}
    assert len(concepts) >= 100 and annotated <= set(concepts)
    assert set(DISTRACTORS) <= set(concepts) and {"zebra", "night sky", "whale"} <= set(concepts)
    per_class = {}
    for cls, c in rows:
        per_class.setdefault(cls, []).append(c)
    for name in RULES:  # a class lists what is true of all its images, starting with its rule
        assert set(rule_concepts(name)) <= set(per_class[name]) == set(constant_concepts(name))
    shared = set(per_class[""])
    assert all(a in shared for words in ASSOCIATES.values() for a in words)


def test_committed_concept_file_is_current(tmp_path):
    committed = (REPO / CONCEPTS_FILE).read_text(encoding="utf-8")
    assert committed == concept_list_csv()
    assert list(csv.DictReader(committed.splitlines()))[0] == {"class": "blicket", "concept": "blue"}
    main(["--out", str(tmp_path / "c.csv")])
    assert (tmp_path / "c.csv").read_text(encoding="utf-8") == committed
