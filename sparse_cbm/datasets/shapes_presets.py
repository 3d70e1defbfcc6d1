"""``dataset.shapes.preset`` by name: the world each preset makes (``make_world``).

Above the worlds' modules and below the renderer (``shapes``): a preset's module
(``shapes_rules``, ``shapes_scenes``) is imported only when its world is made, and the
params schema reads the choices here without importing the renderer.
"""

from __future__ import annotations

from typing import Callable, Sequence

from sparse_cbm.datasets.shapes_world import CombinationWorld, ShapesWorld
from sparse_cbm.errors import DatasetError
from sparse_cbm.runtime.registry import Registry

# dataset.shapes.preset -> the world it names, built from class_attributes; a preset's module is imported
# only when its world is made, and in this order the presets are the param's choices
PRESETS: Registry[Callable[[Sequence[str]], ShapesWorld]] = Registry("dataset.shapes.preset", DatasetError)


@PRESETS.register("attributes")
def _rule_world(class_attributes: Sequence[str]) -> ShapesWorld:
    from sparse_cbm.datasets.shapes_rules import RuleWorld
    return RuleWorld()


@PRESETS.register("scenes")
def _scene_world(class_attributes: Sequence[str]) -> ShapesWorld:
    from sparse_cbm.datasets.shapes_scenes import SceneWorld
    return SceneWorld()


@PRESETS.register("easy")
def _combination_world(class_attributes: Sequence[str]) -> ShapesWorld:
    return CombinationWorld(class_attributes)


def make_world(preset: str, class_attributes: Sequence[str]) -> ShapesWorld:
    return PRESETS.get(preset)(class_attributes)
