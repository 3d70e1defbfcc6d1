"""``shapes``: a procedural dataset made from a seed, for offline runs and tests.

Every image is a coloured, textured shape on a background, with a size and a
position. What a class is depends on the world (``preset``):

* ``attributes`` (the default): 20 classes with invented names ("blicket", "dax"),
  each defined by a rule over two attributes ("star and red, any texture, any size";
  "red on a pink background, any shape"), rules overlapping in their attributes as
  CUB's species do in theirs. No image satisfies two rules, so the class is a function
  of the attributes; the class name tells CLIP nothing (``sparse_cbm.datasets.shapes_rules``).
* ``easy``: a class is a combination of some attributes (``class_attributes``, by
  default shape x colour: "red circle"); its name says what it is.

Every image carries binary annotations of all 16 attribute values (shape, colour,
texture, background, size), like CUB's 312, and its position, so methods can be
checked against ground truth. Images are drawn on demand from ``(seed, split,
index)``: the same seed gives the same pixels, in any order and in any process.
"""

from __future__ import annotations

import json
import math
from typing import Dict, List, Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw

from sparse_cbm.datasets.base import DatasetSplits, ImageSource, ObjectMap, with_val_split
from sparse_cbm.datasets.shapes_presets import make_world
from sparse_cbm.datasets.shapes_world import (BACKGROUNDS, COLOURS, SHAPES_DEFAULTS, SIZES, CombinationWorld,
                                              ShapesWorld, annotated_attributes, image_annotation_row,
                                              object_annotation_row)

GENERATOR_VERSION = "shapes-v1"
_SPLIT_CODES = {"train": 0, "test": 1}
_SUPERSAMPLE = 2


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> List[tuple[float, float]]:
    if shape == "square":
        pts = [(math.pi / 4 + k * math.pi / 2, r * math.sqrt(2) * 0.85) for k in range(4)]
    elif shape == "triangle":
        pts = [(-math.pi / 2 + k * 2 * math.pi / 3, r * 1.1) for k in range(3)]
    else:  # star
        pts = [(-math.pi / 2 + k * math.pi / 5, r * 1.1 if k % 2 == 0 else r * 0.45) for k in range(10)]
    return [(cx + rad * math.cos(a + angle), cy + rad * math.sin(a + angle)) for a, rad in pts]


