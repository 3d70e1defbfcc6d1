"""The spatial branch's two caches, both built like the image cache (resumable, published whole).

* **prompted copies** (``embed_prompted``): for a seeded sample of train images (to learn the
  concept maps) and of test images (to score the raw similarities P), the CLIP embeddings of
  each image's grid^2 ringed copies. P[n, m, h, w] is computed from them a batch at a time,
  never stored: its size is images x concepts x grid^2.
* **the concepts' embeddings** by the same CLIP (``embed_prompt_text``, ``prompt_concepts/``): P's
  other factor; with ``spatial.prompts`` null they equal the text cache's. Beside them, those of
  the class prompts (``spatial.class_concepts``) of the paper's Table 2 model.
* **feature maps** (``embed_features``): every image's unpooled feature maps from the explained
  backbone, flattened (C * h * w per image), for every split.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from sparse_cbm.datasets.base import DatasetSplits
from sparse_cbm.errors import CacheMismatchError
from sparse_cbm.runtime.atomic import atomic_directory, atomic_write_json
from sparse_cbm.runtime.device import model_dtype
from sparse_cbm.runtime.workers import Workers
from sparse_cbm.spatial.features import FeatureBackbone
from sparse_cbm.spatial.prompts import PromptedCopies
from sparse_cbm.storage.image_outputs import compute_split, publish, read_output_split, run_key
from sparse_cbm.storage.text_cache import fill

log = logging.getLogger(__name__)
PROMPTED, FEATURES = "prompted_copies", "feature_maps"


CLASS_PROMPTS = "class_prompts.npy"  # spatial.class_concepts: one prompt a class


def sample_rows(n: int, count: Optional[int], seed: int, split: str) -> np.ndarray:
    """A seeded, sorted sample of ``min(count, n)`` rows of a split of ``n`` images; every row when
    ``count`` is None."""
    if count is None:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng([seed, sum(split.encode())])
    return np.sort(rng.choice(n, size=min(int(count), n), replace=False)).astype(np.int64)


def write_prompted_cache(dataset: DatasetSplits, prompts: PromptedCopies, counts: Dict[str, Optional[int]], out: str | Path,
                         scratch: str | Path, *, seed: int, batch_size: int, num_workers: int = 0,
                         describe: Dict | None = None, workers: Optional[Workers] = None) -> Dict[str, Dict]:
    """``counts``: images sampled per split (``{"train": 2000, "test": 480}``; None: all of it). ``workers``: this process's
    place among the workers of a sharded stage (``runtime.workers``)."""
    identity = {"backbone": prompts.backbone.identity, "grid": prompts.grid, "prompts": describe or {}}
    parts, rows = {}, {}
    dim = prompts.backbone.embed_dim
    for split, count in counts.items():
        source = dataset.splits[split]
        rows[split] = sample_rows(len(source), count, seed, split)
        key = run_key({**identity, "fingerprint": dataset.fingerprint(split), "rows": rows[split].tolist(),
                       "preprocess": prompts.backbone.preprocess_description, "dtype": str(prompts.backbone.dtype)})
        parts[split] = compute_split(source, rows[split], prompts.backbone.preprocess, prompts, Path(scratch) / split,
                                     key, per_image=prompts.per_image, dim=dim, batch_size=batch_size,
                                     num_workers=num_workers, desc=f"prompted copies {split}", workers=workers)
    manifest = {"kind": PROMPTED, "per_image": prompts.per_image, "shape": [prompts.grid, prompts.grid],
                "backbone": prompts.backbone.identity, "prompts": describe or {}, "seed": seed}
    return publish(out, parts, rows, manifest, scratch, batch_size=batch_size, workers=workers,
                   device=str(prompts.backbone.device))


def write_feature_cache(dataset: DatasetSplits, features: FeatureBackbone, out: str | Path, scratch: str | Path,
                        *, batch_size: int, splits: Sequence[str] = ("train", "val", "test"),
                        num_workers: int = 0, workers: Optional[Workers] = None) -> Dict[str, Dict]:
    """Every image's feature maps, flattened; the manifest keeps their (C, h, w)."""
    shape = feature_shape(features)
    dim = int(np.prod(shape))
    parts, rows = {}, {}
    for split in splits:
        source = dataset.splits[split]
        rows[split] = np.arange(len(source), dtype=np.int64)
        key = run_key({"features": features.identity, "fingerprint": dataset.fingerprint(split),
                       "dtype": str(model_dtype(features))})
        parts[split] = compute_split(source, rows[split], features.preprocess,
                                     lambda x: features.encode(x).reshape(len(x), 1, dim), Path(scratch) / split, key,
                                     per_image=1, dim=dim, batch_size=batch_size, num_workers=num_workers,
                                     desc=f"feature maps {split}", workers=workers)
    manifest = {"kind": FEATURES, "per_image": 1, "shape": list(shape), "backbone": features.identity}
    return publish(out, parts, rows, manifest, scratch, batch_size=batch_size, workers=workers,
                   device=str(features.device))


