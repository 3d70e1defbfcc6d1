"""Every concept source called the same way: ``concept_rows(params, dataset, cache)``.

A source turns the ``concepts:`` params, the dataset and the answer-cache folder into
concept rows (``class_index``, ``concept``, ``source`` and provenance) for
``concepts.table.concept_table``. Adding a source is adding a function here, registered
in ``SOURCES`` under its name (the order of registration is the order of ``concepts.source``'s
choices). A source's own module is imported only when the source is used.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List

from sparse_cbm.datasets.base import DatasetSplits
from sparse_cbm.errors import ConceptSourceError
from sparse_cbm.runtime.registry import Registry

if TYPE_CHECKING:
    from sparse_cbm.concepts.http import RetryPolicy

# sparse_cbm_app.params.ConceptsParams, not imported: the params schema imports this module for
# concepts.source's choices (SOURCES), so an import back would close a circle
ConceptsParams = Any

log = logging.getLogger(__name__)
TRACKED_FILES = Path("data/concept_files")
# concepts.source -> the function that makes its rows
SOURCES: Registry[Callable[["ConceptsParams", DatasetSplits, Path], List[Dict]]] = Registry(
    "concepts.source", ConceptSourceError)


def _policy(c: "ConceptsParams") -> "RetryPolicy":
    from sparse_cbm.concepts.http import RetryPolicy

    return RetryPolicy(total_seconds=c.http.retry_seconds, timeout=c.http.timeout)


@SOURCES.register("conceptnet")
def from_conceptnet(c: "ConceptsParams", dataset: DatasetSplits, cache: Path) -> List[Dict]:
    from sparse_cbm.concepts.conceptnet import conceptnet_api_concepts, conceptnet_dump_concepts

    if c.conceptnet.dump:
        return conceptnet_dump_concepts(dataset.classes, dump=c.conceptnet.dump, relations=c.conceptnet.relations,
                                        cache_dir=cache / "conceptnet_dump", policy=_policy(c))
    return conceptnet_api_concepts(dataset.classes, url=c.conceptnet.url, relations=c.conceptnet.relations,
                                   limit=c.conceptnet.limit, cache_dir=cache / "conceptnet_api", policy=_policy(c))


@SOURCES.register("llm")
def from_llm(c: "ConceptsParams", dataset: DatasetSplits, cache: Path) -> List[Dict]:
    from sparse_cbm.concepts.llm import ChatClient, llm_concepts

    client = ChatClient(c.llm.base_url, c.llm.model, c.llm.temperature, c.llm.api_key_env, cache / "llm",
                        _policy(c), max_tokens=c.llm.max_tokens)
    return llm_concepts(dataset.classes, client, c.llm.prompts)


@SOURCES.register("file")
def from_file(c: "ConceptsParams", dataset: DatasetSplits, cache: Path) -> List[Dict]:
    from sparse_cbm.concepts.files import read_concept_file

    if not c.file:
        raise ConceptSourceError("concepts.source is 'file' but concepts.file is null: give the path of "
                                 "your concept file (for example data/concept_files/concepts.csv).")
    if TRACKED_FILES.resolve() not in Path(c.file).resolve().parents:
        log.warning("concepts.file %s is outside %s/: DVC does not see changes to it, so after editing it "
                    "run `dvc repro -f concepts`", c.file, TRACKED_FILES)
    return read_concept_file(c.file, dataset.classes)


@SOURCES.register("attributes")
def from_attributes(c: "ConceptsParams", dataset: DatasetSplits, cache: Path) -> List[Dict]:
    from sparse_cbm.concepts.attributes import attribute_concept_rows

    return attribute_concept_rows(dataset, c.attributes.class_share)




def concept_rows(c: "ConceptsParams", dataset: DatasetSplits, cache: Path) -> List[Dict]:
    """The rows of source ``c.source``."""
    return SOURCES.get(c.source)(c, dataset, Path(cache))
