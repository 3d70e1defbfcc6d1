"""Images in class folders: ``<root>/train/<class>/*`` and ``<root>/test/<class>/*``.

Serves ImageNet, CUB-200 or a user's own data. Files are listed with torchvision's
``make_dataset`` (its image extensions; other files are ignored). Decoding errors
name the file.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Dict, List

import numpy as np
from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

from sparse_cbm.datasets.base import DatasetSplits, ImageSource, with_val_split
from sparse_cbm.datasets.classnames import clean_class_names, read_class_names_file
from sparse_cbm.errors import CorruptImageError, DatasetError


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Decode an image file fully and convert it to RGB (grayscale, palette, RGBA, CMYK...).

    Raises CorruptImageError naming the file for a truncated, empty or non-image file.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                if img.mode == "P" and "transparency" in img.info:
                    img = img.convert("RGBA")
                return img.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise CorruptImageError(str(path), f"{type(exc).__name__}: {exc}") from None


class FileSource(ImageSource):
    """Image files with labels (imagefolder, Places365); ids are paths relative to ``root``."""

    def __init__(self, root: Path, files: List[tuple[str, int]]):
        self.root = Path(root)
        self.paths = [p for p, _ in files]
        self.ids = [Path(os.path.relpath(p, self.root)).as_posix() for p in self.paths]
        self.labels = np.asarray([y for _, y in files], dtype=np.int64)
        self._fingerprint_parts: List[str] | None = None

    def load(self, i: int) -> Image.Image:
        return load_rgb(self.paths[i])

    def fingerprint_parts(self) -> List[str]:
        # stat()s every file: computed once, then shared by the train and val subsets
        if self._fingerprint_parts is None:
            self._fingerprint_parts = [f"{image_id}:{os.stat(path).st_size}"
                                       for image_id, path in zip(self.ids, self.paths)]
        return self._fingerprint_parts


def _class_folders(split_dir: Path) -> List[str]:
    return sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith("."))


def _list_split(root: Path, split: str, class_to_idx: Dict[str, int]) -> FileSource:
    split_dir = root / split
    files = make_dataset(str(split_dir), class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
    return FileSource(root, files)


def load_imagefolder(root: str | Path, val_fraction: float, seed: int,
                     class_names_file: str | None = None) -> DatasetSplits:
    root = Path(root)
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise DatasetError(
                f"imagefolder: {root / split} not found. Put images in {root}/train/<class>/ and "
                f"{root}/test/<class>/, or point dataset.root at the folder that holds train/ and test/.")
    folders = _class_folders(root / "train")
    if not folders:
        raise DatasetError(f"imagefolder: {root / 'train'} has no class folders; expected {root}/train/<class>/<image>.")
    extra = sorted(set(_class_folders(root / "test")) - set(folders))
    if extra:
        raise DatasetError(f"imagefolder: test classes with no train folder: {', '.join(extra)}. "
                           f"Every folder in {root / 'test'} must also be in {root / 'train'}.")
    class_to_idx = {name: i for i, name in enumerate(folders)}
    raw = folders
    if class_names_file:
        mapping = read_class_names_file(class_names_file)
        missing = [f for f in folders if f not in mapping]
        if missing:
            raise DatasetError(f"class-names file {class_names_file} has no name for folders: "
                               f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}.")
        raw = [mapping[f] for f in folders]
    train = _list_split(root, "train", class_to_idx)
    if len(train) == 0:
        raise DatasetError(f"imagefolder: no image files under {root / 'train'} (extensions: {', '.join(IMG_EXTENSIONS)}).")
    test = _list_split(root, "test", class_to_idx)
    return with_val_split("imagefolder", clean_class_names(raw), list(raw), train, test, val_fraction, seed)
