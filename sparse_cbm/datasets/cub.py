"""CUB-200-2011 as distributed (Wah et al., 2011): ``dataset.name: cub``, ``dataset.root`` the
``CUB_200_2011`` folder.

Read from the folder's own files: ``images.txt`` (id, path under ``images/``),
``image_class_labels.txt`` (id, class id), ``train_test_split.txt`` (id, 1 = train; the
official split: our val is carved from its train part, our test is its test part),
``classes.txt`` (class id, ``001.Black_footed_Albatross``), ``attributes.txt`` or
``attributes/attributes.txt`` (attribute id, ``has_wing_color::blue``) and
``attributes/image_attribute_labels.txt`` (image id, attribute id, is_present, certainty
id, time). Every image's 312 annotations go into the cache index: an attribute is
present when its ``is_present`` is 1, whatever the certainty (1 not visible .. 4
definitely; kept in ``certainty()``). The real file has a few malformed lines, some with
an extra field, some cut short: the first four fields of a line are read, and lines
without four whole numbers are skipped and counted in a warning.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import pandas as pd

from sparse_cbm.datasets.base import Attribute, DatasetSplits, with_val_split
from sparse_cbm.datasets.classnames import clean_class_names
from sparse_cbm.datasets.imagefolder import FileSource
from sparse_cbm.errors import DatasetError

log = logging.getLogger(__name__)

_PARENTHESES = re.compile(r"_?\(.*?\)")
_SIZE_WORDS = {"size": "size"}


def attribute_concept(name: str) -> str:
    """The concept phrase of a CUB attribute: ``has_wing_color::blue`` -> "blue wing",
    ``has_breast_pattern::striped`` -> "striped breast", ``has_bill_length::longer_than_head`` ->
    "bill longer than head", ``has_size::small_(5_-_9_in)`` -> "small size", ``has_shape::perching-like``
    -> "perching-like shape", ``has_primary_color::blue`` -> "mostly blue"."""
    key, _, value = name.partition("::")
    key = key[4:] if key.startswith("has_") else key
    value = _PARENTHESES.sub("", value).replace("_", " ").strip()
    part, _, prop = key.rpartition("_")
    part = part.replace("_", " ")
    if not part:  # has_size, has_shape
        return f"{value} {prop}"
    if part == "primary":
        return f"mostly {value}"
    if prop == "length":
        return f"{part} {value}"
    head = part.split()[-1]  # "upper tail" -> "tail"
    for suffix in (f"-{head}s", f"-{head}", f" {head}s", f" {head}"):
        if value.endswith(suffix):  # "pointed-wings" of the wing, "notched tail" of the tail
            value = value[: -len(suffix)]
            break
    return f"{value} {part}"


def _read_table(path: Path, columns: int, what: str) -> pd.DataFrame:
    """A whitespace-separated file of ``columns`` fields (the last one may contain spaces: paths)."""
    if not path.is_file():
        raise DatasetError(f"cub: {path} not found. dataset.root must be the CUB_200_2011 folder as distributed "
                           f"(images/, images.txt, image_class_labels.txt, train_test_split.txt, classes.txt, "
                           f"attributes/); {what}.")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split(maxsplit=columns - 1)
        if len(fields) != columns or not fields[0].isdigit():
            raise DatasetError(f"cub: {path}, line {n} is not '<id> ...' with {columns} fields: {line[:80]!r}.")
        rows.append(fields)
    return pd.DataFrame(rows)


def _count_lines(path: Path) -> int:
    """Non-empty lines, read a block at a time."""
    count, last = 0, b"\n"
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            count += block.count(b"\n") - block.count(b"\n\n") - block.count(b"\n \n")
            last = block[-1:]
    return count + (last != b"\n")


def read_image_attribute_labels(path: Path, image_ids: np.ndarray,
                                num_attributes: int) -> Tuple[np.ndarray, np.ndarray, int]:
    """(is_present bool (N, A), certainty uint8 (N, A), number of malformed lines skipped), rows in
    the order of ``image_ids``."""
    if not path.is_file():
        raise DatasetError(f"cub: {path} not found: the attribute annotations come with CUB_200_2011 "
                           f"(attributes/image_attribute_labels.txt).")
    read = dict(sep=r"\s+", header=None, names=range(8), engine="c", on_bad_lines="skip")  # <= 8 fields a line
    try:
        numbers = pd.read_csv(path, dtype=np.float64, **read)[[0, 1, 2, 3]]
    except ValueError:  # a field that is not a number somewhere: read as text, that line becomes malformed
        numbers = pd.read_csv(path, dtype=str, **read)[[0, 1, 2, 3]].apply(pd.to_numeric, errors="coerce")
    whole = numbers.notna().all(axis=1) & (numbers.fillna(0) % 1 == 0).all(axis=1)
    malformed = _count_lines(path) - int(whole.sum())
    values = numbers[whole].astype(np.int64).to_numpy()
    order = np.argsort(image_ids)
    sorted_ids = np.asarray(image_ids)[order]
    at = np.searchsorted(sorted_ids, values[:, 0]).clip(max=len(sorted_ids) - 1)
    rows = np.where(sorted_ids[at] == values[:, 0], order[at], -1)
    cols = values[:, 1] - 1
    ok = (rows >= 0) & (cols >= 0) & (cols < num_attributes)
    present = np.zeros((len(image_ids), num_attributes), dtype=bool)
    certainty = np.zeros((len(image_ids), num_attributes), dtype=np.uint8)
    present[rows[ok], cols[ok]] = values[ok, 2] == 1
    certainty[rows[ok], cols[ok]] = values[ok, 3]
    return present, certainty, malformed + int((~ok).sum())


class CubSource(FileSource):
    """CUB images of one official split, with their 312 attribute annotations."""

    def __init__(self, root: Path, files: List[Tuple[str, int]], present: np.ndarray, certainty: np.ndarray):
        super().__init__(root, files)
        self._present, self._certainty = present, certainty

    def annotations(self) -> Optional[np.ndarray]:
        return self._present

    def certainty(self) -> np.ndarray:
        """(N, A) uint8: 1 not visible, 2 guessing, 3 probably, 4 definitely (0: no annotation line)."""
        return self._certainty


def attribute_names_file(root: Path) -> Path:
    """``attributes.txt``, the 312 attribute names: inside ``attributes/``, in the folder itself, or beside it
    (where the distributed ``CUB_200_2011.tgz`` puts it); the one used is logged."""
    places = (root / "attributes" / "attributes.txt", root / "attributes.txt", root.parent / "attributes.txt")
    found = next((p for p in places if p.is_file()), None)
    if found is None:
        raise DatasetError(f"cub: attributes.txt (the 312 attribute names) is in none of {', '.join(map(str, places))}. "
                           f"The CUB_200_2011.tgz archive puts it beside the CUB_200_2011 folder: extract the whole "
                           f"archive, or copy it into {root / 'attributes'}.")
    log.info("cub: attribute names from %s", found)
    return found


def load_cub(root: str | Path, val_fraction: float, seed: int) -> DatasetSplits:
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"cub: {root} not found. Download CUB_200_2011 (https://www.vision.caltech.edu/datasets/"
                           f"cub_200_2011/) and set dataset.root to its folder.")
    images = _read_table(root / "images.txt", 2, "it lists the images")
    labels = _read_table(root / "image_class_labels.txt", 2, "it gives each image's class")
    split = _read_table(root / "train_test_split.txt", 2, "it gives the official train/test split")
    classes = _read_table(root / "classes.txt", 2, "it names the classes")
    attributes = _read_table(attribute_names_file(root), 2, "it names the 312 attributes")
    ids = images[0].astype(np.int64).to_numpy()
    label_of: Dict[int, int] = dict(zip(labels[0].astype(int), labels[1].astype(int)))
    train_of: Dict[int, bool] = dict(zip(split[0].astype(int), split[1].astype(int) == 1))
    missing = [i for i in ids if int(i) not in label_of or int(i) not in train_of]
    if missing:
        raise DatasetError(f"cub: images {missing[:5]} have no class or no split line; the folder is incomplete.")
    class_ids = classes[0].astype(int).tolist()
    class_index = {cid: k for k, cid in enumerate(class_ids)}
    attribute_list = [Attribute(name, attribute_concept(name)) for name in attributes[1]]
    present, certainty, skipped = read_image_attribute_labels(
        root / "attributes" / "image_attribute_labels.txt", ids, len(attribute_list))
    if skipped:
        log.warning("cub: skipped %d malformed lines of attributes/image_attribute_labels.txt", skipped)
    parts = {}
    for part, want in (("train", True), ("test", False)):
        keep = np.array([train_of[int(i)] == want for i in ids])
        files = [(str(root / "images" / p), class_index[label_of[int(i)]])
                 for i, p, k in zip(ids, images[1], keep) if k]
        parts[part] = CubSource(root / "images", files, present[keep], certainty[keep])
    raw = classes[1].tolist()
    return with_val_split("cub", clean_class_names(raw), raw, parts["train"], parts["test"], val_fraction, seed,
                          attributes=attribute_list)
