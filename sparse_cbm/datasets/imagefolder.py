"""Images in class folders: ``<root>/train/<class>/*`` and ``<root>/test/<class>/*``.

Serves ImageNet, CUB-200 or a user's own data. Files are listed with torchvision's
``make_dataset`` (its image extensions; other files are ignored). Pillow decodes them;
a TIFF it cannot read (float64, many samples, planar, volumes) is read with tifffile.
Decoding errors name the file.
"""

from __future__ import annotations

import logging
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

log = logging.getLogger(__name__)


# classic TIFF and BigTIFF, in both byte orders
_TIFF_MAGIC = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")
_TIFF_SUFFIXES = (".tif", ".tiff")
_TIFF_IMAGE_DEPTH = 32997  # SGI tag of volumetric TIFFs; Pillow ignores it and decodes such tiles wrongly


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Decode an image file fully and convert it to RGB (grayscale, palette, RGBA, CMYK...).

    Pillow decodes the file. Float and 16/32-bit integer images (Pillow modes "F", "I",
    "I;16*") are scaled to 8 bits by ``to_uint8`` instead of being clipped by
    ``convert("RGB")``. A TIFF (by extension or magic bytes) that Pillow cannot open or
    decode, or a volumetric one, is read with tifffile instead (``_read_tiff``: first page,
    same scaling), so the result does not depend on which library opened the file.

    Raises CorruptImageError naming the file for a truncated, empty or non-image file; for
    a TIFF the reason gives both Pillow's and tifffile's error.
    """
    try:
        return _pillow_rgb(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise CorruptImageError(str(path), _reason(exc)) from None
    except (OSError, SyntaxError, ValueError) as exc:
        pillow_reason = _reason(exc)
        if not _is_tiff(path):
            raise CorruptImageError(str(path), pillow_reason) from None
    try:
        return _read_tiff(path)
    except Exception as exc:  # tifffile and its codecs raise many types (ValueError, IndexError, zlib.error...)
        raise CorruptImageError(str(path), f"Pillow: {pillow_reason}; tifffile: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def _pillow_rgb(path: str | os.PathLike) -> Image.Image:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as img:
            if img.format == "TIFF" and img.tag_v2.get(_TIFF_IMAGE_DEPTH, 1) > 1:
                raise ValueError("a volumetric TIFF (ImageDepth > 1), which Pillow does not read")
            img.load()
            if img.mode in ("F", "I") or img.mode.startswith("I;16"):
                return _array_to_rgb(np.asarray(img))
            if img.mode == "P" and "transparency" in img.info:
                img = img.convert("RGBA")
            return img.convert("RGB")


def _is_tiff(path: str | os.PathLike) -> bool:
    if str(path).lower().endswith(_TIFF_SUFFIXES):
        return True
    try:
        with open(path, "rb") as f:
            return f.read(4) in _TIFF_MAGIC
    except OSError:
        return False


def _read_tiff(path: str | os.PathLike) -> Image.Image:
    """The first page of a TIFF, read with tifffile, as RGB (later pages are ignored).

    Pages over Pillow's ``Image.MAX_IMAGE_PIXELS`` are refused, as Pillow refuses them.
    """
    import tifffile  # imported here: only TIFFs that Pillow cannot read need it

    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        pixels = page.imagewidth * page.imagelength * page.imagedepth
        if Image.MAX_IMAGE_PIXELS and pixels > Image.MAX_IMAGE_PIXELS:
            raise Image.DecompressionBombError(
                f"first page has {pixels} pixels, over the limit of {Image.MAX_IMAGE_PIXELS} (PIL.Image.MAX_IMAGE_PIXELS)")
        array = page.asarray()
        axes = page.axes
    return _array_to_rgb(first_plane(array, axes))


def first_plane(array: np.ndarray, axes: str) -> np.ndarray:
    """Reduce a TIFF page's array to (H, W) or (H, W, C), using tifffile's axes letters.

    Keeps the rows Y, the columns X and the samples S (moved last, so planar (C, H, W)
    data becomes (H, W, C) whatever C is); of any other axis, such as the depth Z of a
    volume, takes index 0.
    """
    if len(axes) != array.ndim or "Y" not in axes or "X" not in axes:
        raise ValueError(f"cannot read a page with axes {axes!r} and shape {array.shape}")
    array = array[tuple(slice(None) if a in "YXS" else 0 for a in axes)]
    kept = [a for a in axes if a in "YXS"]
    return array.transpose([kept.index(a) for a in "YXS" if a in kept])


def _array_to_rgb(array: np.ndarray) -> Image.Image:
    """(H, W) or (H, W, C) pixel values as an 8-bit RGB image.

    (H, W) and C=1 are grey; C=2 (grey and alpha, or two bands) takes the first channel as
    grey; C>=3 takes the first three channels as RGB. The values kept are scaled together
    by ``to_uint8``.
    """
    if array.ndim == 3:
        array = array[..., 0] if array.shape[2] < 3 else array[..., :3]
    elif array.ndim != 2:
        raise ValueError(f"cannot make an image of an array of shape {array.shape}")
    return Image.fromarray(np.ascontiguousarray(to_uint8(array))).convert("RGB")


def to_uint8(array: np.ndarray) -> np.ndarray:
    """Pixel values as uint8, for any integer, float or bool array (the shape is kept).

    bool -> 0 and 255; uint8 -> unchanged; any other integer or float type -> min-max
    scaled over the finite values to 0..255 and rounded. NaN and inf become 0; a constant
    image (or one with no finite value) becomes all 0. Raises ValueError for other types
    (complex, ...).
    """
    array = np.asarray(array)
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * np.uint8(255)
    if array.dtype == np.uint8:
        return array
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"cannot scale {array.dtype} pixel values to 8 bits")
    values = array.astype(np.float64)
    finite = np.isfinite(values)
    out = np.zeros(values.shape, dtype=np.uint8)
    if finite.any():
        lo, hi = values[finite].min(), values[finite].max()
        if hi > lo:
            scaled = np.rint((values[finite] - lo) * (255.0 / (hi - lo)))
            out[finite] = np.clip(scaled, 0, 255)
    return out


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


def _drop_empty_classes(root: Path, folders: List[str], counts: np.ndarray, skip: bool) -> List[str]:
    """The class folders of train that hold images; an empty one is an error unless ``skip`` (then a warning):
    a class with no image would still be a class, and its prompt would win zero-shot and CMS."""
    empty = [f for f, n in zip(folders, counts) if n == 0]
    if empty and not skip:
        shown = ", ".join(str(root / "train" / f) for f in empty[:5]) + (" ..." if len(empty) > 5 else "")
        raise DatasetError(f"imagefolder: {len(empty)} class folder(s) with no images: {shown}. Add images, remove "
                           f"the folder, or set dataset.skip_empty_classes: true to leave them out.")
    if empty:
        log.warning("imagefolder: left out %d empty class folder(s) (dataset.skip_empty_classes), and their test "
                    "images if any: %s", len(empty), ", ".join(empty))
    return [f for f in folders if f not in empty]


def load_imagefolder(root: str | Path, val_fraction: float, seed: int,
                     class_names_file: str | None = None, skip_empty_classes: bool = False) -> DatasetSplits:
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
    train = _list_split(root, "train", {name: i for i, name in enumerate(folders)})
    if len(train) == 0:
        raise DatasetError(f"imagefolder: no image files under {root / 'train'} (extensions: {', '.join(IMG_EXTENSIONS)}).")
    kept = _drop_empty_classes(root, folders, np.bincount(train.labels, minlength=len(folders)), skip_empty_classes)
    class_to_idx = {name: i for i, name in enumerate(kept)}
    if kept != folders:
        folders, train = kept, _list_split(root, "train", class_to_idx)
    raw = folders
    if class_names_file:
        mapping = read_class_names_file(class_names_file)
        missing = [f for f in folders if f not in mapping]
        if missing:
            raise DatasetError(f"class-names file {class_names_file} has no name for folders: "
                               f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}.")
        raw = [mapping[f] for f in folders]
    test = _list_split(root, "test", class_to_idx)
    return with_val_split("imagefolder", clean_class_names(raw), list(raw), train, test, val_fraction, seed)
