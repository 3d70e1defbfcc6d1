"""Captions and ground-truth concepts of the shapes world."""

import csv

import numpy as np

from sparse_cbm.datasets import load_dataset
from sparse_cbm.datasets.shapes_text import (CONCEPTS_FILE, DISTRACTORS, attribute_concepts, caption,
                                             class_concept_table, class_concepts, concept_list_csv,
                                             concept_list_rows, image_concepts, main, write_concept_list)
from tests.conftest import REPO

ATTRS = {"shape": "circle", "colour": "red", "texture": "striped", "background": "grey", "size": "small",
         "x": 0.5, "y": 0.5}


def test_canonical_caption_names_every_attribute():
    assert caption(ATTRS) == "a small red striped circle on a grey background"
    assert caption({**ATTRS, "size": "large", "background": "pink"}) == \
        "a large red striped circle on a pink background"


def test_seeded_captions_vary_and_repeat():
    a = [caption(ATTRS, np.random.default_rng([1, k]), drop=0.3) for k in range(40)]
    b = [caption(ATTRS, np.random.default_rng([1, k]), drop=0.3) for k in range(40)]
    assert a == b and len(set(a)) > 10
    full = [caption(ATTRS, np.random.default_rng(k)) for k in range(20)]
    for text in full:  # drop=0: every attribute is named
        assert all(w in text for w in ("small", "red", "striped", "circle", "grey background"))
    for k in range(200):  # never empty, never a word from outside the image
        text = caption(ATTRS, np.random.default_rng(k), drop=0.9)
        assert any(w in text for w in ("small", "red", "striped", "circle", "grey"))
        assert not any(w in text for w in ("blue", "square", "dotted", "large", "pink"))


def test_concepts_of_images_and_classes():
    concepts = attribute_concepts()
    assert len(concepts) == len(set(concepts)) == 4 + 3 + 3 + 4 + 2
    assert {"red", "circle", "striped", "dotted", "grey background", "small", "large"} <= set(concepts)
    assert not set(DISTRACTORS) & set(concepts)
    assert image_concepts(ATTRS) == ["red", "circle", "striped", "grey background", "small"]
    assert class_concepts({"shape": "star", "colour": "blue"}) == ["blue", "star"]
    table = class_concept_table(["shape", "colour"])
    assert len(table) == 12 and table["red circle"] == ["red", "circle"]
    assert class_concept_table(["shape", "background"])["star on grey background"] == ["star", "grey background"]


def test_class_concepts_hold_for_every_image_of_the_class():
    d = load_dataset("shapes", seed=0, shapes_n_train=48, shapes_n_test=24, shapes_preset="easy")
    table = class_concept_table()
    src = d.splits["train"]
    cols = src.extra_columns()
    for i in range(len(src)):
        attrs = {k: v[i] for k, v in cols.items()}
        assert set(table[d.classes[src.labels[i]]]) <= set(image_concepts(attrs))


def test_concept_list_rows():
    rows = concept_list_rows()
    per_class = {}
    for cls, c in rows:
        per_class.setdefault(cls, []).append(c)
    assert list(per_class) == list(class_concept_table())
    red_circle = per_class["red circle"]
    assert red_circle[:2] == ["red", "circle"]
    assert {"solid", "striped", "dotted", "white background", "pink background", "small", "large"} <= set(red_circle)
    assert set(DISTRACTORS) <= set(red_circle) and "blue" not in red_circle and "star" not in red_circle
    assert len(red_circle) == len(set(red_circle)) == 2 + 3 + 4 + 2 + len(DISTRACTORS)
    textured = dict.fromkeys(c for cls, c in concept_list_rows(["shape", "colour", "texture"])
                             if cls == "red striped circle")
    assert "striped" in textured and "dotted" not in textured


def test_committed_concept_list_is_current(tmp_path):
    committed = (REPO / CONCEPTS_FILE).read_text(encoding="utf-8")
    assert committed == concept_list_csv()
    rows = list(csv.DictReader(committed.splitlines()))
    assert rows[0] == {"class": "red circle", "concept": "red"}
    out = write_concept_list(tmp_path / "c.csv")
    assert out.read_text(encoding="utf-8") == committed
    main(["--out", str(tmp_path / "cli.csv")])
    assert (tmp_path / "cli.csv").read_text(encoding="utf-8") == committed


def test_shapes_defaults_are_owned_once_by_shapes_world():
    import inspect

    import pytest

    from sparse_cbm.datasets import DATASETS
    from sparse_cbm.datasets.shapes import load_shapes
    from sparse_cbm.datasets.shapes_presets import PRESETS, make_world
    from sparse_cbm.datasets.shapes_world import ATTRIBUTE_VALUES, SHAPES_DEFAULTS
    from sparse_cbm.errors import DatasetError
    from sparse_cbm_app.params import DatasetParams, ShapesParams

    schema = ShapesParams()
    assert (schema.preset, schema.n_train, schema.n_test, schema.image_size, tuple(schema.class_attributes)) == (
        SHAPES_DEFAULTS.preset, SHAPES_DEFAULTS.n_train, SHAPES_DEFAULTS.n_test, SHAPES_DEFAULTS.image_size,
        SHAPES_DEFAULTS.class_attributes)
    signature = inspect.signature(load_dataset).parameters
    assert {k: signature[f"shapes_{k}"].default for k in ("n_train", "n_test", "image_size", "class_attributes",
                                                          "preset")} == vars(SHAPES_DEFAULTS)
    assert inspect.signature(load_shapes).parameters["preset"].default == SHAPES_DEFAULTS.preset
    # the params' choices, in their order, come from the registries
    assert PRESETS.names() == ("attributes", "scenes", "easy")
    assert ShapesParams.model_fields["preset"].annotation.__args__ == PRESETS.names()
    assert DatasetParams.model_fields["name"].annotation.__args__ == DATASETS
    assert DATASETS == ("cifar10", "cifar100", "places365", "imagefolder", "cub", "shapes")
    assert tuple(ATTRIBUTE_VALUES) == ("shape", "colour", "texture", "background")
    with pytest.raises(DatasetError, match=r"unknown dataset.shapes.preset 'scene' \(did you mean 'scenes'\?\)"):
        make_world("scene", ["shape"])
