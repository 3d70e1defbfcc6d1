"""Datasets by name: ``load_dataset(name, ...)`` returns train / val / test sources and class names."""

from __future__ import annotations

from typing import Sequence

from sparse_cbm.datasets.base import SPLITS, DatasetSplits, ImageSource, carve_val
from sparse_cbm.errors import DatasetError

DATASETS = ("cifar10", "cifar100", "places365", "imagefolder", "cub", "shapes")

__all__ = ["DATASETS", "SPLITS", "DatasetSplits", "ImageSource", "carve_val", "load_dataset"]


def load_dataset(name: str, root: str = "data/datasets", *, seed: int = 0, val_fraction: float = 0.1,
                 download: bool = True, class_names_file: str | None = None,
                 shapes_n_train: int = 480, shapes_n_test: int = 240, shapes_image_size: int = 64,
                 shapes_class_attributes: Sequence[str] = ("shape", "colour"),
                 shapes_preset: str = "easy") -> DatasetSplits:
    """Resolve a dataset into seeded train / val / test splits.

    Validation is always carved from train (stratified, seeded); the official test
    split stays the test split.
    """
    if name in ("cifar10", "cifar100"):
        from sparse_cbm.datasets.torchvision_sets import load_cifar
        return load_cifar(name, root, download, val_fraction, seed)
    if name == "places365":
        from sparse_cbm.datasets.torchvision_sets import load_places365
        return load_places365(root, download, val_fraction, seed)
    if name == "imagefolder":
        from sparse_cbm.datasets.imagefolder import load_imagefolder
        return load_imagefolder(root, val_fraction, seed, class_names_file)
    if name == "cub":
        from sparse_cbm.datasets.cub import load_cub
        return load_cub(root, val_fraction, seed)
    if name == "shapes":
        from sparse_cbm.datasets.shapes import load_shapes
        return load_shapes(shapes_n_train, shapes_n_test, shapes_image_size, shapes_class_attributes,
                           val_fraction, seed, preset=shapes_preset)
    raise DatasetError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}.")
