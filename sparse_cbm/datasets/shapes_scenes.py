"""The ``scenes`` world of ``shapes``: the attributes world's classes, drawn as scenes.

Each image holds 2 to 4 objects on one background: the class's own object, drawn as in the
attributes world (its rule over two attributes decides the class, background included), and
1 to 3 smaller others of any shape, colour and texture. The class object is the largest
(radius 0.22 or 0.34 of the side; the others 0.12), so "the class is the rule of the largest
object". The others are drawn first, with their centres outside the class object, so they
may hide behind it but never cover it: the class object is whole, and every pixel's object is
known (``ShapesSource.scene``), so a heatmap can be scored against the class object's mask.

An image's annotations are its class object's attributes, plus the colours, shapes and
textures of its other objects (they are in the image too); background and size are the
class object's.
"""

from __future__ import annotations

import math
from typing import Dict, List

import numpy as np

from sparse_cbm.datasets.shapes_world import ATTRIBUTE_VALUES, SIZES, CombinationWorld
from sparse_cbm.datasets.shapes_rules import RuleWorld

OTHER_RADIUS = 0.12
OTHERS = (1, 3)  # fewest and most other objects
ATTEMPTS = 100  # places tried for another object; the farthest from the class object otherwise


def place_others(main: Dict[str, object], rng: np.random.Generator) -> List[Dict[str, object]]:
    """1 to 3 other objects of random shape, colour and texture, their centres outside the class
    object (the farthest of ``ATTEMPTS`` random places when none is)."""
    r_main = SIZES[str(main["size"])]
    count = int(rng.integers(OTHERS[0], OTHERS[1] + 1))
    placed: List[Dict[str, object]] = []
    margin = OTHER_RADIUS * 1.15
    clear = r_main * 1.15 + OTHER_RADIUS * 0.5  # at least half of the other object shows
    for _ in range(count):
        obj = {a: ATTRIBUTE_VALUES[a][int(rng.integers(len(ATTRIBUTE_VALUES[a])))]
               for a in ("shape", "colour", "texture")}
        best = None
        for _attempt in range(ATTEMPTS):
            x, y = float(rng.uniform(margin, 1 - margin)), float(rng.uniform(margin, 1 - margin))
            distance = math.hypot(x - float(main["x"]), y - float(main["y"]))
            if best is None or distance > best[0]:
                best = (distance, x, y)
            if distance >= clear:
                break
        placed.append({**obj, "radius": OTHER_RADIUS, "x": round(best[1], 4), "y": round(best[2], 4)})
    return placed


class SceneWorld(RuleWorld):
    name = "scenes-v1"

    def others(self, main: Dict[str, object], rng: np.random.Generator) -> List[Dict[str, object]]:
        return place_others(main, rng)


class CombinationSceneWorld(CombinationWorld):
    """Scenes whose class object is any combination of ``class_attributes`` (the shapes CLIP's
    training scenes: every attribute value in every company)."""

    def __init__(self, class_attributes):
        super().__init__(class_attributes)
        self.name = f"combination-scenes:{','.join(self.class_attributes)}"

    def others(self, main: Dict[str, object], rng: np.random.Generator) -> List[Dict[str, object]]:
        return place_others(main, rng)
