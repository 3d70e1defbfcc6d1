"""What the Python API accepts as an image, checked: a PIL image, a path, an (H, W, 3) uint8 array, or
a preprocessed tensor (3, H, W) / (B, 3, H, W). Anything else, an unreadable file or an image too large
to decode safely, is a ``ModelInputError`` that names the problem."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, List, Sequence, Union

import numpy as np
import torch
from PIL import Image

from sparse_cbm.errors import CorruptImageError, SparseCbmError

MAX_PIXELS = 50_000_000  # about 7,000 x 7,000; Pillow warns at 89M and refuses at 179M
ImageLike = Union[Image.Image, str, os.PathLike, np.ndarray, torch.Tensor]


class ModelInputError(SparseCbmError):
    """An input the trained model cannot use (not an image, too large, a region outside it, an unknown concept)."""


def _checked(image: Image.Image, what: str) -> Image.Image:
    pixels = image.width * image.height
    if pixels > MAX_PIXELS:
        raise ModelInputError(f"{what} is {image.width} x {image.height} pixels ({pixels / 1e6:.0f} M); the limit is "
                              f"{MAX_PIXELS / 1e6:.0f} M: resize it first (the backbone sees a small square anyway)")
    if image.width == 0 or image.height == 0:
        raise ModelInputError(f"{what} is empty (0 pixels)")
    return image.convert("RGB")


def as_pil(image: Any) -> Image.Image:
    """One image as an RGB PIL image."""
    from sparse_cbm.datasets.imagefolder import load_rgb

    if isinstance(image, Image.Image):
        return _checked(image, "the image")
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise ModelInputError(f"no image file at {path}")
        try:
            with Image.open(path) as header:  # the size first, before decoding the pixels
                width, height = header.size
        except Exception:  # not an image, or one Pillow cannot open: load_rgb says why (and tries tifffile)
            width = height = 0
        if width * height > MAX_PIXELS:
            raise ModelInputError(f"{path} is {width} x {height} pixels ({width * height / 1e6:.0f} M); the limit is "
                                  f"{MAX_PIXELS / 1e6:.0f} M: resize it first (the backbone sees a small square anyway)")
        try:
            return _checked(load_rgb(path), str(path))
        except CorruptImageError as exc:
            if "DecompressionBomb" in exc.reason:
                raise ModelInputError(f"{path} is too large to decode safely ({exc.reason}): resize it first") from None
            raise ModelInputError(f"{path} is not an image this tool can read ({exc.reason})") from None
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ModelInputError(f"an array image must be (H, W, 3) uint8; got {image.shape} {image.dtype}")
        return _checked(Image.fromarray(image), "the array image")
    raise ModelInputError(f"cannot read a {type(image).__name__} as an image: give a PIL image, a file path, an "
                          f"(H, W, 3) uint8 array or a preprocessed tensor")


def is_batch(images: Any) -> bool:
    """Whether ``images`` is several images (a list or tuple, or a 4-D tensor) rather than one."""
    if isinstance(images, torch.Tensor):
        return images.ndim == 4
    return isinstance(images, (list, tuple))


def preprocessed(images: Any, preprocess) -> torch.Tensor:
    """(B, 3, H, W): one image or several, through ``preprocess`` unless already tensors."""
    if isinstance(images, torch.Tensor):
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4 or images.shape[1] != 3:
            raise ModelInputError(f"a tensor input must be preprocessed images (3, H, W) or (B, 3, H, W); "
                                  f"got {tuple(images.shape)}")
        return images
    items: Sequence[Any] = images if isinstance(images, (list, tuple)) else [images]
    if not items:
        raise ModelInputError("no images given")
    return torch.stack([preprocess(as_pil(item)) for item in items])


def square_view(region: np.ndarray) -> np.ndarray:
    """The centred square of a region (H, W), as the backbone's preprocessing crops the image."""
    h, w = region.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return region[top:top + side, left:left + side]


def square_image(image: Image.Image) -> Image.Image:
    """The centred square of an image: what the backbone sees, before resizing."""
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    return image.crop((left, top, left + side, top + side))


def as_list(value: Any) -> List[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]
