"""CIFAR-10, CIFAR-100 and Places365 through torchvision, downloaded into ``root`` when missing.

Places365 has no public test labels: its official ``val`` split serves as our test split,
and validation is carved from ``train-standard`` like for every other dataset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, List

import numpy as np
from PIL import Image

from sparse_cbm.datasets.base import DatasetSplits, ImageSource, with_val_split
from sparse_cbm.datasets.classnames import clean_class_names
from sparse_cbm.datasets.imagefolder import FileSource
from sparse_cbm.errors import DatasetError


class ArraySource(ImageSource):
    """Images held as a uint8 array (N, H, W, 3), as torchvision's CIFAR classes keep them."""

    def __init__(self, name: str, split: str, data: np.ndarray, labels: List[int]):
        self.data = data
        self.labels = np.asarray(labels, dtype=np.int64)
        self.ids = [f"{name}/{split}/{i:06d}" for i in range(len(self.labels))]

    def load(self, i: int) -> Image.Image:
        return Image.fromarray(self.data[i])

    def fingerprint_parts(self) -> List[str]:
        return [f"shape={self.data.shape}"]


def _open(name: str, root: str, download: bool, build: Callable):
    try:
        return build()
    except Exception as exc:  # torchvision raises RuntimeError, URLError, OSError... for the same causes
        if download:
            hint = ("Check the network, or download it by hand into that folder and set "
                    "dataset.download: false.")
            what = "download"
        else:
            hint = "Set dataset.download: true, or point dataset.root at the folder that holds it."
            what = "find"
        raise DatasetError(f"{name}: could not {what} the dataset in {root} ({type(exc).__name__}: {exc}). {hint}") from None


def load_cifar(name: str, root: str, download: bool, val_fraction: float, seed: int) -> DatasetSplits:
    from torchvision import datasets

    cls = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}[name]
    Path(root).mkdir(parents=True, exist_ok=True)
    train = _open(name, root, download, lambda: cls(root, train=True, download=download))
    test = _open(name, root, download, lambda: cls(root, train=False, download=download))
    raw = list(train.classes)
    return with_val_split(name, clean_class_names(raw), raw,
                          ArraySource(name, "train", train.data, train.targets),
                          ArraySource(name, "test", test.data, test.targets), val_fraction, seed)


def load_places365(root: str, download: bool, val_fraction: float, seed: int) -> DatasetSplits:
    from torchvision import datasets

    Path(root).mkdir(parents=True, exist_ok=True)
    train = _open("places365", root, download,
                  lambda: datasets.Places365(root, split="train-standard", small=True, download=download))
    test = _open("places365", root, download,
                 lambda: datasets.Places365(root, split="val", small=True, download=download))
    raw = list(train.classes)
    return with_val_split("places365", clean_class_names(raw), raw, FileSource(Path(root), train.imgs),
                          FileSource(Path(root), test.imgs), val_fraction, seed)
