"""Stage concepts: candidate concepts per class from ConceptNet, an LLM, a file or the
dataset's annotated attributes.

Reads params ``concepts.*`` and the dataset (its class names; its annotations for
``source: attributes``); writes ``data/concepts/`` (``concepts.parquet``: one row per class
and concept, with provenance; ``classes.json``). Every network answer is kept in
``data/concept_cache/`` (a persistent DVC output), so a rerun makes no repeated calls and
a failed run resumes.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Optional, Sequence

from sparse_cbm_app.concept_sources import concept_rows
from sparse_cbm.concepts.http import ResponseCache
from sparse_cbm.concepts.table import SHARED, concept_table, write_concept_table
from sparse_cbm.errors import ConceptSourceError
from sparse_cbm.runtime.atomic import atomic_directory, atomic_write_json
from sparse_cbm.runtime.runner import run_stage, stage_paths
from stages.common import dataset_from, stage_params

log = logging.getLogger("stages.concepts")


def main(argv: Optional[Sequence[str]] = None) -> None:
    paths = stage_paths("concepts", argv, "out", "cache")
    OUT, CACHE = paths.out, Path(paths.cache)
    params = stage_params()
    c = params.concepts
    dataset = dataset_from(params)
    classes = dataset.classes
    ResponseCache.prepare(CACHE)
    table = concept_table(concept_rows(c, dataset, CACHE), classes)
    if table.num_rows == 0:
        raise ConceptSourceError(f"concepts.source '{c.source}' gave no concepts for any of the {len(classes)} "
                                 f"classes; see the warnings above, or choose another source.")
    per_class = Counter(table.column("class_index").to_pylist())
    empty = [name for i, name in enumerate(classes) if not per_class.get(i)]
    if empty and not per_class.get(SHARED):
        log.warning("%d classes have no concepts of their own: %s", len(empty), ", ".join(empty[:10]))
    with atomic_directory(OUT) as tmp:
        write_concept_table(table, tmp / "concepts.parquet")
        atomic_write_json(tmp / "classes.json", {"classes": classes})
    log.info("wrote %s: %d rows, %d distinct concepts, %d classes", OUT, table.num_rows,
             len(set(table.column("concept").to_pylist())), len(classes))


if __name__ == "__main__":
    run_stage("concepts", main)
