import numpy as np
import pytest
from PIL import Image

from sparse_cbm.datasets import carve_val, load_dataset
from sparse_cbm.datasets.classnames import clean_class_name, clean_class_names, read_class_names_file
from sparse_cbm.datasets.imagefolder import load_rgb
from sparse_cbm.datasets.shapes_world import class_name, class_table
from sparse_cbm.errors import CorruptImageError, DatasetError
from tests.conftest import make_imagefolder, write_image


@pytest.mark.parametrize("raw, clean", [
    ("001.Black_footed_Albatross", "black footed albatross"),
    ("tench, Tinca tinca", "tench"),
    ("/a/apartment_building/outdoor", "apartment building outdoor"),
    ("aquarium_fish", "aquarium fish"),
    ("  Golden  Retriever ", "golden retriever"),
])
def test_clean_class_name(raw, clean):
    assert clean_class_name(raw) == clean


def test_duplicate_clean_names_are_warned(caplog):
    clean_class_names(["crane", "Crane"])
    assert "more than once" in caplog.text and "crane" in caplog.text


def test_class_names_files(tmp_path):
    txt = tmp_path / "names.txt"
    txt.write_text("n01440764 tench, Tinca tinca\nn01443537\tgoldfish, Carassius auratus\n")
    assert read_class_names_file(txt) == {"n01440764": "tench, Tinca tinca",
                                         "n01443537": "goldfish, Carassius auratus"}
    js = tmp_path / "names.json"
    js.write_text('{"a": "Apple"}')
    assert read_class_names_file(js) == {"a": "Apple"}
    with pytest.raises(DatasetError, match="not found"):
        read_class_names_file(tmp_path / "missing.txt")


def test_shapes_is_deterministic_for_a_seed():
    a = load_dataset("shapes", seed=3, shapes_n_train=60, shapes_n_test=24, shapes_preset="easy")
    b = load_dataset("shapes", seed=3, shapes_n_train=60, shapes_n_test=24, shapes_preset="easy")
    c = load_dataset("shapes", seed=4, shapes_n_train=60, shapes_n_test=24, shapes_preset="easy")
    for split in ("train", "val", "test"):
        assert a.splits[split].ids == b.splits[split].ids
        np.testing.assert_array_equal(a.splits[split].labels, b.splits[split].labels)
        for i in (0, len(a.splits[split]) - 1):
            assert np.array_equal(np.asarray(a.splits[split].load(i)), np.asarray(b.splits[split].load(i)))
    assert a.fingerprint("train") == b.fingerprint("train") != c.fingerprint("train")
    assert not np.array_equal(np.asarray(a.splits["test"].load(0)), np.asarray(c.splits["test"].load(0)))


def test_shapes_attributes_match_class_names():
    d = load_dataset("shapes", seed=0, shapes_n_train=48, shapes_n_test=24,
                     shapes_class_attributes=["shape", "colour", "texture"], shapes_preset="easy")
    assert len(d.classes) == 4 * 3 * 3
    src = d.splits["train"]
    cols = src.extra_columns()
    for i in range(len(src)):
        name = d.classes[src.labels[i]]
        assert name == f"{cols['colour'][i]} {cols['texture'][i]} {cols['shape'][i]}"
    img = src.load(0)
    assert img.size == (64, 64) and img.mode == "RGB"
    assert class_name({"shape": "star", "background": "grey"}) == "star on grey background"
    assert len(class_table(["background"])) == 4


def test_shapes_labels_are_balanced():
    d = load_dataset("shapes", seed=0, shapes_n_train=120, shapes_n_test=24, val_fraction=0.0,
                     shapes_preset="easy")
    counts = np.bincount(d.splits["train"].labels)
    assert counts.min() == counts.max() == 10


def test_carve_val_is_stratified_seeded_and_disjoint():
    labels = np.repeat(np.arange(5), [10, 10, 10, 10, 2])
    tr, va = carve_val(labels, 0.2, seed=7)
    tr2, va2 = carve_val(labels, 0.2, seed=7)
    assert np.array_equal(va, va2) and np.array_equal(tr, tr2)
    assert set(tr).isdisjoint(va) and sorted(set(tr) | set(va)) == list(range(len(labels)))
    assert list(np.bincount(labels[va])) == [2, 2, 2, 2, 1]
    assert not np.array_equal(carve_val(labels, 0.2, seed=8)[1], va)
    tr0, va0 = carve_val(labels, 0.0, seed=7)
    assert len(va0) == 0 and len(tr0) == len(labels)


def test_imagefolder_splits_and_names(tmp_path):
    root = make_imagefolder(tmp_path / "data", classes=("001.Black_footed_Albatross", "002.Laysan_Albatross"))
    (root / "train" / "002.Laysan_Albatross" / "notes.txt").write_text("not an image, ignored")
    d = load_dataset("imagefolder", str(root), seed=0, val_fraction=0.34)
    assert d.classes == ["black footed albatross", "laysan albatross"]
    assert len(d.splits["train"]) + len(d.splits["val"]) == 12
    assert len(d.splits["val"]) == 4 and len(d.splits["test"]) == 6
    assert all(i.startswith("train/") for i in d.splits["val"].ids)
    assert not any(i.endswith(".txt") for i in d.splits["train"].ids)


