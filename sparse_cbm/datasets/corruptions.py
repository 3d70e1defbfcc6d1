"""A second test split whose concepts go wrong: the test images with seeded corruptions.

``with_corrupted_test`` adds the split ``test_corrupted`` to a dataset: image ``i`` is test image
``i`` with one corruption, the ``i``-th of ``kinds`` in turn (test images come in a seeded random
class order, so every class meets every kind), drawn from ``(seed, i)``:

* ``occlusion``: a mid-grey square over part of the object (shapes: of the class object's box;
  other datasets: of the image's central 60 %), its side ``0.35 + 0.45 * severity`` of the box's;
* ``noise``: Gaussian pixel noise, standard deviation ``100 * severity`` grey levels;
* ``blur``: a Gaussian blur of radius ``severity * side / 10`` pixels;
* ``colour``: a hue rotation by ``severity * 120`` degrees, either way (at severity 0.5 a red
  object turns yellow or magenta; at 1, green or blue).

Labels and attribute annotations are the clean image's: they say what the world made, which an
intervention (``sparse_cbm.evaluation.intervention``) restores. The corruptions follow the spirit
of ImageNet-C (Hendrycks and Dietterich, ICLR 2019), at one severity. See docs/methods.md#interventions.
"""

from __future__ import annotations

import hashlib
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageFilter

from sparse_cbm.datasets.base import DatasetSplits, ImageSource, ObjectMap
from sparse_cbm.errors import DatasetError
from sparse_cbm.runtime.registry import Registry

CORRUPTED_TEST = "test_corrupted"  # the split's name in every cache
CORRUPTION_VERSION = "corruptions-v1"
_SPLIT_CODE = 2  # seeds the corruptions apart from the shapes renderer's streams (train 0, test 1)
OCCLUSION_GREY = (128, 128, 128)

Box = Tuple[int, int, int, int]  # left, top, right, bottom (exclusive), pixels
Where = Callable[[], Box]  # the object's box, found only when a corruption asks (shapes renders the scene again)
# dataset.corrupted_test.kinds -> the corruption: (image, severity, rng, where the object is) -> image
CORRUPTIONS: Registry[Callable[[Image.Image, float, np.random.Generator, Where], Image.Image]] = \
    Registry("dataset.corrupted_test.kinds", DatasetError)


@CORRUPTIONS.register("occlusion")
def occlude(image: Image.Image, severity: float, rng: np.random.Generator, where: Where) -> Image.Image:
    left, top, right, bottom = where()
    side = max(1, int(round((0.35 + 0.45 * severity) * max(right - left, bottom - top))))
    cx, cy = rng.uniform(left, right), rng.uniform(top, bottom)
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    out = image.copy()
    out.paste(OCCLUSION_GREY, (max(0, x0), max(0, y0), min(image.width, x0 + side), min(image.height, y0 + side)))
    return out


@CORRUPTIONS.register("noise")
def add_noise(image: Image.Image, severity: float, rng: np.random.Generator, where: Where) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float64)
    noisy = pixels + rng.normal(0.0, 100.0 * severity, size=pixels.shape)
    return Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8))


@CORRUPTIONS.register("blur")
def blur(image: Image.Image, severity: float, rng: np.random.Generator, where: Where) -> Image.Image:
    return image.filter(ImageFilter.GaussianBlur(radius=severity * min(image.size) / 10))


@CORRUPTIONS.register("colour")
def shift_colour(image: Image.Image, severity: float, rng: np.random.Generator, where: Where) -> Image.Image:
    h, s, v = image.convert("HSV").split()
    turn = int(round(severity * 120 / 360 * 256)) * (1 if rng.random() < 0.5 else -1)
    hue = Image.fromarray(((np.asarray(h, dtype=np.int16) + turn) % 256).astype(np.uint8))
    return Image.merge("HSV", (hue, s, v)).convert("RGB")


KINDS = CORRUPTIONS.names()


def object_box(objects: Optional[ObjectMap], width: int, height: int) -> Box:
    """The class object's bounding box where the dataset draws objects; else the central 60 %."""
    if objects is not None:
        ys, xs = np.nonzero(objects.mask(objects.class_object))
        if len(xs):
            return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    return int(0.2 * width), int(0.2 * height), int(round(0.8 * width)), int(round(0.8 * height))


class CorruptedSource(ImageSource):
    """``parent``'s images, each with one seeded corruption (the module docstring); labels,
    annotations and object maps are the parent's. Picklable, like every source."""

    def __init__(self, parent: ImageSource, kinds: Sequence[str], severity: float, seed: int):
        if not kinds:
            raise DatasetError("dataset.corrupted_test.kinds is empty: name at least one corruption "
                               f"({', '.join(KINDS)}), or set dataset.corrupted_test to null for no corrupted split.")
        for kind in kinds:
            CORRUPTIONS.get(kind)
        if not 0.0 <= severity <= 1.0:
            raise DatasetError(f"dataset.corrupted_test.severity is {severity}: use a value in [0, 1].")
        self.parent, self.kinds, self.severity, self.seed = parent, list(kinds), float(severity), int(seed)
        self.labels = np.asarray(parent.labels, dtype=np.int64)
        self.ids = [f"{image_id}#{self.kind(i)}" for i, image_id in enumerate(parent.ids)]

    def kind(self, i: int) -> str:
        return self.kinds[i % len(self.kinds)]

    def load(self, i: int) -> Image.Image:
        image = self.parent.load(i).convert("RGB")
        rng = np.random.default_rng([self.seed, _SPLIT_CODE, i])
        where = lambda: object_box(self.parent.object_map(i), image.width, image.height)  # noqa: E731
        return CORRUPTIONS.get(self.kind(i))(image, self.severity, rng, where)

    def extra_columns(self) -> Dict[str, list]:
        return {**self.parent.extra_columns(), "corruption": [self.kind(i) for i in range(len(self))]}

    def annotations(self) -> Optional[np.ndarray]:
        return self.parent.annotations()

    def object_map(self, i: int) -> Optional[ObjectMap]:
        return self.parent.object_map(i)

    def describe(self) -> Dict[str, object]:
        return {"corruptions": {"of": "test", "kinds": self.kinds, "severity": self.severity, "seed": self.seed,
                                "version": CORRUPTION_VERSION}}

    def fingerprint_parts(self) -> List[str]:
        spec = f"{CORRUPTION_VERSION}|{','.join(self.kinds)}|severity={self.severity!r}|seed={self.seed}"
        return self.parent.fingerprint_parts() + ["corrupted", hashlib.sha256(spec.encode()).hexdigest()]


def with_corrupted_test(dataset: DatasetSplits, kinds: Sequence[str], severity: float, seed: int) -> DatasetSplits:
    """``dataset`` with the split ``test_corrupted`` added after its test split (the module docstring)."""
    dataset.splits[CORRUPTED_TEST] = CorruptedSource(dataset.splits["test"], kinds, severity, seed)
    return dataset
