"""read_cached_inputs: the image cache's splits, the concept list and the text cache, read and
cross-checked at once, refusing a text cache of another concept list or other classes."""

import numpy as np
import pandas as pd
import pytest

from sparse_cbm.datasets import load_dataset
from sparse_cbm.errors import CacheMismatchError
from sparse_cbm.storage.image_cache import write_image_cache
from sparse_cbm.storage.inputs import read_cached_inputs
from sparse_cbm.storage.text_cache import concept_list_sha256, concept_list_text, write_text_cache

CONCEPTS = ["red", "round", "striped"]


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_backbone):
    root = tmp_path_factory.mktemp("inputs")
    shapes = load_dataset("shapes", seed=0, shapes_n_train=48, shapes_n_test=24, val_fraction=0.25)
    write_image_cache(shapes, tiny_backbone, root / "images", root / "scratch", batch_size=16, num_workers=0,
                      skip_corrupt=False)
    (root / "concepts.txt").write_text(concept_list_text(CONCEPTS), encoding="utf-8")
    pairs = pd.DataFrame({"class_index": [-1] * 3, "class_name": [None] * 3, "concept": CONCEPTS})
    for name, classes in (("text", shapes.classes), ("text_other", shapes.classes[::-1])):
        write_text_cache(root / name, tiny_backbone, classes, CONCEPTS, pairs, ["a photo of a {class}."],
                         "{class}, which has {concept}", batch_size=4)
    return root, shapes


def test_the_bundle_holds_every_split_the_concepts_and_the_text_cache(project, tiny_backbone):
    root, shapes = project
    inputs = read_cached_inputs(root / "images", ("train", "val", "test"), concepts=root / "concepts.txt",
                                text=root / "text")
    assert list(inputs.splits) == ["train", "val", "test"] and inputs.concepts == CONCEPTS
    assert inputs.classes == shapes.classes == inputs.text.manifest["classes"]
    assert inputs.backbone == tiny_backbone.identity and inputs.logit_scale == inputs.splits["train"].manifest[
        "logit_scale"]
    assert inputs.concepts_sha256 == concept_list_sha256(CONCEPTS)
    rows, labels = inputs.pair("test")
    assert np.array_equal(labels, inputs.splits["test"].labels) and len(rows) == len(labels)
    alone = read_cached_inputs(root / "images", ("train",))
    assert list(alone.splits) == ["train"] and alone.concepts is None and alone.text is None


def test_a_text_cache_of_other_classes_or_another_concept_list_is_refused(project, tmp_path):
    root, _ = project
    with pytest.raises(CacheMismatchError, match="was made for the classes"):
        read_cached_inputs(root / "images", ("train",), concepts=root / "concepts.txt", text=root / "text_other")
    (tmp_path / "concepts.txt").write_text(concept_list_text(CONCEPTS[:2]), encoding="utf-8")
    with pytest.raises(CacheMismatchError, match="another concept list"):
        read_cached_inputs(root / "images", ("train",), concepts=tmp_path / "concepts.txt", text=root / "text")
    with pytest.raises(ValueError, match="pass concepts too"):
        read_cached_inputs(root / "images", ("train",), text=root / "text")
