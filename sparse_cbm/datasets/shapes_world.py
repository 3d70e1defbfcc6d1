"""The vocabulary of ``shapes`` and its base worlds: a leaf that the presets' modules build on.

The attribute values (shape, colour, texture, background, size), the concept phrase of a
value, the annotation rows in the order of ``annotated_attributes``, the class table of a
combination of attributes, the ``ShapesWorld`` a preset defines and the ``easy`` preset's
``CombinationWorld``; and ``SHAPES_DEFAULTS``, the defaults of ``dataset.shapes`` (the params
schema takes them from here). Nothing here imports the presets' modules
(``shapes_rules``, ``shapes_scenes``, ``shapes_text``) or the renderer (``shapes``): they import it.
"""

from __future__ import annotations

import abc
import itertools
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np

from sparse_cbm.datasets.base import Attribute

SHAPES = ("circle", "square", "triangle", "star")
COLOURS = {"red": (215, 40, 40), "green": (40, 165, 60), "blue": (45, 80, 220)}
TEXTURES = ("solid", "striped", "dotted")
BACKGROUNDS = {"white": (240, 240, 240), "black": (25, 25, 25), "grey": (128, 128, 128), "pink": (250, 190, 205)}
SIZES = {"small": 0.22, "large": 0.34}
ATTRIBUTE_VALUES: Dict[str, Sequence[str]] = {
    "shape": SHAPES, "colour": tuple(COLOURS), "texture": TEXTURES, "background": tuple(BACKGROUNDS),
}
ATTRIBUTES = ("colour", "shape", "texture", "background", "size")  # every annotated attribute, in this order
ALL_VALUES: Dict[str, Sequence[str]] = {**ATTRIBUTE_VALUES, "size": tuple(SIZES)}


@dataclass(frozen=True)
class ShapesDefaults:
    """The defaults of ``dataset.shapes`` (``ShapesParams``) and of ``load_dataset``'s ``shapes_*`` arguments."""

    preset: str = "attributes"
    n_train: int = 6000
    n_test: int = 2400
    image_size: int = 64
    class_attributes: Tuple[str, ...] = ("shape", "colour")


SHAPES_DEFAULTS = ShapesDefaults()




def concept(attribute: str, value: str) -> str:
    """The concept phrase of one attribute value: "red", "circle", "grey background"."""
    return f"{value} background" if attribute == "background" else str(value)


def annotated_attributes() -> List[Attribute]:
    """The 16 annotated attributes of every shapes image, attribute by attribute."""
    return [Attribute(f"{a}::{v}", concept(a, v)) for a in ATTRIBUTES for v in ALL_VALUES[a]]


def annotation_row(attrs: Dict[str, object]) -> List[bool]:
    """One object's annotations, in the order of ``annotated_attributes``."""
    return [attrs[a] == v for a in ATTRIBUTES for v in ALL_VALUES[a]]


OBJECT_ATTRIBUTES = ("colour", "shape", "texture")  # what every object of a scene has of its own


def image_annotation_row(attrs: Dict[str, object]) -> List[bool]:
    """An image's annotations: its class object's, and the colours, shapes and textures of its
    other objects too (present in the image); background and size are the class object's."""
    row = annotation_row(attrs)
    for other in attrs.get("others", []):
        row = [r or (a in OBJECT_ATTRIBUTES and other[a] == v) for r, (a, v) in
               zip(row, [(a, v) for a in ATTRIBUTES for v in ALL_VALUES[a]])]
    return row


def object_annotation_row(obj: Dict[str, object]) -> np.ndarray:
    """What one object is of its own (colour, shape, texture), in the order of ``annotated_attributes``."""
    return np.array([a in OBJECT_ATTRIBUTES and obj[a] == v for a in ATTRIBUTES for v in ALL_VALUES[a]], dtype=bool)


def class_table(class_attributes: Sequence[str]) -> List[Dict[str, str]]:
    """Every combination of the class attributes, in a fixed order: one dict per class."""
    values = [ATTRIBUTE_VALUES[a] for a in class_attributes]
    return [dict(zip(class_attributes, combo)) for combo in itertools.product(*values)]


def class_name(attrs: Dict[str, str]) -> str:
    """"red striped circle on grey background", with only the attributes the class fixes."""
    words = [attrs[a] for a in ("colour", "texture") if a in attrs]
    words.append(attrs.get("shape", "shape"))
    if "background" in attrs:
        words += ["on", attrs["background"], "background"]
    return " ".join(words)


class ShapesWorld(abc.ABC):
    """What the classes of a shapes world are, and how an image of a class is drawn."""

    name: str
    classes: List[str]

    @abc.abstractmethod
    def attributes(self, label: int, rng: np.random.Generator) -> Dict[str, object]:
        """Shape, colour, texture, background and size of one image of class ``label``."""

    def others(self, main: Dict[str, object], rng: np.random.Generator) -> List[Dict[str, object]]:
        """The other objects of the image beside the class's (main) one, placed: none by default."""
        return []

    def decided_by_object(self, label: int) -> bool:
        """Whether the class object's own attributes alone decide class ``label`` (not the background)."""
        return True


class CombinationWorld(ShapesWorld):
    """The ``easy`` preset: a class is a combination of ``class_attributes``, named after it."""

    def __init__(self, class_attributes: Sequence[str]):
        self.class_attributes = list(class_attributes)
        self.table = class_table(self.class_attributes)
        self.classes = [class_name(c) for c in self.table]
        self.name = f"combinations:{','.join(self.class_attributes)}"

    def decided_by_object(self, label: int) -> bool:
        return "background" not in self.class_attributes

    def attributes(self, label: int, rng: np.random.Generator) -> Dict[str, object]:
        attrs: Dict[str, object] = dict(self.table[label])
        for name, values in ATTRIBUTE_VALUES.items():
            pick = values[int(rng.integers(len(values)))]
            attrs.setdefault(name, pick)
        attrs["size"] = ("small", "large")[int(rng.integers(2))]
        return attrs