def _object_layers(obj: Dict[str, object], big: int, rng: np.random.Generator) -> tuple:
    """(alpha mask "L", fill "RGB") of one object at the supersampled size ``big``: its shape, colour,
    texture, radius (``radius``, a share of the side; else its ``size`` word) and centre (x, y)."""
    r = float(obj["radius"] if "radius" in obj else SIZES[str(obj["size"])]) * big
    cx, cy = float(obj["x"]) * big, float(obj["y"]) * big
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    if obj["shape"] == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    else:
        draw.polygon(_polygon(str(obj["shape"]), cx, cy, r, float(rng.uniform(-0.45, 0.45))), fill=255)
    colour = np.array(COLOURS[str(obj["colour"])])
    fill = Image.new("RGB", (big, big), tuple(int(c) for c in colour))
    pattern = ImageDraw.Draw(fill)
    period = max(4, big // 8)
    if obj["texture"] == "striped":
        dark = tuple(int(c) for c in colour * 0.45)
        for k in range(-big, big, period):
            pattern.line([(k, 0), (k + big, big)], fill=dark, width=max(2, period // 3))
    elif obj["texture"] == "dotted":
        light = tuple(int(c) for c in colour * 0.35 + 255 * 0.65)
        dot = max(1, period // 4)
        for yy in range(period // 2, big, period):
            for xx in range(period // 2, big, period):
                pattern.ellipse([xx - dot, yy - dot, xx + dot, yy + dot], fill=light)
    return mask, fill


def render_scene(objects: Sequence[Dict[str, object]], background: str, size: int,
                 rng: np.random.Generator) -> tuple:
    """Draw objects in order (later ones on top) on a noisy background. Returns the image and its
    (size, size) uint8 label map: 0 background, k the k-th object (1-based) where it is visible."""
    big = size * _SUPERSAMPLE
    bg = np.array(BACKGROUNDS[background], dtype=np.int16)
    noise = rng.integers(-10, 11, size=(size, size, 1), dtype=np.int16)
    canvas = Image.fromarray(np.clip(bg + noise, 0, 255).astype(np.uint8)).resize((big, big), Image.NEAREST)
    labels = np.zeros((big, big), dtype=np.uint8)
    for k, obj in enumerate(objects, start=1):
        mask, fill = _object_layers(obj, big, rng)
        canvas.paste(fill, (0, 0), mask)
        labels[np.asarray(mask) > 127] = k
    image = canvas.resize((size, size), Image.LANCZOS)
    # each pixel of the label map: the label covering most of its supersampled block
    blocks = labels.reshape(size, _SUPERSAMPLE, size, _SUPERSAMPLE).transpose(0, 2, 1, 3).reshape(size, size, -1)
    counts = np.stack([(blocks == k).sum(axis=2) for k in range(len(objects) + 1)], axis=2)
    return image, counts.argmax(axis=2).astype(np.uint8)


def render(attrs: Dict[str, object], size: int, rng: np.random.Generator) -> Image.Image:
    """Draw one image from its attributes (shape, colour, texture, background, size, x, y)."""
    return render_scene([attrs], str(attrs["background"]), size, rng)[0]


class ShapesSource(ImageSource):
    def __init__(self, split: str, n: int, seed: int, image_size: int, world: ShapesWorld | Sequence[str]):
        self.split = split
        self.seed = seed
        self.image_size = image_size
        self.world = world if isinstance(world, ShapesWorld) else CombinationWorld(world)
        k = len(self.world.classes)
        order_rng = np.random.default_rng([seed, _SPLIT_CODES[split], 1_000_003])
        self.labels = order_rng.permutation(np.arange(n) % k).astype(np.int64)
        self.ids = [f"shapes/{split}/{i:06d}" for i in range(n)]
        self.attributes = [self._attributes(i) for i in range(n)]

    @property
    def classes(self) -> List[str]:
        return self.world.classes

    def _rng(self, i: int, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, _SPLIT_CODES[self.split], i, stream])

    def _attributes(self, i: int) -> Dict[str, object]:
        rng = self._rng(i, 0)
        attrs = self.world.attributes(int(self.labels[i]), rng)
        margin = SIZES[str(attrs["size"])] * 1.15
        attrs["x"] = round(float(rng.uniform(margin, 1 - margin)), 4)
        attrs["y"] = round(float(rng.uniform(margin, 1 - margin)), 4)
        others = self.world.others(attrs, rng)
        if others:
            attrs["others"] = others
        return attrs

    def objects(self, i: int) -> List[Dict[str, object]]:
        """Every object of image i in drawing order: the others, then the class's own (on top)."""
        a = self.attributes[i]
        return [*a.get("others", []), a]

    def scene(self, i: int) -> tuple:
        """(image, label map): in the map, 0 is the background and k the k-th of ``objects(i)``."""
        a = self.attributes[i]
        return render_scene(self.objects(i), str(a["background"]), self.image_size, self._rng(i, 1))

    def object_map(self, i: int) -> ObjectMap:
        objects = self.objects(i)
        return ObjectMap(self.scene(i)[1], [object_annotation_row(o) for o in objects], len(objects),
                         self.world.decided_by_object(int(self.labels[i])))

    def load(self, i: int) -> Image.Image:
        if "others" not in self.attributes[i]:
            return render(self.attributes[i], self.image_size, self._rng(i, 1))
        return self.scene(i)[0]

    def extra_columns(self) -> Dict[str, list]:
        keys = ["shape", "colour", "texture", "background", "size", "x", "y"]
        columns = {k: [a[k] for a in self.attributes] for k in keys}
        if any("others" in a for a in self.attributes):
            columns["others"] = [json.dumps(a.get("others", []), sort_keys=True) for a in self.attributes]
        return columns

    def annotations(self) -> Optional[np.ndarray]:
        return np.array([image_annotation_row(a) for a in self.attributes], dtype=bool).reshape(len(self), -1)

    def fingerprint_parts(self) -> List[str]:
        if isinstance(self.world, CombinationWorld):  # the easy world's fingerprint as it always was
            return [GENERATOR_VERSION, f"seed={self.seed}", f"size={self.image_size}",
                    f"class_attributes={','.join(self.world.class_attributes)}"]
        return [GENERATOR_VERSION, self.world.name, f"seed={self.seed}", f"size={self.image_size}"]


def load_shapes(n_train: int, n_test: int, image_size: int, class_attributes: Sequence[str],
                val_fraction: float, seed: int, preset: str = SHAPES_DEFAULTS.preset) -> DatasetSplits:
    world = make_world(preset, class_attributes)
    train = ShapesSource("train", n_train, seed, image_size, world)
    test = ShapesSource("test", n_test, seed, image_size, world)
    return with_val_split("shapes", list(world.classes), list(world.classes), train, test, val_fraction, seed,
                          attributes=annotated_attributes())
