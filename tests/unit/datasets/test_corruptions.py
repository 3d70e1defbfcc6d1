"""The corrupted test split: seeded, one corruption an image in turn, the clean image's labels and
annotations, each corruption doing what it says, and bad params refused with the fix."""

import pickle

import numpy as np
import pytest

from sparse_cbm.datasets import load_dataset
from sparse_cbm.datasets.corruptions import (CORRUPTED_TEST, KINDS, OCCLUSION_GREY, CorruptedSource, object_box,
                                             with_corrupted_test)
from sparse_cbm.errors import DatasetError


@pytest.fixture(scope="module")
def shapes():
    return load_dataset("shapes", seed=0, shapes_n_train=40, shapes_n_test=24, val_fraction=0.25)


def pixels(image):
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_the_split_keeps_labels_and_annotations_and_takes_the_kinds_in_turn(shapes):
    test = shapes.splits["test"]
    src = CorruptedSource(test, list(KINDS), 0.5, seed=0)
    assert len(src) == len(test) and np.array_equal(src.labels, test.labels)
    assert np.array_equal(src.annotations(), test.annotations())
    assert [src.kind(i) for i in range(8)] == [*KINDS, *KINDS]
    assert src.ids[1] == f"{test.ids[1]}#{KINDS[1]}" and src.extra_columns()["corruption"][:4] == list(KINDS)
    for i in range(len(KINDS)):  # every kind changes the picture, none changes its size
        clean, bad = pixels(test.load(i)), pixels(src.load(i))
        assert bad.shape == clean.shape and np.abs(bad - clean).mean() > 2.0, src.kind(i)
    assert src.describe()["corruptions"]["kinds"] == list(KINDS)


def test_same_seed_same_pixels_and_the_fingerprint_names_what_was_done(shapes):
    test = shapes.splits["test"]
    a, b = CorruptedSource(test, ["noise"], 0.5, seed=0), CorruptedSource(test, ["noise"], 0.5, seed=0)
    assert np.array_equal(pixels(a.load(3)), pixels(b.load(3)))
    assert not np.array_equal(pixels(a.load(3)), pixels(CorruptedSource(test, ["noise"], 0.5, seed=1).load(3)))
    again = pickle.loads(pickle.dumps(a))  # DataLoader workers get a copy
    assert np.array_equal(pixels(again.load(3)), pixels(a.load(3)))
    parts = {tuple(CorruptedSource(test, kinds, severity, 0).fingerprint_parts())
             for kinds, severity in ((["noise"], 0.5), (["noise"], 0.6), (["blur"], 0.5), (["noise"], 0.5))}
    assert len(parts) == 3


def test_occlusion_covers_part_of_the_class_object_and_not_all_of_it(shapes):
    test = shapes.splits["test"]
    src = CorruptedSource(test, ["occlusion"], 0.5, seed=0)
    for i in range(6):
        objects = test.object_map(i)
        mask = objects.mask(objects.class_object)
        grey = (pixels(src.load(i)) == OCCLUSION_GREY).all(axis=2) & ~(pixels(test.load(i)) == OCCLUSION_GREY).all(2)
        covered = (grey & mask).sum() / mask.sum()
        assert 0.05 < covered < 0.95, (i, covered)


def test_colour_at_full_severity_turns_a_red_object_green_or_blue(shapes):
    test = shapes.splits["test"]
    src = CorruptedSource(test, ["colour"], 1.0, seed=0)
    red = [i for i in range(len(test)) if test.attributes[i]["colour"] == "red" and
           test.attributes[i]["texture"] == "solid"][:3]
    assert red
    for i in red:
        objects = test.object_map(i)
        inside = pixels(src.load(i))[objects.mask(objects.class_object)].mean(axis=0)  # mean RGB of the object
        assert inside.argmax() in (1, 2) and inside[0] < 100, inside


def test_without_objects_the_box_is_the_centre():
    assert object_box(None, 100, 50) == (20, 10, 80, 40)


@pytest.mark.parametrize("kinds, severity, message", [
    ([], 0.5, "kinds is empty: name at least one corruption"),
    (["fog"], 0.5, "unknown dataset.corrupted_test.kinds 'fog'"),
    (["blur"], 1.5, "severity is 1.5: use a value in \\[0, 1\\]"),
])
def test_bad_params_are_refused_with_the_fix(shapes, kinds, severity, message):
    with pytest.raises(DatasetError, match=message):
        CorruptedSource(shapes.splits["test"], kinds, severity, 0)


def test_the_split_is_added_after_test(shapes):
    data = load_dataset("shapes", seed=0, shapes_n_train=40, shapes_n_test=12, val_fraction=0.25)
    with_corrupted_test(data, ["blur"], 0.3, 0)
    assert list(data.splits) == ["train", "val", "test", CORRUPTED_TEST]
    assert data.fingerprint(CORRUPTED_TEST) != data.fingerprint("test")
