"""The explorer's images: the model's gallery (the project's test split, or a saved model's gallery) and
uploads. An upload is decoded as the API decodes a file (``load_rgb``, from a temporary folder that is
removed at once) and then lives in memory only. Each image is explained whole, as ``SparseCBM`` explains
a file; the page shows, and draws regions on, its centred square (what the backbone sees). Its feature
maps and CBM explanation are computed once (a small LRU cache)."""

from __future__ import annotations

import io
import logging
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Dict, Optional

import numpy as np
from PIL import Image

from sparse_cbm.trained.images import ModelInputError, square_image

log = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_SIDE = 1024  # an upload's square is shrunk to this many pixels a side (the backbone sees 64 to 336)


class UnknownImage(LookupError):
    """An image id that is neither in the gallery nor a kept upload."""


@dataclass
class Entry:
    image: Image.Image  # what is explained (an upload larger than MAX_SIDE is scaled down first)
    square: Image.Image  # its centred square: what the page shows and regions are drawn on
    label: Optional[str]  # the true class, for gallery images
    features: Any = None  # SALF-CBM's feature maps (1, C, h, w)
    cbm: Any = None  # the CBM's Explanation of the whole image
    png: Optional[bytes] = None


def decode_upload(data: bytes) -> Image.Image:
    """An uploaded file as an RGB image, decoded as ``SparseCBM`` decodes a file; refused with a message when it
    is not an image or is too large."""
    from sparse_cbm.trained.images import as_pil

    if not data:
        raise ModelInputError("the upload is empty: choose an image file")
    if len(data) > MAX_UPLOAD_BYTES:
        raise ModelInputError(f"the upload is {len(data) / 2**20:.0f} MB; the limit is {MAX_UPLOAD_BYTES // 2**20} MB")
    with tempfile.TemporaryDirectory(prefix="sparse-cbm-upload-") as tmp:
        path = f"{tmp}/upload"
        with open(path, "wb") as fh:
            fh.write(data)
        try:
            image = as_pil(path)
        except ModelInputError as exc:
            raise ModelInputError(str(exc).replace(path, "the upload")) from None
    if min(image.size) > MAX_SIDE:  # the square shown and explained need no more
        scale = MAX_SIDE / min(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.LANCZOS)
    return image


def square_region(entry: "Entry", region: np.ndarray) -> np.ndarray:
    """A region drawn on the square, placed in the whole image (zero outside the square)."""
    full = np.zeros((entry.image.height, entry.image.width), np.float32)
    side = entry.square.width
    top, left = (entry.image.height - side) // 2, (entry.image.width - side) // 2
    full[top:top + side, left:left + side] = region
    return full


class ImageStore:
    """Gallery images by id ``g<row>``, uploads by id ``u<n>``; computed state cached for the last few."""

    def __init__(self, model, cache_size: int = 256, uploads: int = 32):
        self.model, self.gallery = model, model.gallery
        self._entries: "OrderedDict[str, Entry]" = OrderedDict()
        self._uploads: "OrderedDict[str, Entry]" = OrderedDict()
        self._cache_size, self._max_uploads, self._count = cache_size, uploads, 0
        self._lock = threading.Lock()

    def gallery_size(self) -> int:
        """How many gallery images there are; 0 when the project's dataset cannot be built here (logged)."""
        from sparse_cbm.errors import SparseCbmError

        if self.gallery is None:
            return 0
        try:
            return len(self.gallery)
        except SparseCbmError as exc:
            log.warning("no gallery: %s", exc)
            self.gallery = None
            return 0

    def gallery_page(self, offset: int, limit: int):
        n = self.gallery_size()
        return n, [{"id": f"g{i}", "label": self.gallery.label(i)} for i in range(offset, min(n, offset + limit))]

    def add_upload(self, data: bytes) -> str:
        image = decode_upload(data)
        with self._lock:
            self._count += 1
            key = f"u{self._count}"
            self._uploads[key] = Entry(image, square_image(image), None)
            while len(self._uploads) > self._max_uploads:
                self._uploads.popitem(last=False)
        return key

    def get(self, key: str) -> Entry:
        with self._lock:
            if key in self._uploads:
                return self._uploads[key]
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
        number = key[1:]
        if not key.startswith("g") or not (number.isascii() and number.isdecimal()) or self.gallery is None \
                or int(number) >= len(self.gallery):
            raise UnknownImage(f"no image {key!r}: pick one from the gallery or upload one")
        row = int(number)
        image = self.gallery.image(row)
        entry = Entry(image, square_image(image), self.gallery.label(row))
        with self._lock:
            entry = self._entries.setdefault(key, entry)  # two first requests at once keep one entry
            while len(self._entries) > self._cache_size:
                self._entries.popitem(last=False)
        return entry

    def png(self, key: str) -> bytes:
        entry = self.get(key)
        if entry.png is None:
            buf = io.BytesIO()
            entry.square.save(buf, format="PNG")
            entry.png = buf.getvalue()
        return entry.png


def heat_png(heat: np.ndarray, side: int = 128) -> bytes:
    """A standardised map as a PNG in the magma colour map, scaled to [-3, 3] standard deviations."""
    from matplotlib import colormaps

    img = Image.fromarray(heat.astype(np.float32)).resize((side, side), Image.BILINEAR)
    scaled = np.clip((np.asarray(img) + 3.0) / 6.0, 0, 1)
    rgba = (colormaps["magma"](scaled) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgba).save(buf, format="PNG")
    return buf.getvalue()


def concept_list(scores) -> list:
    return [{"concept": s.concept, "value": round(float(s.value), 4)} for s in scores]


def top_classes(probabilities: Dict[str, float], k: int = 5) -> list:
    return [{"class": c, "p": round(p, 4)} for c, p in sorted(probabilities.items(), key=lambda kv: -kv[1])[:k]]
