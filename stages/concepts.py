"""Stage concepts: candidate concepts per class from ConceptNet, an LLM or a file.

Reads params ``concepts.*`` and the dataset's class names; writes ``data/concepts/``
(``concepts.parquet``: one row per class and concept, with provenance; ``classes.json``).
Every network answer is kept in ``data/concept_cache/`` (a persistent DVC output), so
a rerun makes no repeated calls and a failed run resumes.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from sparse_cbm.runtime.atomic import atomic_directory, atomic_write_json
from sparse_cbm.concepts.conceptnet import conceptnet_api_concepts, conceptnet_dump_concepts
from sparse_cbm.concepts.files import read_concept_file
from sparse_cbm.concepts.http import RetryPolicy
from sparse_cbm.concepts.llm import ChatClient, llm_concepts
from sparse_cbm.concepts.table import SHARED, concept_table, write_concept_table
from sparse_cbm.errors import ConceptSourceError
from sparse_cbm.params import load_params
from sparse_cbm.runtime.runner import run_stage
from stages.common import dataset_from

OUT = "data/concepts"
CACHE = Path("data/concept_cache")
TRACKED_FILES = Path("data/concept_files")
log = logging.getLogger("stages.concepts")


def main() -> None:
    params = load_params()
    c = params.concepts
    classes = dataset_from(params).classes
    CACHE.mkdir(parents=True, exist_ok=True)
    policy = RetryPolicy(total_seconds=c.http.retry_seconds, timeout=c.http.timeout)
    if c.source == "file":
        if not c.file:
            raise ConceptSourceError("concepts.source is 'file' but concepts.file is null: give the path of "
                                     "your concept file (for example data/concept_files/concepts.csv).")
        if TRACKED_FILES.resolve() not in Path(c.file).resolve().parents:
            log.warning("concepts.file %s is outside %s/: DVC does not see changes to it, so after editing it "
                        "run `dvc repro -f concepts`", c.file, TRACKED_FILES)
        rows = read_concept_file(c.file, classes)
    elif c.source == "conceptnet" and c.conceptnet.dump:
        rows = conceptnet_dump_concepts(classes, dump=c.conceptnet.dump, relations=c.conceptnet.relations,
                                        cache_dir=CACHE / "conceptnet_dump", policy=policy)
    elif c.source == "conceptnet":
        rows = conceptnet_api_concepts(classes, url=c.conceptnet.url, relations=c.conceptnet.relations,
                                       limit=c.conceptnet.limit, cache_dir=CACHE / "conceptnet_api", policy=policy)
    else:
        client = ChatClient(c.llm.base_url, c.llm.model, c.llm.temperature, c.llm.api_key_env, CACHE / "llm",
                            policy, max_tokens=c.llm.max_tokens)
        rows = llm_concepts(classes, client, c.llm.prompts)
    table = concept_table(rows, classes)
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
