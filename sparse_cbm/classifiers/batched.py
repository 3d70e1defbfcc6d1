"""Image embeddings a batch at a time, and class scores turned into predictions.

Every training-free classifier here has the same shape: read a batch of image
embeddings (float16 arrays, memory maps or ``NpyRows``), normalise the rows, score
every class with a matrix product, keep the arg-max and the top k. Memory stays
bounded by the batch, whatever N is.
"""

from __future__ import annotations

import warnings
from typing import Callable, Iterator, Optional, Tuple

import numpy as np
import torch

from sparse_cbm.storage.rows import NpyRows

Predictions = Tuple[np.ndarray, Optional[np.ndarray]]  # (top-1 (N,) int64, top-k (N, k) int64 or None)


def unit_rows(x) -> torch.Tensor:
    """A float32 copy of a 2-D array with unit-norm rows (zero rows stay zero)."""
    t = torch.tensor(np.asarray(x), dtype=torch.float32)
    return t.div_(torch.linalg.vector_norm(t, dim=1, keepdim=True).clamp_min_(1e-12))


def unit_batches(embeddings, batch_size: int) -> Iterator[Tuple[int, torch.Tensor]]:
    """(first row, float32 (B, d) tensor with unit rows) for consecutive batches. The tensor is one
    preallocated buffer, overwritten by the next batch: use it before asking for the next."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    n, d = len(embeddings), embeddings.shape[1]
    size = min(batch_size, max(n, 1))
    buf = torch.empty(size, d, dtype=torch.float32)
    raw = np.empty((size, d), dtype=embeddings.dtype) if isinstance(embeddings, NpyRows) else None
    for lo in range(0, n, batch_size):
        rows = embeddings.read_into(lo, raw) if raw is not None else np.asarray(embeddings[lo:lo + batch_size])
        x = buf[:len(rows)]
        with warnings.catch_warnings():  # a read-only memory map: torch only reads it here
            warnings.simplefilter("ignore", UserWarning)
            x.copy_(torch.from_numpy(rows))  # float16 -> float32 into the buffer (8x faster than numpy's)
        x.div_(torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min_(1e-12))
        yield lo, x


class Buffers:
    """Matrix-product outputs reused batch after batch: a fresh tensor of tens of MB costs a page
    fault per 4 KiB every time it is allocated."""

    def __init__(self):
        self._bufs: dict = {}

    def mm(self, name: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """a @ b written into the buffer ``name`` (valid until the next call with that name)."""
        n, m = a.shape[0], b.shape[1]
        buf = self._bufs.get(name)
        if buf is None or buf.shape[0] < n or buf.shape[1] != m:
            buf = self._bufs[name] = torch.empty(n, m, dtype=torch.float32)
        return torch.mm(a, b, out=buf[:n])


@torch.inference_mode()
def predict_batches(embeddings, score_fn: Callable[[torch.Tensor], torch.Tensor], batch_size: int,
                    k: int = 5) -> Predictions:
    """Top-1 and top-k class indices of ``score_fn(unit image rows) -> (B, C) scores``, a batch at a time.

    With ``k > 1`` the top-1 is the first column of the top-k (so it is always among them);
    with ``k <= 1`` only the arg-max is taken and the top-k is None. The top-k has
    ``min(k, C)`` columns, best first.
    """
    n = len(embeddings)
    pred = np.empty(n, dtype=np.int64)
    top: Optional[np.ndarray] = None if k <= 1 else np.empty((n, k), dtype=np.int64)
    for lo, x in unit_batches(embeddings, batch_size):
        scores = score_fn(x)
        hi = lo + len(x)
        if top is None:
            pred[lo:hi] = scores.argmax(dim=1).numpy()
            continue
        if lo == 0 and scores.shape[1] < k:
            top = np.empty((n, scores.shape[1]), dtype=np.int64)
        best = scores.topk(top.shape[1], dim=1).indices.numpy()
        top[lo:hi] = best
        pred[lo:hi] = best[:, 0]
    return pred, top
