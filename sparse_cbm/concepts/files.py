"""Concepts from the user's own file.

- ``.txt`` (or any other suffix): one concept a line, shared by every class; blank
  lines and lines starting with ``#`` are skipped.
- ``.csv`` / ``.parquet``: a ``concept`` column and a ``class`` column holding the
  class name (matched in any case, with or without an article) or its index; an
  empty class cell makes the concept shared by every class.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Dict, List, Sequence

import pandas as pd

from sparse_cbm.concepts.table import SHARED
from sparse_cbm.concepts.text import class_key
from sparse_cbm.errors import ConceptSourceError


def _class_index(value, lookup: Dict[str, int], n: int, path: Path, line: int) -> int:
    if value is None or (isinstance(value, float) and pd.isna(value)) or str(value).strip() == "":
        return SHARED
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        index = int(text)
        if not 0 <= index < n:
            raise ConceptSourceError(f"{path}, row {line}: class index {index} is out of range (0..{n - 1}).")
        return index
    key = class_key(text)
    if key not in lookup:
        close = difflib.get_close_matches(key, list(lookup), n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ConceptSourceError(f"{path}, row {line}: class {text!r} is not a class of the dataset.{hint} "
                                 f"Use the class names of the dataset (see data/concepts/classes.json) or indices.")
    return lookup[key]


def read_concept_file(path: str | Path, classes: Sequence[str]) -> List[Dict]:
    """Concept rows from a text, CSV or Parquet file (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise ConceptSourceError(f"concepts.file: {path} not found. Give a text file with one concept a line, "
                                 f"or a CSV/Parquet file with 'class' and 'concept' columns.")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        lines = path.read_text(encoding="utf-8").splitlines()
        return [{"class_index": SHARED, "concept": ln.strip(), "source": "file"}
                for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False) if suffix == ".csv" else pd.read_parquet(path)
    except Exception as exc:  # pandas raises many parser errors
        raise ConceptSourceError(f"concepts.file: cannot read {path} ({type(exc).__name__}: {exc}).") from None
    columns = {c.strip().lower(): c for c in frame.columns}
    if "concept" not in columns:
        raise ConceptSourceError(f"concepts.file: {path} has no 'concept' column (columns: "
                                 f"{', '.join(map(str, frame.columns))}).")
    class_col = next((columns[c] for c in ("class", "class_name", "class_index") if c in columns), None)
    lookup: Dict[str, int] = {}
    for i, name in enumerate(classes):
        lookup.setdefault(class_key(name), i)
    rows = []
    for line, record in enumerate(frame.to_dict("records"), start=2):
        index = _class_index(record[class_col], lookup, len(classes), path, line) if class_col else SHARED
        rows.append({"class_index": index, "concept": str(record[columns["concept"]]), "source": "file"})
    return rows