def feature_shape(features: FeatureBackbone) -> tuple:
    blank = features.blank_input()
    return tuple(int(s) for s in features.encode(blank[None]).shape[1:])


def read_prompted(cache: str | Path, split: str):
    return read_output_split(cache, split, "embed_prompted", PROMPTED)


def read_features(cache: str | Path, split: str):
    return read_output_split(cache, split, "embed_features", FEATURES)


def class_prompts(template: Optional[str], classes: Sequence[str]) -> List[str]:
    """``spatial.class_concepts`` filled with every class name, in the classes' order; none when null."""
    return [] if template is None else [fill(template, c) for c in classes]


def write_prompt_concepts(out: str | Path, backbone, concepts: Sequence[str], concepts_sha256: str,
                          class_prompts: Sequence[str] = ()) -> Dict:
    """The concepts' text embeddings (float32 (|D|, d), unnormalised) by the prompting CLIP, and those of
    ``class_prompts`` (``spatial.class_concepts``: one a class) when given."""
    embeddings = backbone.encode_texts(list(concepts)).numpy().astype(np.float32)
    manifest = {"kind": "prompt_concepts", "backbone": backbone.identity, "count": len(concepts),
                "dim": int(embeddings.shape[1]), "concept_list_sha256": concepts_sha256,
                "class_prompts": list(class_prompts)}
    with atomic_directory(out) as tmp:
        np.save(tmp / "embeddings.npy", embeddings)
        if class_prompts:
            np.save(tmp / CLASS_PROMPTS, backbone.encode_texts(list(class_prompts)).numpy().astype(np.float32))
        atomic_write_json(tmp / "manifest.json", manifest)
    return manifest


def _prompt_manifest(folder: Path, expect_backbone: Dict) -> Dict:
    import json

    if not (folder / "manifest.json").is_file():
        raise CacheMismatchError(f"{folder} holds no concept embeddings: run `dvc repro embed_prompt_text`.")
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    if manifest["backbone"] != expect_backbone:
        raise CacheMismatchError(f"{folder} was made by {manifest['backbone']}, the prompted copies by "
                                 f"{expect_backbone}: run `dvc repro embed_prompt_text`.")
    return manifest


def read_prompt_concepts(folder: str | Path, expect_concepts_sha256: str, expect_backbone: Dict) -> np.ndarray:
    """The prompting CLIP's concept embeddings; refused when made from another concept list or CLIP
    than the prompted copies."""
    folder = Path(folder)
    manifest = _prompt_manifest(folder, expect_backbone)
    if manifest["concept_list_sha256"] != expect_concepts_sha256:
        raise CacheMismatchError(f"{folder} was made from another concept list than data/filtered/concepts.txt: "
                                 f"run `dvc repro embed_prompt_text`.")
    return np.load(folder / "embeddings.npy")


def read_class_prompts(folder: str | Path, expect_prompts: Sequence[str], expect_backbone: Dict) -> np.ndarray:
    """The prompting CLIP's embeddings (|C|, d) of the class prompts (``spatial.class_concepts``); refused
    when made from other prompts or another CLIP."""
    folder = Path(folder)
    manifest = _prompt_manifest(folder, expect_backbone)
    made = manifest.get("class_prompts", [])
    if made != list(expect_prompts):
        held = (f"embeddings of the class prompts {made[:3]}" if made else
                "no class prompts (spatial.class_concepts was null when it was made)")
        raise CacheMismatchError(f"{folder} holds {held}, not of {list(expect_prompts)[:3]} (spatial.class_concepts): "
                                 f"run `dvc repro embed_prompt_text`.")
    return np.load(folder / CLASS_PROMPTS)
