"""Reading rows of a large .npy file without mapping it: resident memory stays bounded by
the rows asked for, however large the file (pages of a memory map count towards RSS
once touched, and random batches touch them all)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


class FileRows:
    """A file read (or written) by row with ``os.pread``/``os.pwrite`` through one descriptor, ``self._fd``,
    closed by ``close()`` or when the object goes."""

    _fd = -1

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self):
        self.close()


class NpyRows(FileRows):
    """Rows of a 2-D C-order .npy file, read with ``os.pread``: ``rows[idx]`` for an index
    array or a slice gives a new in-memory array."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        header = np.load(self.path, mmap_mode="r")
        if header.ndim != 2 or not header.flags.c_contiguous:
            raise ValueError(f"{path}: expected a 2-D C-order array, got shape {header.shape}")
        self.shape, self.dtype, self.offset = header.shape, header.dtype, int(header.offset)
        del header
        self.row_bytes = self.shape[1] * self.dtype.itemsize
        self._fd = os.open(self.path, os.O_RDONLY)

    def __len__(self) -> int:
        return self.shape[0]

    def _read(self, start: int, count: int) -> bytes:
        return os.pread(self._fd, count * self.row_bytes, self.offset + start * self.row_bytes)

    def __getitem__(self, index) -> np.ndarray:
        if isinstance(index, slice):
            start, stop, step = index.indices(self.shape[0])
            if step == 1:
                buf = self._read(start, max(stop - start, 0))
                return np.frombuffer(buf, dtype=self.dtype).reshape(-1, self.shape[1]).copy()
            index = np.arange(start, stop, step)
        index = np.asarray(index, dtype=np.int64)
        out = np.empty((len(index), self.shape[1]), dtype=self.dtype)
        view = out.view(np.uint8).reshape(len(index), self.row_bytes)
        for k, i in enumerate(index):
            view[k] = np.frombuffer(self._read(int(i), 1), dtype=np.uint8)
        return out

    def read_into(self, start: int, out: np.ndarray) -> np.ndarray:
        """Read rows ``start:start + len(out)`` (fewer at the end of the file) straight into ``out``, a
        C-order array of this file's dtype and width, with no intermediate copy; return the filled part."""
        count = max(min(len(out), self.shape[0] - start), 0)
        part = out[:count]
        if part.dtype != self.dtype or part.shape[1:] != self.shape[1:] or not part.flags.c_contiguous:
            raise ValueError(f"out must be a C-order {self.dtype} array of width {self.shape[1]}")
        raw = memoryview(part.reshape(-1).view(np.uint8))
        done, offset = 0, self.offset + start * self.row_bytes
        while done < len(raw):
            if hasattr(os, "preadv"):
                got = os.preadv(self._fd, [raw[done:]], offset + done)
            else:  # platforms without preadv
                chunk = os.pread(self._fd, len(raw) - done, offset + done)
                raw[done:done + len(chunk)] = chunk
                got = len(chunk)
            if got == 0:
                raise EOFError(f"{self.path}: file ends before row {start + count}")
            done += got
        return part
