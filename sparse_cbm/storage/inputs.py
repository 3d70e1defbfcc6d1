"""What the stages after ``embed_text`` read first, read and cross-checked in one place: the image
cache's splits (one backbone), the bottleneck's concept list and the text cache made from both
(the same backbone, the same concept list, the same classes).

The paths are the caller's (a stage takes them from its command line, dvc.yaml's ``vars``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from sparse_cbm.errors import CacheMismatchError
from sparse_cbm.storage.image_cache import ImageSplit, read_image_split
from sparse_cbm.storage.text_cache import TextCache, concept_list_sha256, read_text_cache


def read_concept_list(path: str | Path) -> List[str]:
    """The bottleneck's concepts, one a line (``filter``'s ``concepts.txt``)."""
    return Path(path).read_text(encoding="utf-8").splitlines()


def read_classes(path: str | Path) -> List[str]:
    """The class names of a ``classes.json`` (``concepts``' and ``filter``'s outputs, the image cache's)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))["classes"]


@dataclass
class CachedInputs:
    """The image cache's splits (the first one's backbone checked in the others), the concept list
    (``None`` when not read) and the text cache (``None`` when not read)."""

    splits: Dict[str, ImageSplit]
    concepts: Optional[List[str]] = None
    text: Optional[TextCache] = None

    @property
    def first(self) -> ImageSplit:
        return next(iter(self.splits.values()))

    @property
    def backbone(self) -> Dict[str, Any]:
        return self.first.manifest["backbone"]

    @property
    def classes(self) -> List[str]:
        """The classes of the image cache (the text cache's, when it was read: they were checked equal)."""
        return self.first.manifest["dataset"]["classes"]

    @property
    def logit_scale(self) -> float:
        return self.first.manifest["logit_scale"]

    @property
    def concepts_sha256(self) -> str:
        return concept_list_sha256(self.concepts)

    def pair(self, split: str) -> Tuple[Any, np.ndarray]:
        """(embedding rows read a batch at a time, labels) of one split."""
        return self.splits[split].rows(), self.splits[split].labels


def read_cached_inputs(images: str | Path, splits: Sequence[str] = ("train", "val", "test"), *,
                       concepts: str | Path | None = None, text: str | Path | None = None,
                       optional: Sequence[str] = ()) -> CachedInputs:
    """Open ``splits`` of the image cache ``images`` (each after the first checked to hold the first's
    backbone), and those of ``optional`` the cache has (a folder it does not hold is skipped; one it
    holds is read and checked like the others); then, when given, the concept list ``concepts`` and the
    text cache ``text`` (checked to hold that backbone, that concept list and the image cache's classes).

    Raises ``CacheMismatchError`` (with the readers' own messages) on any disagreement."""
    opened: Dict[str, ImageSplit] = {}
    for split in [*splits, *[s for s in optional if (Path(images) / s).exists()]]:
        expect = next(iter(opened.values())).manifest["backbone"] if opened else None
        opened[split] = read_image_split(images, split, expect_backbone=expect)
    inputs = CachedInputs(opened)
    if concepts is not None:
        inputs.concepts = read_concept_list(concepts)
    if text is not None:
        if inputs.concepts is None:
            raise ValueError("the text cache is checked against the concept list: pass concepts too")
        cache = read_text_cache(text, expect_backbone=inputs.backbone, expect_concepts_sha256=inputs.concepts_sha256)
        classes = inputs.classes
        if cache.manifest["classes"] != classes:
            raise CacheMismatchError(f"{text} was made for the classes {cache.manifest['classes'][:5]}..., the image "
                                     f"cache holds {classes[:5]}...: rerun `dvc repro` so that both come from one "
                                     f"dataset.")
        inputs.text = cache
    return inputs
