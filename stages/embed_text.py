"""Stage embed_text: CLIP text embeddings of the kept concepts, the class prompts and the
class descriptions ("{class}, which has {concept}").

Reads ``data/filtered/`` and params ``backbone.*`` and ``embed_text.*``; writes
``data/text_cache/`` (see ``sparse_cbm/text_cache.py``). Its manifest records the sha256
of the concept list, and readers refuse a cache of another list.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence

from sparse_cbm.concepts.table import read_concept_table
from sparse_cbm.runtime.runner import run_stage, stage_paths
from sparse_cbm.storage.inputs import read_classes, read_concept_list
from sparse_cbm.storage.text_cache import write_text_cache
from stages.common import backbone_from, stage_params

log = logging.getLogger("stages.embed_text")


def main(argv: Optional[Sequence[str]] = None) -> None:
    paths = stage_paths("embed_text", argv, "filtered", "out")
    IN, OUT = Path(paths.filtered), paths.out
    params = stage_params()
    e = params.embed_text
    classes = read_classes(IN / "classes.json")
    concepts = read_concept_list(IN / "concepts.txt")
    pairs = read_concept_table(IN / "concepts.parquet")
    backbone = backbone_from(params)
    manifest = write_text_cache(OUT, backbone, classes, concepts, pairs, e.templates, e.description_template,
                                batch_size=e.batch_size, extra_manifest={"seed": params.seed})
    counts = manifest["counts"]
    log.info("wrote %s: %d concepts, %d class prompts, %d descriptions, dim %d", OUT, counts["concepts"],
             counts["class_prompts"], counts["descriptions"], manifest["dim"])


if __name__ == "__main__":
    run_stage("embed_text", main)
