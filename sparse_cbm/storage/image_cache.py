"""The image-embedding cache: its layout, its manifest, how it is written and read.

Layout (one folder per split; row i of every array refers to the same image)::

    <cache>/classes.json                 cleaned and raw class names
    <cache>/<split>/embeddings.npy       float16 (N, d), unnormalised image embeddings
    <cache>/<split>/labels.npy           int64 (N,)
    <cache>/<split>/index.parquet        row, image_id, label, class_name (+ per-image columns of the dataset,
                                         and one bool column attr:<name> per annotated attribute)
    <cache>/<split>/manifest.json        backbone, preprocessing, dataset fingerprint, count, dim...

The manifest is written last: a split folder without one is incomplete. Readers
check it against what they expect and refuse a cache made by another backbone.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sparse_cbm import __version__
from sparse_cbm.runtime.atomic import atomic_directory, atomic_write_json, dumps_json
from sparse_cbm.datasets.base import ANNOTATION_PREFIX, Attribute, DatasetSplits
from sparse_cbm.runtime.workers import Workers, shards
from sparse_cbm.storage.embed import PartialSplit, embed_split, preallocate_npy
from sparse_cbm.errors import CacheMismatchError
from sparse_cbm.storage.rows import NpyRows
from sparse_cbm.storage.manifest import MANIFEST, file_sha256, read_manifest

if TYPE_CHECKING:
    from sparse_cbm.clip.backbone import Backbone

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: annotations in the index, attributes in the manifest


def _run_key(backbone: Backbone, fingerprint: str, batch_size: int) -> str:
    blob = dumps_json({"backbone": backbone.identity, "preprocess": backbone.preprocess_description,
                       "amp": backbone.amp, "dtype": str(backbone.dtype), "dataset": fingerprint, "batch_size": batch_size,
                       "format": FORMAT_VERSION})
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _compact(part: PartialSplit, keep: np.ndarray, dest: Path, chunk: int = 65536) -> None:
    """Copy the kept rows into a new array, a chunk at a time, with plain reads and writes
    (no memory map, so resident memory stays bounded by the chunk)."""
    row_bytes = part.dim * 2
    dest_offset = preallocate_npy(dest, int(keep.sum()), part.dim)
    with open(part.embeddings_path, "rb") as src, open(dest, "r+b") as out:
        out.seek(dest_offset)
        for lo in range(0, part.count, chunk):
            n = min(chunk, part.count - lo)
            src.seek(part.offset + lo * row_bytes)
            block = np.frombuffer(src.read(n * row_bytes), dtype=np.float16).reshape(n, part.dim)
            out.write(np.ascontiguousarray(block[keep[lo:lo + n]]).tobytes())


def _write_split(folder: Path, part: PartialSplit, dataset: DatasetSplits, split: str, fingerprint: str,
                 backbone: Backbone, extra_manifest: Dict[str, Any], run: Dict[str, Any]) -> Dict[str, Any]:
    source = dataset.splits[split]
    folder.mkdir(parents=True)
    keep = np.ones(part.count, dtype=bool)
    keep[[row for row, _ in part.skipped]] = False
    if keep.all():
        os.replace(part.embeddings_path, folder / "embeddings.npy")
    else:
        _compact(part, keep, folder / "embeddings.npy")
    labels = np.asarray(source.labels, dtype=np.int64)[keep]
    np.save(folder / "labels.npy", labels)
    rows = np.flatnonzero(keep)
    columns = {
        "row": pa.array(np.arange(len(rows), dtype=np.int64)),
        "image_id": pa.array([source.ids[i] for i in rows], type=pa.string()),
        "label": pa.array(labels),
        "class_name": pa.array([dataset.classes[y] for y in labels], type=pa.string()),
    }
    for name, values in source.extra_columns().items():
        columns[name] = pa.array([values[i] for i in rows])
    annotations = source.annotations()
    if annotations is not None:
        for k, attribute in enumerate(dataset.attributes):
            columns[ANNOTATION_PREFIX + attribute.name] = pa.array(np.asarray(annotations[rows, k], dtype=bool))
    pq.write_table(pa.table(columns), folder / "index.parquet")
    manifest = {
        "kind": "image_embeddings",
        "format_version": FORMAT_VERSION,
        "split": split,
        "count": int(keep.sum()),
        "dim": part.dim,
        "dtype": "float16",
        "normalized": False,
        "logit_scale": round(backbone.logit_scale, 6),
        "backbone": backbone.identity,
        "preprocess": backbone.preprocess_description,
        "dataset": {"name": dataset.name, "fingerprint": fingerprint,
                    "num_classes": len(dataset.classes), "classes": dataset.classes},
        "attributes": [{"name": a.name, "concept": a.concept} for a in dataset.attributes],
        "source": source.describe(),
        "skipped": [{"image_id": source.ids[row], "reason": reason} for row, reason in part.skipped],
        "sha256": {name: file_sha256(folder / name) for name in ("embeddings.npy", "labels.npy", "index.parquet")},
        "sparse_cbm_version": __version__,
        "run": run,
        **extra_manifest,
    }
    atomic_write_json(folder / MANIFEST, manifest)
    return manifest


def write_image_cache(dataset: DatasetSplits, backbone: Backbone, out: str | Path, scratch: str | Path, *,
                      batch_size: int, num_workers: int, skip_corrupt: bool,
                      extra_manifest: Optional[Dict[str, Any]] = None,
                      workers: Optional[Workers] = None) -> Dict[str, Dict[str, Any]]:
    """Embed every split of ``dataset`` (train, val, test and any other it has, such as
    ``test_corrupted``), then publish the whole cache folder at once (see the module docstring).
    Sharded (``workers``: one of several), each worker embeds its shard of every split and the leader
    publishes once all are done; the others return ``{}``."""
    out, scratch = Path(out), Path(scratch)
    workers = workers or Workers()
    keys: Dict[str, str] = {}
    fingerprints: Dict[str, str] = {}
    for split in dataset.splits:
        started = time.perf_counter()
        fingerprints[split] = dataset.fingerprint(split)
        keys[split] = _run_key(backbone, fingerprints[split], batch_size)
        part = embed_split(backbone, dataset.splits[split], scratch / split, keys[split], batch_size=batch_size,
                           num_workers=num_workers, skip_corrupt=skip_corrupt, desc=f"embed {split}",
                           workers=workers)
        n = part.hi - part.lo
        elapsed = time.perf_counter() - started
        log.info("%s (%s): %d images in %.1f s (%.1f img/s), %d skipped", split, workers.describe(), n, elapsed,
                 n / elapsed if elapsed > 0 else float("nan"), len(part.skipped))
    run = workers.run_record(backbone.device)
    if not workers.leader:
        return {}
    parts = {split: PartialSplit.gather(scratch / split, keys[split], len(source), backbone.embed_dim,
                                        shards(len(source), batch_size, workers.world))
             for split, source in dataset.splits.items()}
    manifests = {}
    with atomic_directory(out) as tmp:
        atomic_write_json(tmp / "classes.json", {"classes": dataset.classes, "raw_classes": dataset.raw_classes})
        for split, part in parts.items():
            manifests[split] = _write_split(tmp / split, part, dataset, split, fingerprints[split], backbone,
                                            extra_manifest or {}, run)
    shutil.rmtree(scratch, ignore_errors=True)
    return manifests


@dataclass
class ImageSplit:
    embeddings: np.ndarray  # float16 (N, d), memory-mapped
    labels: np.ndarray  # int64 (N,)
    manifest: Dict[str, Any]
    folder: Path

    def index(self):
        return pq.read_table(self.folder / "index.parquet").to_pandas()

    @property
    def attributes(self) -> List[Attribute]:
        """The dataset's annotated attributes (empty when it has none), in annotation column order."""
        return [Attribute(a["name"], a["concept"]) for a in self.manifest.get("attributes", [])]

    def annotations(self) -> Optional[np.ndarray]:
        """(N, A) bool annotations of every image of the split, or None (a dataset without them)."""
        if not self.attributes:
            return None
        columns = [ANNOTATION_PREFIX + a.name for a in self.attributes]
        table = pq.read_table(self.folder / "index.parquet", columns=columns)
        return np.stack([table.column(c).to_numpy(zero_copy_only=False) for c in columns], axis=1).astype(bool)

    def rows(self) -> NpyRows:
        """The embeddings read with pread, a batch at a time: bounded memory for any N."""
        return NpyRows(self.folder / "embeddings.npy")


def read_image_split(cache: str | Path, split: str, expect_backbone: Optional[Dict[str, Any]] = None) -> ImageSplit:
    """Open one split of the cache (embeddings memory-mapped) after checking its manifest."""
    folder = Path(cache) / split
    manifest = read_manifest(folder, FORMAT_VERSION, "embed_images", expect_backbone)
    embeddings = np.load(folder / "embeddings.npy", mmap_mode="r")
    labels = np.load(folder / "labels.npy")
    if embeddings.shape != (manifest["count"], manifest["dim"]) or labels.shape != (manifest["count"],):
        raise CacheMismatchError(f"{folder}: array shapes {embeddings.shape} / {labels.shape} disagree with the "
                                 f"manifest (count {manifest['count']}, dim {manifest['dim']}). "
                                 f"Run `dvc repro -f embed_images`.")
    return ImageSplit(embeddings=embeddings, labels=labels, manifest=manifest, folder=folder)
