"""Encode a split's images into a preallocated float16 array, resumably, by one process or several.

Work in progress lives in a scratch folder keyed by everything that decides the
result (backbone, preprocessing, dataset fingerprint, batch size). Rows are
written at their offsets in a preallocated ``.npy`` file with ``pwrite`` (memory
stays bounded by the batch, not the dataset). ``split.json`` says what the array
is (key, count, dim); each shard of rows ``[lo, hi)`` (all of them for one process;
a run of whole batches per worker of a sharded stage, ``runtime.workers``)
records in ``progress-<lo>-<hi>.json``, after an fsync, how far it is final. A
killed run resumes each shard from there; a run with another key starts the
split again.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from sparse_cbm.runtime.atomic import atomic_write_json
from sparse_cbm.datasets.base import ImageSource
from sparse_cbm.errors import CacheMismatchError, CorruptImageError
from sparse_cbm.runtime.workers import Workers, shard

if TYPE_CHECKING:
    from sparse_cbm.clip.backbone import Backbone

log = logging.getLogger(__name__)

EMBEDDINGS = "embeddings.npy"
HEADER = "split.json"
# Seconds between commits of a shard's progress (an fsync each): what a killed run loses at most. The
# environment variable sets it for a whole run (the tests that kill a worker mid-stage set it to 0).
COMMIT_EVERY_ENV = "SPARSE_CBM_COMMIT_EVERY_S"


def commit_interval() -> float:
    """Seconds between progress commits: ``SPARSE_CBM_COMMIT_EVERY_S``, else 10."""
    return float(os.environ.get(COMMIT_EVERY_ENV, "10"))


def progress_name(lo: int, hi: int) -> str:
    """The progress file of the shard of rows ``[lo, hi)``."""
    return f"progress-{lo}-{hi}.json"


def preallocate_npy(path: Path, count: int, dim: int) -> int:
    """Create a float16 (count, dim) .npy file (sparse on disk); return the byte offset of its data."""
    header = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(count, dim))
    return int(header.offset)


def npy_data_offset(path: Path) -> int:
    """Byte offset of the data in an existing .npy file."""
    return int(np.load(path, mmap_mode="r").offset)


class _Preprocessed(Dataset):
    """Rows ``start..stop`` of a source, preprocessed; unreadable images come back blank with a reason."""

    def __init__(self, source: ImageSource, preprocess, blank: torch.Tensor, start: int, stop: int):
        self.source = source
        self.preprocess = preprocess
        self.blank = blank
        self.start = start
        self.stop = stop

    def __len__(self) -> int:
        return max(self.stop - self.start, 0)

    def __getitem__(self, k: int):
        row = self.start + k
        try:
            return self.preprocess(self.source.load(row)), row, "", ""
        except CorruptImageError as exc:
            return self.blank, row, exc.path, exc.reason


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


@dataclass
class PartialSplit:
    """The scratch state of one split's shard of rows ``[lo, hi)`` (``hi`` None: to the end): a preallocated
    array shared by every shard, and how far this shard has filled it (``rows_done``, a row number)."""

    folder: Path
    key: str
    count: int
    dim: int
    rows_done: int = 0
    skipped: List[Tuple[int, str]] = field(default_factory=list)
    offset: int = 0  # byte offset of the first row in embeddings.npy
    lo: int = 0
    hi: Optional[int] = None

    def __post_init__(self):
        if self.hi is None:
            self.hi = self.count
        self.rows_done = max(self.rows_done, self.lo)

    @property
    def embeddings_path(self) -> Path:
        return self.folder / EMBEDDINGS

    @property
    def done(self) -> bool:
        return self.rows_done >= self.hi

    @classmethod
    def prepare(cls, folder: Path, key: str, count: int, dim: int) -> None:
        """Keep the scratch folder if it was made with the same key, count and dim; otherwise start it afresh
        (the leader does this, alone, before any shard opens it)."""
        folder = Path(folder)
        state = _read_json(folder / HEADER)
        if state == {"key": key, "count": count, "dim": dim} and (folder / EMBEDDINGS).is_file():
            return
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        preallocate_npy(folder / EMBEDDINGS, count, dim)
        atomic_write_json(folder / HEADER, {"key": key, "count": count, "dim": dim})

    @classmethod
    def open_shard(cls, folder: Path, key: str, count: int, dim: int, lo: int = 0,
                   hi: Optional[int] = None) -> "PartialSplit":
        """This shard's state in a prepared scratch folder, resumed from its progress file."""
        folder = Path(folder)
        hi = count if hi is None else hi
        if _read_json(folder / HEADER) != {"key": key, "count": count, "dim": dim}:
            raise CacheMismatchError(f"{folder} is not the scratch array of this run (another run of the stage "
                                     f"changed it?): stop every other run of the stage, then rerun it.")
        state = _read_json(folder / progress_name(lo, hi))
        part = cls(folder, key, count, dim, int(state.get("rows_done", lo)),
                   [(int(r), str(m)) for r, m in state.get("skipped", [])], npy_data_offset(folder / EMBEDDINGS),
                   lo, hi)
        if lo < part.rows_done < hi:
            log.info("resuming %s rows %d-%d at row %d", folder.name, lo, hi, part.rows_done)
        return part

    @classmethod
    def open(cls, folder: Path, key: str, count: int, dim: int) -> "PartialSplit":
        """One process's whole split: prepared, then opened as the single shard ``[0, count)``."""
        cls.prepare(folder, key, count, dim)
        return cls.open_shard(folder, key, count, dim)

    @classmethod
    def gather(cls, folder: Path, key: str, count: int, dim: int,
               bounds: Sequence[Tuple[int, int]]) -> "PartialSplit":
        """The whole split, once every shard of ``bounds`` is done: their skipped rows together."""
        parts = [cls.open_shard(folder, key, count, dim, lo, hi) for lo, hi in bounds]
        unfinished = [(p.lo, p.hi, p.rows_done) for p in parts if not p.done]
        if unfinished:
            raise CacheMismatchError(f"{folder}: shards {unfinished} (lo, hi, rows done) are unfinished after "
                                     f"every worker ended: rerun the stage, and it resumes them.")
        skipped = sorted(s for p in parts for s in p.skipped)
        return cls(folder, key, count, dim, count, skipped, npy_data_offset(folder / EMBEDDINGS))

    def write(self, start_row: int, rows: np.ndarray) -> None:
        """Write float16 rows at their place in the preallocated file."""
        rows = np.ascontiguousarray(rows, dtype=np.float16)
        with open(self.embeddings_path, "r+b") as fh:
            os.pwrite(fh.fileno(), rows.tobytes(), self.offset + start_row * self.dim * 2)

    def commit(self) -> None:
        """Make the rows written so far durable, then record them as done."""
        with open(self.embeddings_path, "r+b") as fh:
            os.fsync(fh.fileno())
        atomic_write_json(self.folder / progress_name(self.lo, self.hi),
                          {"rows_done": self.rows_done, "skipped": self.skipped})


