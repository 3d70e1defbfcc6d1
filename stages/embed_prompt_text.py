"""Stage embed_prompt_text: the concepts embedded by SALF-CBM's prompting CLIP (P's other factor).

Kept apart from ``embed_prompted`` so that a change of concepts never re-encodes the ringed
copies. Reads ``data/filtered/concepts.txt`` and params ``backbone.*`` (device, precision) and
``spatial.prompts``; writes ``data/spatial/prompt_concepts`` (``embeddings.npy``, ``manifest.json``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence

from sparse_cbm.runtime.runner import run_stage, stage_paths
from sparse_cbm.spatial.caches import write_prompt_concepts
from sparse_cbm.storage.text_cache import concept_list_sha256
from stages.common import prompting_backbone, stage_params

log = logging.getLogger("stages.embed_prompt_text")


def main(argv: Optional[Sequence[str]] = None) -> None:
    paths = stage_paths("embed_prompt_text", argv, "concepts", "out")
    params = stage_params()
    concepts = Path(paths.concepts).read_text(encoding="utf-8").splitlines()
    manifest = write_prompt_concepts(paths.out, prompting_backbone(params), concepts, concept_list_sha256(concepts))
    log.info("wrote %s: %d concepts x %d", paths.out, manifest["count"], manifest["dim"])


if __name__ == "__main__":
    run_stage("embed_prompt_text", main)
