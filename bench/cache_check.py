"""Benchmark of the cache check: the sha256 of a cache file against one pass that reads it, in one run.

A stage that reads a cache first checks every file its manifest lists against the recorded sha256
(``sparse_cbm.storage.manifest.verify_files``). This writes a float16 ``.npy`` of ``--gb`` GB (2 GB by
default, an ImageNet-sized image cache is 1.28M x 768 x 2 bytes = 1.97 GB), then times, on the same file:
the check (hashlib's sha256, 1 MiB reads), one pass over the rows as the stages read them (``NpyRows``,
4,096 rows a batch, converted to float32), and a second check in the same process (memoised by size and
mtime). The file is in the page cache for both (just written): the ratio is of CPU costs; from a cold
disk both wait on the same reads.

Usage: python bench/cache_check.py [--gb 2] [--dim 768]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SMOKE_ARGS = ["--gb", "0.01", "--dim", "64"]


def main(argv=None) -> None:
    from sparse_cbm.storage.manifest import _VERIFIED, file_sha256, verify_files
    from sparse_cbm.storage.rows import NpyRows

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gb", type=float, default=2.0)
    parser.add_argument("--dim", type=int, default=768)
    args = parser.parse_args(argv)
    rows = int(args.gb * 1e9 / (args.dim * 2))
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        path = Path(tmp) / "embeddings.npy"
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(rows, args.dim))
        rng = np.random.default_rng(0)
        for lo in range(0, rows, 65536):
            out[lo:lo + 65536] = rng.standard_normal((min(65536, rows - lo), args.dim), dtype=np.float32)
        out.flush()
        del out
        size = path.stat().st_size
        print(f"cache file of {size / 1e9:.2f} GB ({rows:,} x {args.dim} float16 .npy), {os.cpu_count()} CPUs; "
              f"in the page cache (just written)")
        start = time.perf_counter()
        recorded = file_sha256(path)
        check = time.perf_counter() - start
        reader = NpyRows(path)
        buf = np.empty((4096, args.dim), dtype=np.float16)
        start = time.perf_counter()
        total = 0.0
        for lo in range(0, rows, 4096):
            total += float(reader.read_into(lo, buf).astype(np.float32).sum())
        read = time.perf_counter() - start
        reader.close()
        manifest = {"sha256": {path.name: recorded}}
        _VERIFIED.clear()
        start = time.perf_counter()
        verify_files(Path(tmp), manifest, "embed_images")
        first = time.perf_counter() - start
        start = time.perf_counter()
        verify_files(Path(tmp), manifest, "embed_images")
        second = time.perf_counter() - start
        print(f"sha256 check: {check:.2f} s ({size / check / 1e9:.2f} GB/s) | one read pass (NpyRows, 4,096 rows a "
              f"batch, to float32): {read:.2f} s ({size / read / 1e9:.2f} GB/s) | check / read pass {check / read:.2f}")
        print(f"verify_files: first check {first:.2f} s, second in the same process {second * 1000:.2f} ms (memoised)")


if __name__ == "__main__":
    main()
