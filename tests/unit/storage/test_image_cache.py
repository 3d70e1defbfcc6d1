import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from sparse_cbm.clip.backbone import backbone_identity
from sparse_cbm.datasets import load_dataset
from sparse_cbm.datasets.base import ImageSource
from sparse_cbm.storage.embed import HEADER, embed_split, progress_name
from sparse_cbm.errors import CacheMismatchError, CorruptImageError
from sparse_cbm.storage.image_cache import read_image_split, write_image_cache
from tests.conftest import make_imagefolder

KW = dict(batch_size=16, num_workers=0, skip_corrupt=False)


@pytest.fixture(scope="module")
def shapes():
    return load_dataset("shapes", seed=0, shapes_n_train=72, shapes_n_test=36, val_fraction=0.25,
                        shapes_preset="easy")


def test_cache_contents_are_aligned(shapes, tiny_backbone, tmp_path):
    manifests = write_image_cache(shapes, tiny_backbone, tmp_path / "cache", tmp_path / "scratch", **KW)
    assert not (tmp_path / "scratch").exists()
    classes = json.loads((tmp_path / "cache" / "classes.json").read_text())
    assert classes["classes"] == shapes.classes
    for split, src in shapes.splits.items():
        part = read_image_split(tmp_path / "cache", split, expect_backbone=tiny_backbone.identity)
        n = len(src)
        assert part.embeddings.dtype == np.float16 and part.embeddings.shape == (n, 64)
        assert part.labels.dtype == np.int64
        np.testing.assert_array_equal(part.labels, src.labels)
        index = part.index()
        assert list(index["row"]) == list(range(n))
        assert list(index["image_id"]) == src.ids
        np.testing.assert_array_equal(index["label"].to_numpy(), part.labels)
        assert list(index["class_name"]) == [shapes.classes[y] for y in src.labels]
        assert list(index["shape"]) == src.extra_columns()["shape"]
        # row i holds the embedding of image i
        for i in (0, n // 2, n - 1):
            x = tiny_backbone.preprocess(src.load(i))[None]
            direct = tiny_backbone.encode_images(x)[0].numpy().astype(np.float16)
            np.testing.assert_allclose(part.embeddings[i].astype(np.float32), direct.astype(np.float32),
                                       rtol=1e-2, atol=1e-2)
        m = manifests[split]
        assert m == part.manifest
        assert m["count"] == n and m["dim"] == 64 and m["dtype"] == "float16" and m["split"] == split
        assert m["backbone"]["model"] == "sparse-cbm-tiny" and m["backbone"]["random_weights"] is True
        assert m["logit_scale"] == pytest.approx(1 / 0.07, rel=1e-4)
        assert m["dataset"]["fingerprint"] == shapes.fingerprint(split)
        assert m["dataset"]["classes"] == shapes.classes
        assert "Resize" in m["preprocess"] and m["normalized"] is False


def test_reader_refuses_a_cache_from_another_backbone(shapes, tiny_backbone, tmp_path):
    write_image_cache(shapes, tiny_backbone, tmp_path / "cache", tmp_path / "scratch", **KW)
    other = backbone_identity("ViT-B-32", "openai")
    with pytest.raises(CacheMismatchError) as err:
        read_image_split(tmp_path / "cache", "test", expect_backbone=other)
    assert "sparse-cbm-tiny (none)" in str(err.value) and "ViT-B-32 (openai)" in str(err.value)


def test_reader_refuses_an_incomplete_split(shapes, tiny_backbone, tmp_path):
    write_image_cache(shapes, tiny_backbone, tmp_path / "cache", tmp_path / "scratch", **KW)
    (tmp_path / "cache" / "val" / "manifest.json").unlink()
    with pytest.raises(CacheMismatchError, match="incomplete"):
        read_image_split(tmp_path / "cache", "val")


@pytest.mark.parametrize("damage, message", [
    ("flip", r"train/embeddings.npy \([\d,]+ bytes\) has sha256 \w+, its manifest recorded \w+: it changed after "
             r"`embed_images` wrote it. Run `dvc checkout .*cache` to restore it from DVC's cache, or `dvc repro -f "
             r"embed_images`"),
    ("truncate", r"train/embeddings.npy \([\d,]+ bytes\) has sha256"),
    ("parquet", r"train/index.parquet \([\d,]+ bytes\) has sha256"),
    ("missing", r"train/labels.npy is missing, but its manifest lists it"),
    ("manifest", r"train/manifest.json is damaged"),
])
def test_a_damaged_cache_file_is_named_with_the_fix(shapes, tiny_backbone, tmp_path, damage, message):
    write_image_cache(shapes, tiny_backbone, tmp_path / "cache", tmp_path / "scratch", **KW)
    folder = tmp_path / "cache" / "train"
    emb = folder / "embeddings.npy"
    size = emb.stat().st_size
    if damage == "flip":  # 400 flipped bytes, the size unchanged: what `dvc repro -s train` trained on
        data = bytearray(emb.read_bytes())
        for i in range(size - 400, size):
            data[i] ^= 0xFF
        emb.write_bytes(bytes(data))
        assert emb.stat().st_size == size
    elif damage == "truncate":
        emb.write_bytes(emb.read_bytes()[: size // 2])
    elif damage == "parquet":
        raw = bytearray((folder / "index.parquet").read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        (folder / "index.parquet").write_bytes(bytes(raw))
    elif damage == "missing":
        (folder / "labels.npy").unlink()
    else:
        (folder / "manifest.json").write_text('{"format_version": 2, "count"')
    with pytest.raises(CacheMismatchError, match=message):
        read_image_split(tmp_path / "cache", "train")
    read_image_split(tmp_path / "cache", "val")  # the others are fine


class Interrupting(ImageSource):
    """Wraps a source and raises KeyboardInterrupt when row ``stop_at`` is loaded; counts loads."""

    def __init__(self, inner, stop_at=None):
        self.inner, self.stop_at = inner, stop_at
        self.ids, self.labels = inner.ids, inner.labels
        self.loaded = []

    def load(self, i):
        if i == self.stop_at:
            raise KeyboardInterrupt
        self.loaded.append(i)
        return self.inner.load(i)

    def fingerprint_parts(self):
        return self.inner.fingerprint_parts()

    def extra_columns(self):
        return self.inner.extra_columns()

    def annotations(self):
        return self.inner.annotations()

    def describe(self):
        return self.inner.describe()


def test_killed_split_resumes_and_matches_a_clean_run(shapes, tiny_backbone, tmp_path):
    src = shapes.splits["train"]
    clean = embed_split(tiny_backbone, src, tmp_path / "clean", "k", desc="clean", **KW)
    reference = np.load(clean.embeddings_path)

    killed = Interrupting(src, stop_at=37)
    with pytest.raises(KeyboardInterrupt):
        embed_split(tiny_backbone, killed, tmp_path / "part", "k", desc="part", commit_every_s=0, **KW)
    progress = json.loads((tmp_path / "part" / progress_name(0, len(src))).read_text())
    assert progress["rows_done"] == 32  # two whole batches were committed

    resumed_src = Interrupting(src)
    part = embed_split(tiny_backbone, resumed_src, tmp_path / "part", "k", desc="part", **KW)
    assert min(resumed_src.loaded) == 32  # nothing before the committed row was redone
    assert part.rows_done == len(src)
    assert np.load(part.embeddings_path).tobytes() == reference.tobytes()


def test_scratch_made_with_another_key_is_restarted(shapes, tiny_backbone, tmp_path):
    src = shapes.splits["val"]
    embed_split(tiny_backbone, src, tmp_path / "s", "key-a", desc="a", **KW)
    again = Interrupting(src)
    embed_split(tiny_backbone, again, tmp_path / "s", "key-b", desc="b", **KW)
    assert again.loaded[0] == 0


def test_failed_run_publishes_nothing(shapes, tiny_backbone, tmp_path, monkeypatch):
    shapes_broken = load_dataset("shapes", seed=0, shapes_n_train=72, shapes_n_test=36, val_fraction=0.25,
                                 shapes_preset="easy")
    shapes_broken.splits["test"] = Interrupting(shapes_broken.splits["test"], stop_at=5)
    with pytest.raises(KeyboardInterrupt):
        write_image_cache(shapes_broken, tiny_backbone, tmp_path / "cache", tmp_path / "scratch", **KW)
    assert not (tmp_path / "cache").exists()
    assert (tmp_path / "scratch" / "train" / HEADER).exists()
    assert (tmp_path / "scratch" / "train" / progress_name(0, len(shapes_broken.splits["train"]))).exists()


def test_corrupt_image_stops_or_is_skipped(tiny_backbone, tmp_path):
    root = make_imagefolder(tmp_path / "data", classes=("a", "b"), n_train=4, n_test=3)
    bad = root / "test" / "b" / "img_1.png"
    bad.write_bytes(b"\x89PNG\r\n garbage")
    data = load_dataset("imagefolder", str(root), val_fraction=0.0)
    with pytest.raises(CorruptImageError) as err:
        write_image_cache(data, tiny_backbone, tmp_path / "c1", tmp_path / "s1", **KW)
    assert str(bad) in str(err.value)
    assert not (tmp_path / "c1").exists()

    kw = dict(KW, skip_corrupt=True)
    manifests = write_image_cache(data, tiny_backbone, tmp_path / "c2", tmp_path / "s2", **kw)
    test = read_image_split(tmp_path / "c2", "test")
    assert manifests["test"]["count"] == 5 == len(test.labels) == test.embeddings.shape[0]
    assert manifests["test"]["skipped"][0]["image_id"] == "test/b/img_1.png"
    index = pq.read_table(tmp_path / "c2" / "test" / "index.parquet").to_pandas()
    assert "test/b/img_1.png" not in set(index["image_id"])
    np.testing.assert_array_equal(index["label"].to_numpy(), test.labels)
    # the rows that stayed hold their own images
    full = read_image_split(tmp_path / "c2", "train")
    assert full.embeddings.shape[0] == 8
    src = data.splits["test"]
    kept = [i for i, image_id in enumerate(src.ids) if image_id != "test/b/img_1.png"]
    x = torch.stack([tiny_backbone.preprocess(src.load(i)) for i in kept])
    np.testing.assert_allclose(test.embeddings.astype(np.float32),
                               tiny_backbone.encode_images(x).numpy(), rtol=1e-2, atol=1e-2)


def test_empty_val_split_is_a_valid_cache(tiny_backbone, tmp_path):
    data = load_dataset("shapes", seed=1, shapes_n_train=24, shapes_n_test=12, val_fraction=0.0,
                        shapes_preset="easy")
    manifests = write_image_cache(data, tiny_backbone, tmp_path / "cache", tmp_path / "scratch", **KW)
    assert manifests["val"]["count"] == 0
    val = read_image_split(tmp_path / "cache", "val")
    assert val.embeddings.shape == (0, 64) and val.labels.shape == (0,)
    assert len(val.index()) == 0


def test_compact_keeps_exactly_the_kept_rows_across_chunks(tmp_path):
    from sparse_cbm.storage.embed import PartialSplit
    from sparse_cbm.storage.image_cache import _compact

    part = PartialSplit.open(tmp_path / "p", "k", count=10, dim=4)
    data = np.arange(40, dtype=np.float16).reshape(10, 4)
    part.write(0, data)
    keep = np.array([1, 0, 1, 1, 0, 0, 1, 1, 1, 0], dtype=bool)
    _compact(part, keep, tmp_path / "out.npy", chunk=3)
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), data[keep])


def test_a_corrupted_test_split_is_cached_with_how_it_was_made_and_read_when_asked(tiny_backbone, tmp_path):
    from sparse_cbm.datasets.corruptions import CORRUPTED_TEST, with_corrupted_test
    from sparse_cbm.storage.inputs import read_cached_inputs

    data = load_dataset("shapes", seed=0, shapes_n_train=24, shapes_n_test=12, val_fraction=0.25,
                        shapes_preset="easy")
    plain = write_image_cache(data, tiny_backbone, tmp_path / "plain", tmp_path / "scratch", **KW)
    assert list(plain) == ["train", "val", "test"] and plain["test"]["source"] == {}
    assert list(read_cached_inputs(tmp_path / "plain", optional=(CORRUPTED_TEST,)).splits) == ["train", "val", "test"]
    with_corrupted_test(data, ["blur", "noise"], 0.4, seed=3)
    manifests = write_image_cache(data, tiny_backbone, tmp_path / "cache", tmp_path / "scratch", **KW)
    m = manifests[CORRUPTED_TEST]
    assert m["source"]["corruptions"] == {"of": "test", "kinds": ["blur", "noise"], "severity": 0.4, "seed": 3,
                                          "version": "corruptions-v1"}
    inputs = read_cached_inputs(tmp_path / "cache", optional=(CORRUPTED_TEST,))
    corrupted, clean = inputs.splits[CORRUPTED_TEST], inputs.splits["test"]
    assert np.array_equal(corrupted.labels, clean.labels)
    assert np.array_equal(corrupted.annotations(), clean.annotations())
    assert list(corrupted.index()["corruption"]) == ["blur", "noise"] * 6
    assert not np.array_equal(corrupted.embeddings, clean.embeddings)
    (tmp_path / "cache" / CORRUPTED_TEST / "manifest.json").unlink()  # there, but incomplete: refused, not skipped
    with pytest.raises(CacheMismatchError, match="no manifest.json"):
        read_cached_inputs(tmp_path / "cache", optional=(CORRUPTED_TEST,))
