"""Caches of per-image outputs other than the image embedding: SALF-CBM's prompted-copy embeddings
(each image's K ringed copies through CLIP) and the explained backbone's feature maps.

The same all-or-nothing, resumable machinery as the image cache (``storage.embed``): rows are
written at their offsets in a preallocated float16 ``.npy`` in a scratch folder keyed by
everything that decides them, progress is committed after an fsync, and the cache folder is
published by one rename when every split is done. Layout::

    <cache>/<split>/outputs.npy     float16 (n * R, dim): row i * R + r = output r of image rows[i]
    <cache>/<split>/rows.npy        int64 (n,): the rows of the image cache's split these images are
    <cache>/<split>/manifest.json   kind, what made them (backbone, prompts or layer), n, R, dim, shape, sha256
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from sparse_cbm import __version__
from sparse_cbm.datasets.base import ImageSource
from sparse_cbm.errors import CacheMismatchError
from sparse_cbm.runtime.atomic import atomic_directory, atomic_write_json, dumps_json
from sparse_cbm.runtime.workers import Workers, shard, shards
from sparse_cbm.storage.embed import PartialSplit, commit_interval, open_shared
from sparse_cbm.storage.manifest import MANIFEST, file_sha256, read_manifest
from sparse_cbm.storage.rows import NpyRows

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
OUTPUTS, ROWS = "outputs.npy", "rows.npy"


class _Chosen(Dataset):
    def __init__(self, source: ImageSource, rows: np.ndarray, preprocess, start: int, stop: int):
        self.source, self.rows, self.preprocess, self.start, self.stop = source, rows, preprocess, start, stop

    def __len__(self) -> int:
        return max(self.stop - self.start, 0)

    def __getitem__(self, k: int):
        return self.preprocess(self.source.load(int(self.rows[self.start + k]))), self.start + k


def run_key(parts: Dict[str, Any]) -> str:
    return hashlib.sha256(dumps_json({**parts, "format": FORMAT_VERSION}).encode()).hexdigest()[:20]


@torch.inference_mode()
def compute_split(source: ImageSource, rows: np.ndarray, preprocess: Callable,
                  outputs: Callable[[torch.Tensor], torch.Tensor], folder: Path, key: str, *, per_image: int,
                  dim: int, batch_size: int, num_workers: int, desc: str, commit_every_s: Optional[float] = None,
                  workers: Optional[Workers] = None) -> PartialSplit:
    """Fill (or finish filling) this worker's shard of the scratch array of one split (one process: all of it):
    ``outputs(images)`` maps a preprocessed batch (B, ...) to (B, per_image, dim)."""
    workers = workers or Workers()
    lo, hi = shard(len(rows), batch_size, workers.rank, workers.world)
    part = open_shared(folder, key, len(rows) * per_image, dim, (lo * per_image, hi * per_image), workers)
    desc = desc if workers.world == 1 else f"{desc} (worker {workers.rank})"
    start = part.rows_done // per_image
    if start >= hi:
        return part
    loader = DataLoader(_Chosen(source, rows, preprocess, start, hi), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers)
    every = commit_interval() if commit_every_s is None else commit_every_s
    started = last = time.monotonic()
    with tqdm(total=hi - lo, initial=start - lo, desc=desc, unit="img", file=sys.stderr, mininterval=1.0) as bar:
        for images, ks in loader:
            out = outputs(images).float().cpu().numpy().reshape(len(images) * per_image, dim)
            first = int(ks[0]) * per_image
            part.write(first, out)
            part.rows_done = first + len(out)
            if time.monotonic() - last >= every:
                part.commit()
                last = time.monotonic()
            bar.update(len(images))
    part.commit()
    elapsed = time.monotonic() - started
    log.info("%s: %d images in %.1f s (%.2f img/s)", desc, hi - start, elapsed, (hi - start) / max(elapsed, 1e-9))
    return part


def publish(out: str | Path, parts: Dict[str, PartialSplit], rows: Dict[str, np.ndarray], manifest: Dict[str, Any],
            scratch: str | Path, *, batch_size: int, workers: Optional[Workers] = None,
            device: str = "cpu") -> Dict[str, Dict[str, Any]]:
    """Once every worker's shards are done (``parts``: this worker's), move every split's array into place
    beside its rows and manifest, all in one rename (the leader; the other workers return ``{}``)."""
    workers = workers or Workers()
    run = workers.run_record(device)
    if not workers.leader:
        return {}
    per_image = {split: part.count // max(len(rows[split]), 1) for split, part in parts.items()}
    parts = {split: PartialSplit.gather(part.folder, part.key, part.count, part.dim,
                                        [(lo * per_image[split], hi * per_image[split])
                                         for lo, hi in shards(len(rows[split]), batch_size, workers.world)])
             for split, part in parts.items()}
    manifest = {**manifest, "run": run}
    manifests = {}
    with atomic_directory(out) as tmp:
        for split, part in parts.items():
            folder = tmp / split
            folder.mkdir(parents=True)
            os.replace(part.embeddings_path, folder / OUTPUTS)
            np.save(folder / ROWS, np.asarray(rows[split], dtype=np.int64))
            m = {**manifest, "format_version": FORMAT_VERSION, "split": split, "images": int(len(rows[split])),
                 "count": part.count, "dim": part.dim, "dtype": "float16", "sparse_cbm_version": __version__,
                 "sha256": {name: file_sha256(folder / name) for name in (OUTPUTS, ROWS)}}
            atomic_write_json(folder / MANIFEST, m)
            manifests[split] = m
    shutil.rmtree(scratch, ignore_errors=True)
    return manifests


@dataclass
class OutputSplit:
    outputs: NpyRows  # (n * per_image, dim), read with pread
    rows: np.ndarray  # (n,) image-cache rows
    manifest: Dict[str, Any]

    @property
    def per_image(self) -> int:
        return int(self.manifest["per_image"])


def read_output_split(cache: str | Path, split: str, stage: str, kind: str,
                      expect_backbone: Optional[Dict[str, Any]] = None) -> OutputSplit:
    folder = Path(cache) / split
    manifest = read_manifest(folder, FORMAT_VERSION, stage, expect_backbone)
    if manifest.get("kind") != kind:
        raise CacheMismatchError(f"{folder} holds {manifest.get('kind')}, not {kind}. Run `dvc repro {stage}`.")
    outputs = NpyRows(folder / OUTPUTS)
    if outputs.shape != (manifest["count"], manifest["dim"]):
        raise CacheMismatchError(f"{folder}: {OUTPUTS} has shape {outputs.shape}, the manifest says "
                                 f"({manifest['count']}, {manifest['dim']}). Run `dvc repro -f {stage}`.")
    return OutputSplit(outputs, np.load(folder / ROWS), manifest)
