"""What feeds glm-saga for the sparse final layer (``sparse_layer.fit_sparse_path``): the train split a
block at a time, and the SAGA table on disk.

Memory. Nothing N x |D| is ever held: the train split's image embeddings (an array, a
memory map or ``NpyRows``) are read a batch at a time, and the CBL activations are computed
per batch by glm-saga's ``preprocess`` hook. glm-saga's SAGA table (one float32 per example
and class: 5 GB at ImageNet's 1.28M x 1,000) lives in memory, or, with ``table="disk"``
(and ``"auto"`` above ``table_budget_bytes``), in a temporary file read and written with
``os.pread``/``os.pwrite`` (``DiskTable``). What glm-saga does with the table (glm_saga
0.1.2, ``elasticnet.py``, read for this): ``train_saga`` takes ``state["a_table"].to(
table_device)`` at its start (or makes ``torch.zeros(n_ex, n_classes)`` when no state is
given), reads ``a_table[idx].to(device)`` and writes ``a_table[idx] = a.to(table_device)``
once per batch, and returns ``a_table.cpu()`` in the state it hands back (after the last
epoch, on its tolerance test or on its look-behind test); ``glm_saga`` passes that state to
the next lambda and returns it; nothing else touches it. ``DiskTable`` implements exactly
these four operations.

Batches are contiguous blocks of rows; what is shuffled, with a seeded generator and a
fresh order every pass, is the order of the blocks (``BlockLoader``), so the table is read
and written a block at a time. SAGA over a fixed partition into minibatches minimises the
same objective (each block is one term of the sum). On a file sorted by class, blocks are
one class each; the solution is the same, convergence may be slower.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch

from sparse_cbm.storage.rows import FileRows, NpyRows


def _read_rows(embeddings, lo: int, hi: int, raw: Optional[np.ndarray]) -> torch.Tensor:
    """Rows lo:hi as a new float32 (hi - lo, d) tensor."""
    if isinstance(embeddings, NpyRows):
        rows = embeddings.read_into(lo, raw[:hi - lo])
    else:
        rows = np.asarray(embeddings[lo:hi])
    return torch.from_numpy(np.array(rows, dtype=np.float32, copy=True))


class BlockLoader:
    """glm-saga's loader: (X, y, idx) batches, X the raw image embeddings as float32, idx the rows'
    indices. Batches are contiguous blocks of ``batch_size`` rows (the last may be shorter); with
    ``shuffle`` the blocks come in a random order from a generator seeded with ``seed``, a fresh
    order every pass, so the same seed gives the same sequence of passes. ``max_blocks`` stops each
    pass after that many blocks (benchmarks)."""

    def __init__(self, embeddings, labels: np.ndarray, batch_size: int, *, shuffle: bool = True, seed: int = 0,
                 max_blocks: Optional[int] = None):
        if len(embeddings) != len(labels):
            raise ValueError(f"{len(embeddings)} embeddings but {len(labels)} labels")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.embeddings, self.labels = embeddings, np.asarray(labels, dtype=np.int64)
        self.batch_size, self.shuffle, self.max_blocks = batch_size, shuffle, max_blocks
        self.rng = np.random.default_rng(seed)
        self.num_blocks = math.ceil(len(self.labels) / batch_size)
        self._raw = (np.empty((batch_size, embeddings.shape[1]), dtype=embeddings.dtype)
                     if isinstance(embeddings, NpyRows) else None)

    def __len__(self) -> int:
        return self.num_blocks if self.max_blocks is None else min(self.num_blocks, self.max_blocks)

    def __iter__(self):
        order = self.rng.permutation(self.num_blocks) if self.shuffle else np.arange(self.num_blocks)
        n = len(self.labels)
        for b in order[:len(self)]:
            lo, hi = int(b) * self.batch_size, min((int(b) + 1) * self.batch_size, n)
            yield (_read_rows(self.embeddings, lo, hi, self._raw), torch.from_numpy(self.labels[lo:hi].copy()),
                   torch.arange(lo, hi))



class DiskTable(FileRows):
    """glm-saga's SAGA table, (n, c) float32, in a file read and written with ``os.pread``/``os.pwrite``
    (a memory map would not do: every page touched counts towards resident memory). Implements what
    glm-saga 0.1.2 calls on it: ``table[idx]`` -> a new (len(idx), c) tensor, ``table[idx] = values``,
    and ``.to(device)`` and ``.cpu()``, which return the table itself. It starts all zeros (a sparse
    file). Indices are read and written as runs of consecutive rows: one call per contiguous block."""

    def __init__(self, path: str | Path, n: int, c: int):
        self.path, self.shape = Path(path), (int(n), int(c))
        self.row_bytes = 4 * self.shape[1]
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        os.ftruncate(self._fd, self.shape[0] * self.row_bytes)

    def __len__(self) -> int:
        return self.shape[0]

    def size(self, dim: Optional[int] = None):
        return self.shape if dim is None else self.shape[dim]

    def _runs(self, idx) -> List[Tuple[int, int, int]]:
        """(first row, count, position in idx) of each run of consecutive rows."""
        if isinstance(idx, slice):
            start, stop, step = idx.indices(self.shape[0])
            idx = np.arange(start, stop, step)
        idx = torch.as_tensor(idx).cpu().numpy().astype(np.int64, copy=False).reshape(-1)
        if len(idx) and (idx.min() < 0 or idx.max() >= self.shape[0]):
            raise IndexError(f"row index out of range for a table of {self.shape[0]} rows")
        if len(idx) == 0:
            return []
        cuts = np.flatnonzero(np.diff(idx) != 1) + 1
        starts = np.concatenate([[0], cuts])
        ends = np.concatenate([cuts, [len(idx)]])
        return [(int(idx[s]), int(e - s), int(s)) for s, e in zip(starts, ends)]

    def __getitem__(self, idx) -> torch.Tensor:
        runs = self._runs(idx)
        out = np.empty((sum(r[1] for r in runs), self.shape[1]), dtype=np.float32)
        raw = memoryview(out.reshape(-1).view(np.uint8))
        for first, count, at in runs:
            view = raw[at * self.row_bytes:(at + count) * self.row_bytes]
            done, offset = 0, first * self.row_bytes
            while done < len(view):
                got = os.preadv(self._fd, [view[done:]], offset + done)
                if got == 0:
                    raise EOFError(f"{self.path}: table file ends before row {first + count}")
                done += got
        return torch.from_numpy(out)

    def __setitem__(self, idx, values) -> None:
        arr = torch.as_tensor(values).detach().to("cpu", torch.float32).contiguous().numpy()
        raw = memoryview(arr.reshape(-1).view(np.uint8))
        for first, count, at in self._runs(idx):
            view = raw[at * self.row_bytes:(at + count) * self.row_bytes]
            done, offset = 0, first * self.row_bytes
            while done < len(view):
                done += os.pwrite(self._fd, view[done:], offset + done)

    def to(self, *args, **kwargs) -> "DiskTable":
        return self

    def cpu(self) -> "DiskTable":
        return self
