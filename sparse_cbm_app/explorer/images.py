"""The explorer's images: the model's gallery (the project's test split, or a saved model's gallery) and
uploads, which live in memory only (never written to disk). Each is kept as the centred square the
backbone sees, with its feature maps and CBM explanation computed once (a small LRU cache)."""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Dict, Optional

import numpy as np
from PIL import Image

from sparse_cbm.trained.images import MAX_PIXELS, ModelInputError, square_image

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_SIDE = 1024  # an upload's square is shrunk to this many pixels a side (the backbone sees 64 to 336)


@dataclass
class Entry:
    square: Image.Image
    label: Optional[str]  # the true class, for gallery images
    features: Any = None  # SALF-CBM's feature maps (1, C, h, w)
    cbm: Any = None  # the CBM's Explanation of the whole image
    png: Optional[bytes] = None


def decode_upload(data: bytes) -> Image.Image:
    """An uploaded file as an RGB image, refused with a message when it is not one or is too large."""
    if not data:
        raise ModelInputError("the upload is empty: choose an image file")
    if len(data) > MAX_UPLOAD_BYTES:
        raise ModelInputError(f"the upload is {len(data) / 2**20:.0f} MB; the limit is {MAX_UPLOAD_BYTES // 2**20} MB")
    try:
        image = Image.open(io.BytesIO(data))
        if image.width * image.height > MAX_PIXELS:
            raise ModelInputError(f"the image is {image.width} x {image.height} pixels; the limit is "
                                  f"{MAX_PIXELS / 1e6:.0f} M pixels: resize it first")
        image.load()
    except ModelInputError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ModelInputError(f"the upload is not an image this tool can read ({type(exc).__name__}: "
                              f"{str(exc).split(' <')[0]})") from None
    square = square_image(image.convert("RGB"))
    if square.width > MAX_SIDE:
        square = square.resize((MAX_SIDE, MAX_SIDE), Image.LANCZOS)
    return square


class ImageStore:
    """Gallery images by id ``g<row>``, uploads by id ``u<n>``; computed state cached for the last few."""

    def __init__(self, model, cache_size: int = 256, uploads: int = 32):
        self.model, self.gallery = model, model.gallery
        self._entries: "OrderedDict[str, Entry]" = OrderedDict()
        self._uploads: "OrderedDict[str, Entry]" = OrderedDict()
        self._cache_size, self._max_uploads, self._count = cache_size, uploads, 0
        self._lock = threading.Lock()

    def gallery_page(self, offset: int, limit: int):
        n = len(self.gallery) if self.gallery is not None else 0
        return n, [{"id": f"g{i}", "label": self.gallery.label(i)} for i in range(offset, min(n, offset + limit))]

    def add_upload(self, data: bytes) -> str:
        square = decode_upload(data)
        with self._lock:
            self._count += 1
            key = f"u{self._count}"
            self._uploads[key] = Entry(square, None)
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
        if not key.startswith("g") or not key[1:].isdigit() or self.gallery is None \
                or int(key[1:]) >= len(self.gallery):
            raise KeyError(f"no image {key!r}: pick one from the gallery or upload one")
        row = int(key[1:])
        entry = Entry(square_image(self.gallery.image(row)), self.gallery.label(row))
        with self._lock:
            self._entries[key] = entry
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

    img = Image.fromarray(heat.astype(np.float32), mode="F").resize((side, side), Image.BILINEAR)
    scaled = np.clip((np.asarray(img) + 3.0) / 6.0, 0, 1)
    rgba = (colormaps["magma"](scaled) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA").save(buf, format="PNG")
    return buf.getvalue()


def concept_list(scores) -> list:
    return [{"concept": s.concept, "value": round(float(s.value), 4)} for s in scores]


def top_classes(probabilities: Dict[str, float], k: int = 5) -> list:
    return [{"class": c, "p": round(p, 4)} for c, p in sorted(probabilities.items(), key=lambda kv: -kv[1])[:k]]