def test_imagefolder_class_names_file(tmp_path):
    root = make_imagefolder(tmp_path / "data", classes=("n01", "n02"))
    names = tmp_path / "map.txt"
    names.write_text("n01 tench, Tinca tinca\nn02 goldfish\n")
    d = load_dataset("imagefolder", str(root), class_names_file=str(names))
    assert d.classes == ["tench", "goldfish"]
    names.write_text("n01 tench\n")
    with pytest.raises(DatasetError, match="no name for folders: n02"):
        load_dataset("imagefolder", str(root), class_names_file=str(names))


def test_imagefolder_missing_root_says_what_to_do(tmp_path):
    with pytest.raises(DatasetError) as err:
        load_dataset("imagefolder", str(tmp_path / "nowhere"))
    assert "nowhere/train not found" in str(err.value) and "<class>" in str(err.value)


def test_imagefolder_test_class_without_train_folder(tmp_path):
    root = make_imagefolder(tmp_path / "data", classes=("a", "b"))
    write_image(root / "test" / "zebra" / "x.png", seed=1)
    with pytest.raises(DatasetError, match="zebra"):
        load_dataset("imagefolder", str(root))


def test_awkward_images_decode_to_rgb(tmp_path):
    paths = {
        "gray": write_image(tmp_path / "gray.png", 1, mode="L"),
        "rgba": write_image(tmp_path / "rgba.png", 2, mode="RGBA"),
        "palette": write_image(tmp_path / "palette.png", 3, mode="P"),
        "tiny": write_image(tmp_path / "tiny.jpg", 4, size=(1, 1)),
        "large": write_image(tmp_path / "large.jpg", 5, size=(4000, 3000)),
        "cmyk": write_image(tmp_path / "cmyk.jpg", 6, mode="CMYK"),
    }
    pal = Image.new("P", (10, 10))
    pal.info["transparency"] = 0
    pal.save(tmp_path / "palette_t.png", transparency=0)
    paths["palette_t"] = tmp_path / "palette_t.png"
    for name, path in paths.items():
        img = load_rgb(path)
        assert img.mode == "RGB", name
    assert load_rgb(paths["large"]).size == (4000, 3000)


def test_truncated_and_non_image_files_name_the_file(tmp_path):
    good = write_image(tmp_path / "good.jpg", 1, size=(64, 64))
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    fake = tmp_path / "fake.png"
    fake.write_text("<html>not an image</html>")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    for path in (truncated, fake, empty):
        with pytest.raises(CorruptImageError) as err:
            load_rgb(path)
        assert str(path) in str(err.value) and "skip_corrupt" in str(err.value)


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(DatasetError, match=r"unknown dataset.name 'mnist'; "
                                           r"use one of: cifar10, cifar100, places365, imagefolder, cub, shapes\."):
        load_dataset("mnist")
    with pytest.raises(DatasetError, match=r"did you mean 'cifar10'\?"):
        load_dataset("cifar1O")


def test_cifar_missing_without_download_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError) as err:
        load_dataset("cifar10", str(tmp_path), download=False)
    assert "could not find" in str(err.value) and "dataset.download: true" in str(err.value)


def test_an_empty_class_folder_is_refused_by_name_or_left_out_on_request(tmp_path, caplog):
    root = make_imagefolder(tmp_path / "data", classes=("cat", "dog"))
    (root / "train" / "empty class").mkdir()
    with pytest.raises(DatasetError, match=r"1 class folder\(s\) with no images: .*empty class.*skip_empty_classes: true"):
        load_dataset("imagefolder", str(root))
    with caplog.at_level("WARNING"):
        d = load_dataset("imagefolder", str(root), skip_empty_classes=True)
    assert d.classes == ["cat", "dog"] and "left out 1 empty class folder(s)" in caplog.text
    assert sorted(set(d.splits["train"].labels.tolist())) == [0, 1]


def test_a_dataset_too_small_for_a_val_split_says_so_and_an_empty_test_split_is_refused(tmp_path, caplog):
    root = make_imagefolder(tmp_path / "data", classes=("cat", "dog"), n_train=1, n_test=1)
    with caplog.at_level("WARNING"):
        d = load_dataset("imagefolder", str(root), val_fraction=0.1)
    assert len(d.splits["val"]) == 0 and "too few for a val split" in caplog.text and "at least two a class" in caplog.text
    for image in (root / "test").rglob("*.*"):
        image.unlink()
    with pytest.raises(DatasetError, match="the test split has no images"):
        load_dataset("imagefolder", str(root))
