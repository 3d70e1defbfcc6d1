"""Stage embed_prompt_text: the concepts embedded by SALF-CBM's prompting CLIP (P's other factor).

Kept apart from ``embed_prompted`` so that a change of concepts never re-encodes the ringed
copies. Reads ``data/filtered/concepts.txt``, ``data/filtered/classes.json`` and params ``backbone.*``
(device, precision), ``spatial.prompts`` and ``spatial.class_concepts``; writes
``data/spatial/prompt_concepts`` (``embeddings.npy``, ``class_prompts.npy`` with class concepts,
``manifest.json``).
"""

from __future__ import annotations

import logging
from typing import Optional, Sequence

from sparse_cbm.runtime.runner import run_stage, stage_paths
from sparse_cbm.spatial.caches import class_prompts, write_prompt_concepts
from sparse_cbm.storage.inputs import read_classes, read_concept_list
from sparse_cbm.storage.text_cache import concept_list_sha256
from stages.common import prompting_backbone, stage_params

log = logging.getLogger("stages.embed_prompt_text")


def main(argv: Optional[Sequence[str]] = None) -> None:
    paths = stage_paths("embed_prompt_text", argv, "concepts", "classes", "out")
    params = stage_params()
    concepts = read_concept_list(paths.concepts)
    manifest = write_prompt_concepts(paths.out, prompting_backbone(params), concepts, concept_list_sha256(concepts),
                                     class_prompts(params.spatial.class_concepts, read_classes(paths.classes)))
    log.info("wrote %s: %d concepts and %d class prompts x %d", paths.out, manifest["count"],
             len(manifest["class_prompts"]), manifest["dim"])


if __name__ == "__main__":
    run_stage("embed_prompt_text", main)
