"""A small folder in the exact format of CUB-200-2011, drawn from shapes images.

Three classes of shapes stand for species; twelve attributes in CUB's naming stand for its 312
(``has_primary_color::red``, ``has_shape::circle``, ``has_back_pattern::striped``,
``has_size::small_(5_-_9_in)``). ``attributes/image_attribute_labels.txt`` has CUB's five
columns (image, attribute, is_present, certainty, time) and two malformed lines like the real
file's: one with an extra field, one cut short.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import numpy as np

from sparse_cbm.datasets.shapes import render

CLASSES = [("001.Red_Roundbird", {"colour": "red", "shape": "circle"}),
           ("002.Blue_Boxwing", {"colour": "blue", "shape": "square"}),
           ("003.Green_Stripetail", {"colour": "green", "texture": "striped"})]
ATTRIBUTES = [("has_primary_color::red", "colour", "red"), ("has_primary_color::green", "colour", "green"),
              ("has_primary_color::blue", "colour", "blue"), ("has_shape::circle", "shape", "circle"),
              ("has_shape::square", "shape", "square"), ("has_shape::triangle", "shape", "triangle"),
              ("has_shape::star", "shape", "star"), ("has_back_pattern::solid", "texture", "solid"),
              ("has_back_pattern::striped", "texture", "striped"), ("has_back_pattern::spotted", "texture", "dotted"),
              ("has_size::small_(5_-_9_in)", "size", "small"), ("has_size::large_(16_-_32_in)", "size", "large")]
CONCEPTS = ["mostly red", "mostly green", "mostly blue", "circle shape", "square shape", "triangle shape",
            "star shape", "solid back", "striped back", "spotted back", "small size", "large size"]
VALUES = {"colour": ("red", "green", "blue"), "shape": ("circle", "square", "triangle", "star"),
          "texture": ("solid", "striped", "dotted"), "background": ("white", "grey"), "size": ("small", "large")}


def make_cub_folder(root: Path, train_per_class: int = 10, test_per_class: int = 5, seed: int = 0) -> Dict:
    """Write the folder; return what was written (image attributes in image-id order, the malformed lines)."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "attributes").mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    images, labels, split, attrs = [], [], [], []
    image_id = 0
    for c, (folder, fixed) in enumerate(CLASSES, start=1):
        (root / "images" / folder).mkdir(exist_ok=True)
        for k in range(train_per_class + test_per_class):
            image_id += 1
            a: Dict[str, object] = {name: values[int(rng.integers(len(values)))] for name, values in VALUES.items()}
            a.update(fixed, x=0.5, y=0.5)
            path = f"{folder}/{folder.split('.')[1]}_{image_id:04d}.jpg"
            render(a, 64, rng).save(root / "images" / path, quality=95)
            images.append(f"{image_id} {path}")
            labels.append(f"{image_id} {c}")
            split.append(f"{image_id} {1 if k < train_per_class else 0}")
            attrs.append(a)
    (root / "images.txt").write_text("\n".join(images) + "\n")
    (root / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (root / "train_test_split.txt").write_text("\n".join(split) + "\n")
    (root / "classes.txt").write_text("\n".join(f"{c} {folder}" for c, (folder, _) in enumerate(CLASSES, 1)) + "\n")
    (root / "attributes" / "attributes.txt").write_text(
        "\n".join(f"{k} {name}" for k, (name, _, _) in enumerate(ATTRIBUTES, 1)) + "\n")
    lines: List[str] = []
    for i, a in enumerate(attrs, start=1):
        for k, (_, attribute, value) in enumerate(ATTRIBUTES, start=1):
            present = int(a[attribute] == value)
            lines.append(f"{i} {k} {present} {int(rng.integers(1, 5))} {float(rng.uniform(1, 30)):.3f}")
    extra = 4 * len(ATTRIBUTES)  # image 5, attribute 1: an extra field, as some real lines have
    lines[extra] = lines[extra] + " 0"
    short = 6 * len(ATTRIBUTES) + 1  # image 7, attribute 2: cut short
    lines[short] = " ".join(lines[short].split()[:2])
    (root / "attributes" / "image_attribute_labels.txt").write_text("\n".join(lines) + "\n")
    return {"attributes": attrs, "short": (7, 2)}
