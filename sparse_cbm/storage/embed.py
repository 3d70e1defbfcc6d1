"""Encode a split's images into a preallocated float16 array, resumably.

Work in progress lives in a scratch folder keyed by everything that decides the
result (backbone, preprocessing, dataset fingerprint, batch size). Rows are
written at their offsets in a preallocated ``.npy`` file with ``pwrite`` (memory
stays bounded by the batch, not the dataset), and ``progress.json`` records,
after an fsync, how many rows are final. A killed run resumes from there; a run
with another key starts the split again.
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
from typing import TYPE_CHECKING, List, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from sparse_cbm.runtime.atomic import atomic_write_json
from sparse_cbm.datasets.base import ImageSource
from sparse_cbm.errors import CorruptImageError

if TYPE_CHECKING:
    from sparse_cbm.clip.backbone import Backbone

log = logging.getLogger(__name__)

EMBEDDINGS = "embeddings.npy"
PROGRESS = "progress.json"


def preallocate_npy(path: Path, count: int, dim: int) -> int:
    """Create a float16 (count, dim) .npy file (sparse on disk); return the byte offset of its data."""
    header = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(count, dim))
    return int(header.offset)


def npy_data_offset(path: Path) -> int:
    """Byte offset of the data in an existing .npy file."""
    return int(np.load(path, mmap_mode="r").offset)


class _Preprocessed(Dataset):
    """Rows ``start..n`` of a source, preprocessed; unreadable images come back blank with a reason."""

    def __init__(self, source: ImageSource, preprocess, blank: torch.Tensor, start: int):
        self.source = source
        self.preprocess = preprocess
        self.blank = blank
        self.start = start

    def __len__(self) -> int:
        return len(self.source) - self.start

    def __getitem__(self, k: int):
        row = self.start + k
        try:
            return self.preprocess(self.source.load(row)), row, "", ""
        except CorruptImageError as exc:
            return self.blank, row, exc.path, exc.reason


@dataclass
class PartialSplit:
    """The scratch state of one split: a preallocated array and how far it is filled."""

    folder: Path
    key: str
    count: int
    dim: int
    rows_done: int = 0
    skipped: List[Tuple[int, str]] = field(default_factory=list)
    offset: int = 0  # byte offset of the first row in embeddings.npy

    @property
    def embeddings_path(self) -> Path:
        return self.folder / EMBEDDINGS

    @classmethod
    def open(cls, folder: Path, key: str, count: int, dim: int) -> "PartialSplit":
        """Resume the scratch state if it was made with the same key; otherwise start afresh."""
        folder = Path(folder)
        progress = folder / PROGRESS
        if progress.is_file() and (folder / EMBEDDINGS).is_file():
            try:
                state = json.loads(progress.read_text())
            except json.JSONDecodeError:
                state = {}
            if state.get("key") == key and state.get("count") == count and state.get("dim") == dim:
                part = cls(folder, key, count, dim, int(state["rows_done"]),
                           [(int(r), str(m)) for r, m in state.get("skipped", [])],
                           npy_data_offset(folder / EMBEDDINGS))
                if part.rows_done:
                    log.info("resuming %s at row %d of %d", folder.name, part.rows_done, count)
                return part
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        part = cls(folder, key, count, dim, offset=preallocate_npy(folder / EMBEDDINGS, count, dim))
        part.commit()
        return part

    def write(self, start_row: int, rows: np.ndarray) -> None:
        """Write float16 rows at their place in the preallocated file."""
        rows = np.ascontiguousarray(rows, dtype=np.float16)
        with open(self.embeddings_path, "r+b") as fh:
            os.pwrite(fh.fileno(), rows.tobytes(), self.offset + start_row * self.dim * 2)

    def commit(self) -> None:
        """Make the rows written so far durable, then record them as done."""
        with open(self.embeddings_path, "r+b") as fh:
            os.fsync(fh.fileno())
        atomic_write_json(self.folder / PROGRESS, {"key": self.key, "count": self.count, "dim": self.dim,
                                                   "rows_done": self.rows_done, "skipped": self.skipped})


def embed_split(backbone: Backbone, source: ImageSource, folder: Path, key: str, *, batch_size: int,
                num_workers: int, skip_corrupt: bool, desc: str, commit_every_s: float = 10.0) -> PartialSplit:
    """Fill (or finish filling) the scratch array of one split; return its final state."""
    part = PartialSplit.open(folder, key, len(source), backbone.embed_dim)
    if part.rows_done >= part.count:
        return part
    data = _Preprocessed(source, backbone.preprocess, backbone.blank_input, part.rows_done)
    loader = DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=backbone.device.type == "cuda", persistent_workers=False)
    # Keep the garbage collector of forked workers from touching (and so copying) the
    # parent's objects: without this, each worker's memory creeps up towards the parent's.
    gc.freeze()
    try:
        _fill(backbone, part, loader, skip_corrupt, desc, commit_every_s)
    finally:
        gc.unfreeze()
    part.commit()
    return part


def _fill(backbone: Backbone, part: PartialSplit, loader: DataLoader, skip_corrupt: bool, desc: str,
          commit_every_s: float) -> None:
    last_commit = time.monotonic()
    with tqdm(total=part.count, initial=part.rows_done, desc=desc, unit="img", file=sys.stderr,
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
