"""CUB-200-2011 read from a folder in its exact format, and attributes as the concept set."""

import logging

import numpy as np
import pytest

from sparse_cbm.concepts.attributes import attribute_concept_rows
from sparse_cbm.concepts.table import SHARED
from sparse_cbm.datasets import load_dataset
from sparse_cbm.datasets.cub import attribute_concept
from sparse_cbm.errors import ConceptSourceError, DatasetError
from tests.cub_fixture import ATTRIBUTES, CONCEPTS, make_cub_folder


@pytest.fixture(scope="module")
def cub(tmp_path_factory):
    root = tmp_path_factory.mktemp("cub") / "CUB_200_2011"
    return root, make_cub_folder(root)


@pytest.mark.parametrize("name,phrase", [
    ("has_wing_color::blue", "blue wing"), ("has_breast_pattern::striped", "striped breast"),
    ("has_bill_length::longer_than_head", "bill longer than head"), ("has_size::small_(5_-_9_in)", "small size"),
    ("has_shape::perching-like", "perching-like shape"), ("has_primary_color::blue", "mostly blue"),
    ("has_wing_shape::pointed-wings", "pointed wing"), ("has_tail_shape::notched_tail", "notched tail"),
    ("has_bill_shape::curved_(up_or_down)", "curved bill"), ("has_upper_tail_color::grey", "grey upper tail"),
])
def test_attribute_names_become_concept_phrases(name, phrase):
    assert attribute_concept(name) == phrase


def test_official_split_classes_and_annotations(cub, caplog):
    root, written = cub
    with caplog.at_level(logging.WARNING):
        d = load_dataset("cub", str(root), val_fraction=0.2, seed=0)
    assert d.classes == ["red roundbird", "blue boxwing", "green stripetail"]
    assert [a.concept for a in d.attributes] == CONCEPTS
    assert [len(d.splits[s]) for s in ("train", "val", "test")] == [24, 6, 15]
    assert np.bincount(d.splits["test"].labels).tolist() == [5, 5, 5]
    assert "skipped 1 malformed lines" in caplog.text  # the line cut short; the one with an extra field is read
    test = d.splits["test"]
    ann = test.annotations()
    for row, image_id in enumerate(test.ids):
        number = int(image_id.split("_")[-1].split(".")[0])
        truth = [written["attributes"][number - 1][a] == v for _, a, v in ATTRIBUTES]
        assert ann[row].tolist() == truth
    train = d.splits["train"].parent
    short_image, short_attribute = written["short"]
    row = [int(i.split("_")[-1].split(".")[0]) for i in train.ids].index(short_image)
    assert not train.annotations()[row, short_attribute - 1] and train.certainty()[row, short_attribute - 1] == 0
    image = test.load(0)
    assert image.size == (64, 64) and image.mode == "RGB"


def test_a_missing_file_is_named_with_the_expected_layout(cub, tmp_path):
    with pytest.raises(DatasetError, match="images.txt not found.*CUB_200_2011 folder as distributed"):
        load_dataset("cub", str(tmp_path))
    with pytest.raises(DatasetError, match="not found. Download CUB_200_2011"):
        load_dataset("cub", str(tmp_path / "nowhere"))


def test_attributes_as_the_concept_set(cub):
    d = load_dataset("cub", str(cub[0]), val_fraction=0.2, seed=0)
    rows = attribute_concept_rows(d, class_share=0.9)
    linked = {(r["class_index"], r["concept"]) for r in rows}
    assert (0, "mostly red") in linked and (0, "circle shape") in linked and (2, "striped back") in linked
    assert (1, "mostly red") not in linked
    assert {r["concept"] for r in rows} == set(CONCEPTS)  # every attribute is in the bottleneck
    assert all(r["class_index"] == SHARED for r in rows if r["concept"] == "star shape")
    with pytest.raises(ConceptSourceError, match="has no annotated attributes"):
        attribute_concept_rows(_no_annotations(d), 0.5)


def _no_annotations(d):
    from sparse_cbm.datasets.base import DatasetSplits
    return DatasetSplits(name="imagefolder", classes=d.classes, raw_classes=d.raw_classes, splits=d.splits,
                         attributes=[])


def test_attribute_names_beside_the_folder_as_the_archive_has_them(cub, caplog, tmp_path):
    import shutil

    root = shutil.copytree(cub[0], tmp_path / "CUB_200_2011")  # the shared fixture stays as it is
    (root / "attributes" / "attributes.txt").rename(root.parent / "attributes.txt")  # CUB_200_2011.tgz's layout
    with caplog.at_level(logging.INFO):
        d = load_dataset("cub", str(root), val_fraction=0.2, seed=0)
    assert [a.concept for a in d.attributes] == CONCEPTS
    assert f"attribute names from {root.parent / 'attributes.txt'}" in caplog.text
    (root.parent / "attributes.txt").unlink()
    with pytest.raises(DatasetError, match="attributes.txt .* is in none of .*beside the CUB_200_2011 folder"):
        load_dataset("cub", str(root))
