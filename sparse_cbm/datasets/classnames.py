"""Readable class names for text prompts.

``001.Black_footed_Albatross`` -> ``black footed albatross`` (CUB),
``tench, Tinca tinca`` -> ``tench`` (ImageNet synonym lists),
``/a/apartment_building/outdoor`` -> ``apartment building outdoor`` (Places365),
``aquarium_fish`` -> ``aquarium fish`` (CIFAR-100).
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from pathlib import Path
from typing import Dict, List, Sequence

from sparse_cbm.errors import DatasetError

log = logging.getLogger(__name__)

_NUMERIC_PREFIX = re.compile(r"^\d+[._\-\s]+")
_PLACES_PREFIX = re.compile(r"^/[a-z]/")


def clean_class_name(raw: str) -> str:
    """Turn a folder name or label into lower-case words fit for "a photo of a {class}"."""
    name = raw.strip()
    name = _PLACES_PREFIX.sub("", name)
    name = _NUMERIC_PREFIX.sub("", name)
    name = name.split(",")[0]
    name = re.sub(r"[_/]+", " ", name)
    name = re.sub(r"\s+", " ", name).strip().lower()
    if not name:
        raise DatasetError(f"class name {raw!r} is empty after cleaning; give it a readable name in a class-names file.")
    return name


def clean_class_names(raw: Sequence[str]) -> List[str]:
    names = [clean_class_name(r) for r in raw]
    dupes = sorted(n for n, c in Counter(names).items() if c > 1)
    if dupes:
        log.warning("class names that occur more than once after cleaning: %s. Text prompts cannot tell "
                    "them apart; give them distinct names in dataset.class_names_file.", ", ".join(dupes))
    return names


def read_class_names_file(path: str | Path) -> Dict[str, str]:
    """Read a mapping from folder name to readable name.

    Accepted forms: a JSON object ``{"n01440764": "tench"}``, or text with one class
    a line, the folder name first, then a tab or a space, then the name (ImageNet's
    ``LOC_synset_mapping.txt``: ``n01440764 tench, Tinca tinca``; the first synonym is used).
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"class-names file {path} not found; fix dataset.class_names_file or set it to null.")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            mapping = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"class-names file {path} is not valid JSON: {exc}") from None
        if not isinstance(mapping, dict):
            raise DatasetError(f"class-names file {path} must hold a JSON object of folder -> name.")
        return {str(k): str(v) for k, v in mapping.items()}
    mapping = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = re.split(r"\t|\s+", line, maxsplit=1)
        if len(parts) != 2:
            raise DatasetError(f"{path}:{lineno}: expected '<folder> <name>', got {line!r}.")
        mapping[parts[0]] = parts[1]
    return mapping
