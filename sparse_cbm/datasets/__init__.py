"""Datasets by name: ``load_dataset(name, ...)`` returns train / val / test sources and class names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from sparse_cbm.datasets.base import SPLITS, DatasetSplits, ImageSource, carve_val
from sparse_cbm.datasets.shapes_world import SHAPES_DEFAULTS
from sparse_cbm.errors import DatasetError
from sparse_cbm.runtime.registry import Registry


@dataclass(frozen=True)
class _Request:
    """What ``load_dataset`` was asked for; each loader takes the fields its dataset uses."""

    name: str
    root: str
    seed: int
    val_fraction: float
    download: bool
    class_names_file: str | None
    shapes_n_train: int
    shapes_n_test: int
    shapes_image_size: int
    shapes_class_attributes: Sequence[str]
    shapes_preset: str
    skip_empty_classes: bool = False


# dataset.name -> its loader; a loader's module is imported only when its dataset is loaded, and in this
# order the datasets are the param's choices
LOADERS: Registry[Callable[[_Request], DatasetSplits]] = Registry("dataset.name", DatasetError)


def _cifar(r: _Request) -> DatasetSplits:
    from sparse_cbm.datasets.torchvision_sets import load_cifar
    return load_cifar(r.name, r.root, r.download, r.val_fraction, r.seed)


def _places365(r: _Request) -> DatasetSplits:
    from sparse_cbm.datasets.torchvision_sets import load_places365
    return load_places365(r.root, r.download, r.val_fraction, r.seed)


def _imagefolder(r: _Request) -> DatasetSplits:
    from sparse_cbm.datasets.imagefolder import load_imagefolder
    return load_imagefolder(r.root, r.val_fraction, r.seed, r.class_names_file, r.skip_empty_classes)


def _cub(r: _Request) -> DatasetSplits:
    from sparse_cbm.datasets.cub import load_cub
    return load_cub(r.root, r.val_fraction, r.seed)


def _shapes(r: _Request) -> DatasetSplits:
    from sparse_cbm.datasets.shapes import load_shapes
    return load_shapes(r.shapes_n_train, r.shapes_n_test, r.shapes_image_size, r.shapes_class_attributes,
                       r.val_fraction, r.seed, preset=r.shapes_preset)


LOADERS.add("cifar10", _cifar)
LOADERS.add("cifar100", _cifar)
LOADERS.add("places365", _places365)
LOADERS.add("imagefolder", _imagefolder)
LOADERS.add("cub", _cub)
LOADERS.add("shapes", _shapes)
DATASETS = LOADERS.names()

__all__ = ["DATASETS", "LOADERS", "SPLITS", "DatasetSplits", "ImageSource", "carve_val", "load_dataset"]


def load_dataset(name: str, root: str = "data/datasets", *, seed: int = 0, val_fraction: float = 0.1,
                 download: bool = True, class_names_file: str | None = None,
                 shapes_n_train: int = SHAPES_DEFAULTS.n_train, shapes_n_test: int = SHAPES_DEFAULTS.n_test,
                 shapes_image_size: int = SHAPES_DEFAULTS.image_size,
                 shapes_class_attributes: Sequence[str] = SHAPES_DEFAULTS.class_attributes,
                 shapes_preset: str = SHAPES_DEFAULTS.preset, skip_empty_classes: bool = False) -> DatasetSplits:
    """Resolve a dataset into seeded train / val / test splits.

    Validation is always carved from train (stratified, seeded); the official test
    split stays the test split. The ``shapes_*`` defaults are ``dataset.shapes``'s
    (``sparse_cbm.datasets.shapes_world.SHAPES_DEFAULTS``).
    """
    loader = LOADERS.get(name)
    return loader(_Request(name, root, seed, val_fraction, download, class_names_file, shapes_n_train,
                           shapes_n_test, shapes_image_size, shapes_class_attributes, shapes_preset,
                           skip_empty_classes))