def open_shared(folder: Path, key: str, count: int, dim: int, bounds: Tuple[int, int],
                workers: Workers) -> PartialSplit:
    """This worker's shard of a scratch split that the leader prepares while the others wait."""
    if workers.leader:
        PartialSplit.prepare(folder, key, count, dim)
    workers.barrier()
    return PartialSplit.open_shard(folder, key, count, dim, *bounds)


def embed_split(backbone: Backbone, source: ImageSource, folder: Path, key: str, *, batch_size: int,
                num_workers: int, skip_corrupt: bool, desc: str, commit_every_s: Optional[float] = None,
                workers: Optional[Workers] = None) -> PartialSplit:
    """Fill (or finish filling) this worker's shard of the scratch array of one split (one process: all of
    it); return its state. Sharded, the caller gathers the shards after the workers meet."""
    workers = workers or Workers()
    count = len(source)
    bounds = shard(count, batch_size, workers.rank, workers.world)
    part = open_shared(folder, key, count, backbone.embed_dim, bounds, workers)
    desc = desc if workers.world == 1 else f"{desc} (worker {workers.rank})"
    if part.done:
        return part
    data = _Preprocessed(source, backbone.preprocess, backbone.blank_input, part.rows_done, part.hi)
    loader = DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=backbone.device.type == "cuda", persistent_workers=False)
    # Keep the garbage collector of forked workers from touching (and so copying) the
    # parent's objects: without this, each worker's memory creeps up towards the parent's.
    gc.freeze()
    try:
        _fill(backbone, part, loader, skip_corrupt, desc,
              commit_interval() if commit_every_s is None else commit_every_s)
    finally:
        gc.unfreeze()
    part.commit()
    return part


def _fill(backbone: Backbone, part: PartialSplit, loader: DataLoader, skip_corrupt: bool, desc: str,
          commit_every_s: float) -> None:
    last_commit = time.monotonic()
    with tqdm(total=part.hi - part.lo, initial=part.rows_done - part.lo, desc=desc, unit="img", file=sys.stderr,
              dynamic_ncols=True, mininterval=1.0) as bar:
        for images, rows, paths, reasons in loader:
            bad = [k for k, path in enumerate(paths) if path]
            if bad and not skip_corrupt:
                raise CorruptImageError(paths[bad[0]], reasons[bad[0]])
            for k in bad:
                log.warning("skipping unreadable image %s: %s", paths[k], reasons[k])
                part.skipped.append((int(rows[k]), f"{paths[k]}: {reasons[k]}"))
            part.write(int(rows[0]), backbone.encode_images(images).numpy())
            part.rows_done = int(rows[-1]) + 1
            if time.monotonic() - last_commit >= commit_every_s:
                part.commit()
                last_commit = time.monotonic()
            bar.update(len(rows))
