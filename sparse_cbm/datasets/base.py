"""What every dataset gives the pipeline: splits of images with ids, labels and class names."""

from __future__ import annotations

import abc
import hashlib
import logging
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
from PIL import Image

from sparse_cbm.errors import DatasetError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
ANNOTATION_PREFIX = "attr:"  # index.parquet column of an annotated attribute: attr:<name>


@dataclass(frozen=True)
class Attribute:
    """An annotated attribute of a dataset: its own id and the concept phrase that names it.

    shapes: ``colour::red`` -> "red"; CUB: ``has_wing_color::blue`` -> "blue wing". A
    bottleneck concept is matched to an attribute when its normalised text equals the phrase.
    """

    name: str
    concept: str


@dataclass
class ObjectMap:
    """Where every object of an image lies, and what each one is (for scoring heatmaps and regions).

    ``labels`` (H, W) uint8 at the image's size: 0 background, k the k-th object (1-based) where
    it is visible; ``objects[k - 1]`` (A,) bool: the annotated attributes that object has of its
    own (not the background's); ``class_object``: the label of the object the class is about;
    ``decided_by_object``: whether the class object alone decides the class (False when the
    class also depends on the background: then the object's mask is not where all the evidence is).
    """

    labels: np.ndarray
    objects: List[np.ndarray]
    class_object: int
    decided_by_object: bool = True

    def mask(self, k: int) -> np.ndarray:
        return self.labels == k


class ImageSource(abc.ABC):
    """A random-access list of labelled images. Picklable, so DataLoader workers can use it.

    Subclasses set ``ids`` (one stable string per image: a relative path or
    ``<dataset>/<split>/<n>``) and ``labels`` (int64), and implement ``load``.
    """

    ids: List[str]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    @abc.abstractmethod
    def load(self, i: int) -> Image.Image:
        """Decode image ``i``. Raise CorruptImageError naming the file when it cannot be read."""

    def extra_columns(self) -> Dict[str, list]:
        """Extra per-image columns for the cache index (for example where an object lies)."""
        return {}

    def annotations(self) -> Optional[np.ndarray]:
        """(N, A) bool: which of the dataset's attributes (``DatasetSplits.attributes``) each image
        shows; None for a dataset without annotations."""
        return None

    def object_map(self, i: int) -> Optional[ObjectMap]:
        """Image i's objects and their masks; None for a dataset without them (only shapes has them)."""
        return None

    @abc.abstractmethod
    def fingerprint_parts(self) -> List[str]:
        """Strings that change whenever the images or their order change."""

    def describe(self) -> Dict[str, object]:
        """What a reader of the cache should know of how these images were made (the manifest's ``source``)."""
        return {}

    def subset(self, indices: Sequence[int]) -> "ImageSource":
        return SubsetSource(self, np.asarray(indices, dtype=np.int64))


class SubsetSource(ImageSource):
    def __init__(self, parent: ImageSource, indices: np.ndarray):
        self.parent = parent
        self.indices = indices
        self.ids = [parent.ids[i] for i in indices]
        self.labels = np.asarray(parent.labels, dtype=np.int64)[indices]

    def load(self, i: int) -> Image.Image:
        return self.parent.load(int(self.indices[i]))

    def extra_columns(self) -> Dict[str, list]:
        return {k: [v[i] for i in self.indices] for k, v in self.parent.extra_columns().items()}

    def annotations(self) -> Optional[np.ndarray]:
        parent = self.parent.annotations()
        return None if parent is None else parent[self.indices]

    def object_map(self, i: int) -> Optional[ObjectMap]:
        return self.parent.object_map(int(self.indices[i]))

    def fingerprint_parts(self) -> List[str]:
        return self.parent.fingerprint_parts() + ["subset", hashlib.sha256(self.indices.tobytes()).hexdigest()]


@dataclass
class DatasetSplits:
    """A dataset resolved into train / val / test sources and cleaned class names."""

    name: str
    classes: List[str]
    raw_classes: List[str]
    splits: Dict[str, ImageSource] = field(default_factory=dict)
    attributes: List[Attribute] = field(default_factory=list)  # annotated attributes, in column order

    def fingerprint(self, split: str) -> str:
        """sha256 over the dataset name, class names, ids, labels and the source's own parts."""
        src = self.splits[split]
        h = hashlib.sha256()
        for part in [self.name, split, *self.raw_classes, *src.fingerprint_parts()]:
            h.update(part.encode("utf-8"))
            h.update(b"\0")
        for image_id in src.ids:
            h.update(image_id.encode("utf-8"))
            h.update(b"\0")
        h.update(np.ascontiguousarray(src.labels, dtype=np.int64).tobytes())
        return h.hexdigest()


def carve_val(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded split of train indices into (train, val).

    Each class gives ``round(val_fraction * n_class)`` images to val (at least one when
    the class has two or more and the fraction is positive). Both index arrays are sorted.
    """
    labels = np.asarray(labels)
    if val_fraction <= 0:
        return np.arange(len(labels)), np.empty(0, dtype=np.int64)
    rng = np.random.default_rng(seed)
    val: list[np.ndarray] = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n_val = int(round(val_fraction * len(idx)))
        if n_val == 0 and len(idx) >= 2:
            n_val = 1
        n_val = min(n_val, len(idx) - 1)
        if n_val > 0:
            val.append(rng.permutation(idx)[:n_val])
    val_idx = np.sort(np.concatenate(val)) if val else np.empty(0, dtype=np.int64)
    mask = np.ones(len(labels), dtype=bool)
    mask[val_idx] = False
    return np.flatnonzero(mask), val_idx


def with_val_split(name: str, classes: List[str], raw_classes: List[str], train: ImageSource,
                   test: ImageSource, val_fraction: float, seed: int,
                   attributes: Sequence[Attribute] = ()) -> DatasetSplits:
    train_idx, val_idx = carve_val(train.labels, val_fraction, seed)
    if val_fraction > 0 and len(val_idx) == 0:
        log.warning("%s: %d train images are too few for a val split (dataset.val_fraction %g: no class has two "
                    "images): val is empty, so nothing is chosen on val. Add images, at least two a class.",
                    name, len(train), val_fraction)
    if len(test) == 0:
        raise DatasetError(f"{name}: the test split has no images; the model could not be evaluated. Add test images.")
    splits = {"train": train.subset(train_idx), "val": train.subset(val_idx), "test": test}
    for split, src in splits.items():
        log.info("%s %s: %d images", name, split, len(src))
    return DatasetSplits(name=name, classes=classes, raw_classes=raw_classes, splits=splits,
                         attributes=list(attributes))
