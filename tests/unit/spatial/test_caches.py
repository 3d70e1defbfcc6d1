"""The prompted-copy cache (``write_prompted_cache`` / ``read_prompted``): what it writes is each sampled
image's ringed copies through the prompting CLIP, the reader reads back exactly that, and an interrupted
write publishes nothing (the previous cache stays whole) and resumes the splits it had finished."""

import numpy as np
import pytest
import torch

from sparse_cbm.datasets import load_dataset
from sparse_cbm.datasets.base import ImageSource
from sparse_cbm.errors import CacheMismatchError
from sparse_cbm.spatial.caches import PROMPTED, read_features, read_prompted, sample_rows, write_prompted_cache
from sparse_cbm.spatial.prompts import PromptedCopies
from sparse_cbm.storage.manifest import file_sha256
from tests.conftest import make_imagefolder

GRID, COUNTS, SEED = 3, {"train": 3, "test": 10}, 7  # test asks for more images than it has: all 6
DESCRIBE = {"radius": 9.0, "line_width": 2.0, "colour": [255, 255, 0]}


class Interrupting(ImageSource):
    """A source that raises KeyboardInterrupt when image ``stop_at`` is loaded, and counts its loads."""

    def __init__(self, inner, stop_at=None):
        self.inner, self.stop_at, self.loaded = inner, stop_at, []
        self.ids, self.labels = inner.ids, inner.labels

    def load(self, i):
        if i == self.stop_at:
            raise KeyboardInterrupt
        self.loaded.append(i)
        return self.inner.load(i)

    def fingerprint_parts(self):
        return self.inner.fingerprint_parts()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = make_imagefolder(tmp_path_factory.mktemp("images") / "data", classes=("a", "b"), n_train=4, n_test=3)
    return load_dataset("imagefolder", str(root), val_fraction=0.0)


@pytest.fixture(scope="module")
def prompts(tiny_backbone):
    return PromptedCopies(tiny_backbone, GRID, radius=9.0, line_width=2.0, colour=(255, 255, 0))


def write(dataset, prompts, out, scratch, seed=SEED):
    return write_prompted_cache(dataset, prompts, COUNTS, out, scratch, seed=seed, batch_size=2, describe=DESCRIBE)


def test_sample_rows_are_seeded_sorted_and_split_specific():
    a = sample_rows(50, 10, 3, "train")
    assert a.dtype == np.int64 and len(np.unique(a)) == 10 and (np.diff(a) > 0).all() and a.max() < 50
    assert sample_rows(50, 10, 3, "train").tolist() == a.tolist()
    assert sample_rows(50, 10, 3, "test").tolist() != a.tolist() != sample_rows(50, 10, 4, "train").tolist()
    assert sample_rows(4, 10, 3, "train").tolist() == [0, 1, 2, 3]
    every = sample_rows(50, None, 3, "train")  # spatial.train_images: null, the paper's P over all N
    assert every.dtype == np.int64 and every.tolist() == list(range(50))


def test_the_reader_reads_back_each_images_ringed_copies(dataset, prompts, tmp_path):
    manifests = write(dataset, prompts, tmp_path / "cache", tmp_path / "scratch")
    assert not (tmp_path / "scratch").exists()
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["test", "train"]
    for split, count in COUNTS.items():
        source = dataset.splits[split]
        part = read_prompted(tmp_path / "cache", split)
        n = min(count, len(source))
        assert part.rows.tolist() == sample_rows(len(source), count, SEED, split).tolist() and len(part.rows) == n
        assert part.per_image == GRID * GRID and part.outputs.shape == (n * GRID * GRID, 64)
        m = part.manifest
        assert m == manifests[split]
        assert (m["kind"], m["shape"], m["images"], m["count"], m["dtype"], m["seed"]) == (
            PROMPTED, [GRID, GRID], n, n * GRID * GRID, "float16", SEED)
        assert m["backbone"] == prompts.backbone.identity and m["prompts"] == DESCRIBE
        assert m["sha256"] == {name: file_sha256(tmp_path / "cache" / split / name)
                               for name in ("outputs.npy", "rows.npy")}
        # rows i * K .. i * K + K - 1 are image rows[i]'s K copies, ring by ring, as the prompting CLIP embeds them
        x = torch.stack([prompts.backbone.preprocess(source.load(int(r))) for r in part.rows])
        direct = prompts(x).numpy().reshape(n * GRID * GRID, -1)
        stored = part.outputs[0:len(part.outputs)].astype(np.float32)
        np.testing.assert_allclose(stored, direct, rtol=1e-2, atol=1e-2)
        assert np.abs(stored[0] - stored[1]).max() > 1e-3  # the rings differ: copies are not one image repeated
    with pytest.raises(CacheMismatchError, match="not feature_maps"):
        read_features(tmp_path / "cache", "test")


def test_an_interrupted_write_publishes_nothing_and_resumes_the_finished_split(dataset, prompts, tmp_path):
    clean = write(dataset, prompts, tmp_path / "clean", tmp_path / "clean-scratch")
    old = write(dataset, prompts, tmp_path / "cache", tmp_path / "scratch", seed=SEED + 1)  # a cache already there
    before = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "cache").rglob("*") if p.is_file()}

    splits = dict(dataset.splits)
    dataset.splits["test"] = Interrupting(splits["test"], stop_at=int(sample_rows(6, 10, SEED, "test")[3]))
    try:
        with pytest.raises(KeyboardInterrupt):
            write(dataset, prompts, tmp_path / "cache", tmp_path / "scratch")
        after = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "cache").rglob("*") if p.is_file()}
        assert after == before, "the cache already published must be left whole"
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".cache.tmp")] == []
        assert read_prompted(tmp_path / "cache", "test").manifest == old["test"]

        dataset.splits["train"] = Interrupting(splits["train"])
        dataset.splits["test"] = Interrupting(splits["test"])
        resumed = write(dataset, prompts, tmp_path / "cache", tmp_path / "scratch")
        assert dataset.splits["train"].loaded == [], "the train split was finished: its scratch is reused"
        assert dataset.splits["test"].loaded != []
    finally:
        dataset.splits.update(splits)
    assert resumed == clean  # the manifests, sha256 of every file included
    for split in COUNTS:
        a, b = (np.load(tmp_path / c / split / "outputs.npy") for c in ("cache", "clean"))
        assert a.tobytes() == b.tobytes()
