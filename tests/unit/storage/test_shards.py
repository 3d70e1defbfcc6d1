"""Sharded embedding (runtime.workers) in one process: the workers are threads that meet at a
threading.Barrier, so the unit tier checks the shard layout, the shared scratch array, the gather and the
resume in seconds. The same code under torchrun with gloo: tests/pipeline/test_sharded_stages.py."""

import copy
import json
import threading

import pytest

from bench.sharded import cache_files as files_of
from sparse_cbm.datasets import load_dataset
from sparse_cbm.runtime.workers import Workers, shard, shards
from sparse_cbm.spatial.caches import write_feature_cache, write_prompted_cache
from sparse_cbm.spatial.features import feature_backbone
from sparse_cbm.spatial.prompts import PromptedCopies
from sparse_cbm.storage.embed import COMMIT_EVERY_ENV, progress_name
from sparse_cbm.storage.image_cache import write_image_cache
from tests.unit.storage.test_image_cache import Interrupting


class ThreadWorkers(Workers):
    """Worker ``rank`` of ``world`` threads, meeting at a shared barrier."""

    def __init__(self, rank, world, barrier, board):
        super().__init__(rank, world, rank, world)
        self._barrier, self._board = barrier, board

    def barrier(self):
        self._barrier.wait(timeout=120)

    def meet(self, value):
        self._board[self.rank] = value
        self._barrier.wait(timeout=120)
        return [self._board[r] for r in range(self.world)]


def run_workers(world, job):
    """``job(workers)`` on ``world`` threads; their results by rank, and their errors (a failing worker breaks
    the barrier, so the others stop too instead of waiting)."""
    barrier, board = threading.Barrier(world), {}
    results, errors = [None] * world, [None] * world

    def body(rank):
        try:
            results[rank] = job(ThreadWorkers(rank, world, barrier, board))
        except BaseException as exc:  # noqa: B036 (KeyboardInterrupt is the simulated kill)
            errors[rank] = exc
            barrier.abort()

    threads = [threading.Thread(target=body, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


@pytest.mark.parametrize("count, batch, world", [(100, 16, 2), (100, 16, 3), (7, 16, 2), (0, 4, 2), (64, 8, 8),
                                                 (65, 8, 8)])
def test_shards_are_runs_of_whole_batches_covering_every_row(count, batch, world):
    bounds = shards(count, batch, world)
    assert bounds[0][0] == 0 and bounds[-1][1] == count
    for (lo, hi), (lo2, _) in zip(bounds, bounds[1:]):
        assert lo <= hi == lo2
    for lo, hi in bounds:
        assert lo % batch == 0 and (hi % batch == 0 or hi == count)
    sizes = [-(-(hi - lo) // batch) for lo, hi in bounds]
    assert max(sizes) - min(sizes) <= 1  # batches spread evenly
    with pytest.raises(ValueError):
        shard(count, batch, world, world)


@pytest.fixture(scope="module")
def shapes():
    return load_dataset("shapes", seed=0, shapes_n_train=60, shapes_n_test=30, val_fraction=0.2,
                        shapes_preset="easy")


def assert_same_but_run(one: dict, sharded: dict, world: int):
    assert one.keys() == sharded.keys()
    for name in one:
        if name.endswith(":run"):
            assert one[name] == {"processes": 1, "devices": ["cpu"]}
            assert sharded[name] == {"processes": world, "devices": ["cpu"] * world}
        else:
            assert one[name] == sharded[name], name


@pytest.mark.parametrize("world", [2, 3])
def test_every_cache_is_byte_identical_whatever_the_number_of_workers(shapes, tiny_backbone, tmp_path, world):
    prompts = PromptedCopies(tiny_backbone, 3, 9.0, 2.0, (255, 0, 0))
    writers = {
        "images": lambda out, scratch, w: write_image_cache(shapes, tiny_backbone, out, scratch, batch_size=8,
                                                           num_workers=0, skip_corrupt=False, workers=w),
        "prompted": lambda out, scratch, w: write_prompted_cache(shapes, prompts, {"train": 21, "test": 9}, out,
                                                                 scratch, seed=0, batch_size=4, workers=w),
        # each worker its own model, as each process has: the feature hook of a shared one is not thread-safe
        "features": lambda out, scratch, w: write_feature_cache(
            shapes, feature_backbone("clip", None, "auto", copy.deepcopy(tiny_backbone)), out, scratch,
            batch_size=8, workers=w),
    }
    for name, write in writers.items():
        write(tmp_path / f"{name}-1", tmp_path / f"scratch-{name}-1", None)
        results, errors = run_workers(world, lambda w: write(tmp_path / f"{name}-n", tmp_path / f"s-{name}-n", w))
        assert errors == [None] * world
        assert results[0] and all(r == {} for r in results[1:])  # the leader published, the others did not
        assert not (tmp_path / f"s-{name}-n").exists()
        assert_same_but_run(files_of(tmp_path / f"{name}-1"), files_of(tmp_path / f"{name}-n"), world)


def test_a_worker_killed_mid_split_loses_only_its_unfinished_batches(shapes, tiny_backbone, tmp_path, monkeypatch):
    def write(dataset, out, scratch, w):
        return write_image_cache(dataset, tiny_backbone, out, scratch, batch_size=8, num_workers=0,
                                 skip_corrupt=False, workers=w)

    write(shapes, tmp_path / "one", tmp_path / "scratch-one", None)
    train = shapes.splits["train"]
    lo, hi = shard(len(train), 8, 1, 2)
    # worker 1 sees the same images through a source that dies in its shard's third batch
    theirs = load_dataset("shapes", seed=0, shapes_n_train=60, shapes_n_test=30, val_fraction=0.2,
                          shapes_preset="easy")
    theirs.splits["train"] = Interrupting(train, stop_at=lo + 19)
    monkeypatch.setenv(COMMIT_EVERY_ENV, "0")  # commit after every batch

    def job(w):
        return write(theirs if w.rank == 1 else shapes, tmp_path / "two", tmp_path / "scratch", w)

    _, errors = run_workers(2, job)
    assert isinstance(errors[1], KeyboardInterrupt) and isinstance(errors[0], threading.BrokenBarrierError)
    assert not (tmp_path / "two").exists()  # nothing half-made was published
    progress = json.loads((tmp_path / "scratch" / "train" / progress_name(lo, hi)).read_text())
    assert progress["rows_done"] == lo + 16  # its two whole batches were kept

    mine = load_dataset("shapes", seed=0, shapes_n_train=60, shapes_n_test=30, val_fraction=0.2,
                        shapes_preset="easy")
    mine.splits["train"] = Interrupting(train)
    theirs.splits["train"] = Interrupting(train)
    _, errors = run_workers(2, lambda w: write(theirs if w.rank == 1 else mine, tmp_path / "two",
                                               tmp_path / "scratch", w))
    assert errors == [None, None]
    assert mine.splits["train"].loaded == []  # worker 0's finished shard was not redone
    assert min(theirs.splits["train"].loaded) == lo + 16  # worker 1 resumed where it died
    assert_same_but_run(files_of(tmp_path / "one"), files_of(tmp_path / "two"), 2)
    assert not (tmp_path / "scratch").exists()
