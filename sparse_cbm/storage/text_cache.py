"""The text-embedding cache: CLIP text embeddings of the kept concepts, the class prompts
and the class descriptions.

Layout::

    <cache>/concepts.txt            the kept concepts, one a line (row i of concepts.npy)
    <cache>/concepts.npy            float16 (|D|, d), unnormalised
    <cache>/class_prompts.npy       float16 (T * C, d), template-major: row t * C + c
    <cache>/class_prompts.parquet   row, template_index, class_index, text
    <cache>/descriptions.npy        float16 (P, d): "{class}, which has {concept}" per kept class-concept pair
    <cache>/descriptions.parquet    row, class_index, class_name, concept, text
    <cache>/manifest.json           backbone, classes, templates, counts, sha256 of the concept list...

Concepts shared by every class (``class_index`` -1) are in the bottleneck but make
no descriptions. Readers refuse a cache made from another concept list or backbone.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sparse_cbm import __version__
from sparse_cbm.runtime.atomic import atomic_directory, atomic_write_json
from sparse_cbm.errors import CacheMismatchError
from sparse_cbm.storage.manifest import MANIFEST, file_sha256, read_manifest

if TYPE_CHECKING:
    from sparse_cbm.clip.backbone import Backbone

FORMAT_VERSION = 1
FILES = ("concepts.txt", "concepts.npy", "class_prompts.npy", "class_prompts.parquet", "descriptions.npy",
         "descriptions.parquet")


def concept_list_text(concepts: Sequence[str]) -> str:
    return "".join(f"{c}\n" for c in concepts)


def concept_list_sha256(concepts: Sequence[str]) -> str:
    """sha256 of the concept list as written to ``concepts.txt``."""
    return hashlib.sha256(concept_list_text(concepts).encode("utf-8")).hexdigest()


def fill(template: str, class_name: str, concept: str = "") -> str:
    return template.replace("{class}", class_name).replace("{concept}", concept)


def _save(path: Path, backbone: Backbone, texts: List[str], batch_size: int) -> None:
    emb = backbone.encode_texts(texts, batch_size) if texts else np.zeros((0, backbone.embed_dim))
    np.save(path, np.asarray(emb, dtype=np.float16))


def write_text_cache(out: str | Path, backbone: Backbone, classes: Sequence[str], concepts: Sequence[str],
                     pairs: pd.DataFrame, templates: Sequence[str], description_template: str, *,
                     batch_size: int, extra_manifest: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Embed and publish the cache folder in one rename. ``pairs`` has class_index, class_name, concept."""
    linked = pairs[pairs["class_index"] >= 0].reset_index(drop=True)
    prompts = [fill(t, c) for t in templates for c in classes]
    descriptions = [fill(description_template, c, k) for c, k in zip(linked["class_name"], linked["concept"])]
    with atomic_directory(out) as tmp:
        (tmp / "concepts.txt").write_text(concept_list_text(concepts), encoding="utf-8")
        _save(tmp / "concepts.npy", backbone, list(concepts), batch_size)
        _save(tmp / "class_prompts.npy", backbone, prompts, batch_size)
        _save(tmp / "descriptions.npy", backbone, descriptions, batch_size)
        pq.write_table(pa.table({
            "row": pa.array(np.arange(len(prompts), dtype=np.int64)),
            "template_index": pa.array(np.repeat(np.arange(len(templates)), len(classes)).astype(np.int64)),
            "class_index": pa.array(np.tile(np.arange(len(classes)), len(templates)).astype(np.int64)),
            "text": pa.array(prompts, type=pa.string())}), tmp / "class_prompts.parquet")
        pq.write_table(pa.table({
            "row": pa.array(np.arange(len(linked), dtype=np.int64)),
            "class_index": pa.array(linked["class_index"].to_numpy(np.int64)),
            "class_name": pa.array(list(linked["class_name"]), type=pa.string()),
            "concept": pa.array(list(linked["concept"]), type=pa.string()),
            "text": pa.array(descriptions, type=pa.string())}), tmp / "descriptions.parquet")
        manifest = {
            "kind": "text_embeddings", "format_version": FORMAT_VERSION, "dtype": "float16", "normalized": False,
            "dim": backbone.embed_dim, "logit_scale": round(backbone.logit_scale, 6), "backbone": backbone.identity,
            "classes": list(classes), "templates": list(templates), "description_template": description_template,
            "counts": {"concepts": len(concepts), "class_prompts": len(prompts), "descriptions": len(descriptions)},
            "concept_list_sha256": concept_list_sha256(concepts),
            "sha256": {name: file_sha256(tmp / name) for name in FILES},
            "sparse_cbm_version": __version__, **(extra_manifest or {}),
        }
        atomic_write_json(tmp / MANIFEST, manifest)
    return manifest


@dataclass
class TextCache:
    concepts: List[str]
    concept_embeddings: np.ndarray  # float16 (|D|, d)
    class_prompt_embeddings: np.ndarray  # float16 (T, C, d)
    descriptions: pd.DataFrame  # row, class_index, class_name, concept, text
    description_embeddings: np.ndarray  # float16 (P, d)
    manifest: Dict[str, Any]


def read_text_cache(folder: str | Path, expect_backbone: Optional[Dict[str, Any]] = None,
                    expect_concepts_sha256: Optional[str] = None) -> TextCache:
    """Open the text cache after checking its manifest against what the reader expects."""
    folder = Path(folder)
    manifest = read_manifest(folder, FORMAT_VERSION, "embed_text", expect_backbone)
    if expect_concepts_sha256 is not None and manifest["concept_list_sha256"] != expect_concepts_sha256:
        raise CacheMismatchError(
            f"{folder} holds embeddings of another concept list (sha256 {manifest['concept_list_sha256'][:12]}) "
            f"than the one expected (sha256 {expect_concepts_sha256[:12]}). Run `dvc repro embed_text`.")
    concepts = (folder / "concepts.txt").read_text(encoding="utf-8").splitlines()
    if concept_list_sha256(concepts) != manifest["concept_list_sha256"]:
        raise CacheMismatchError(f"{folder}/concepts.txt does not match its manifest. Run `dvc repro -f embed_text`.")
    concept_emb = np.load(folder / "concepts.npy")
    prompts = np.load(folder / "class_prompts.npy")
    t, c = len(manifest["templates"]), len(manifest["classes"])
    if concept_emb.shape != (len(concepts), manifest["dim"]) or prompts.shape != (t * c, manifest["dim"]):
        raise CacheMismatchError(f"{folder}: array shapes disagree with the manifest. Run `dvc repro -f embed_text`.")
    return TextCache(concepts=concepts, concept_embeddings=concept_emb,
                     class_prompt_embeddings=prompts.reshape(t, c, -1),
                     descriptions=pq.read_table(folder / "descriptions.parquet").to_pandas(),
                     description_embeddings=np.load(folder / "descriptions.npy"), manifest=manifest)
