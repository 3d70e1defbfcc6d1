"""The concept table: one row per (class, concept), with where the concept came from.

Columns (Parquet)::

    class_index  int64    index into the dataset's classes; -1 = shared by every class
    class_name   string   the class's name (null when shared)
    concept      string   normalised concept text
    source       string   conceptnet | llm | file
    relation     string   ConceptNet relation (IsA, HasA, ...), else null
    weight       float64  ConceptNet edge weight, else null
    node         string   ConceptNet node the concept came from, else null
    prompt       string   LLM prompt that produced it, else null
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterable, List

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sparse_cbm.concepts.text import normalize_concept
from sparse_cbm.errors import ConceptSourceError

SHARED = -1
SCHEMA = pa.schema([
    ("class_index", pa.int64()), ("class_name", pa.string()), ("concept", pa.string()), ("source", pa.string()),
    ("relation", pa.string()), ("weight", pa.float64()), ("node", pa.string()), ("prompt", pa.string()),
])


def concept_table(rows: Iterable[Dict], classes: List[str]) -> pa.Table:
    """Normalise concept texts and keep the first row of each (class, concept), in the order given."""
    seen = set()
    out: Dict[str, list] = {name: [] for name in SCHEMA.names}
    for row in rows:
        concept = normalize_concept(row["concept"])
        index = int(row["class_index"])
        if not concept or (index, concept) in seen:
            continue
        seen.add((index, concept))
        values = {**row, "concept": concept, "class_index": index,
                  "class_name": None if index == SHARED else classes[index]}
        for name in SCHEMA.names:
            out[name].append(values.get(name))
    return pa.table(out, schema=SCHEMA)


def write_concept_table(table: pa.Table | pd.DataFrame, path: str | Path) -> None:
    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table[SCHEMA.names], schema=SCHEMA, preserve_index=False)
    pq.write_table(table, path)


def read_concept_table(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise ConceptSourceError(f"{path} not found: run `dvc repro concepts` first.")
    table = pq.read_table(path)
    missing = [n for n in SCHEMA.names if n not in table.column_names]
    if missing:
        raise ConceptSourceError(f"{path} lacks the columns {', '.join(missing)}: it was not made by the "
                                 f"concepts stage of this version. Run `dvc repro -f concepts`.")
    return table.select(SCHEMA.names).to_pandas()
