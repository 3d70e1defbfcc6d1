"""Stage embed_images: CLIP image embeddings of every split, cached as float16 .npy.

Reads params ``seed``, ``dataset.*`` and ``backbone.*``; writes ``data/image_cache/``.
Unfinished work waits in ``data/.scratch/embed_images/`` and a rerun resumes it.
"""

from __future__ import annotations

import logging
from typing import Optional, Sequence

from sparse_cbm.storage.image_cache import write_image_cache
from sparse_cbm.runtime.runner import run_stage, stage_paths
from stages.common import backbone_from, dataset_from, embedding_workers, stage_params

log = logging.getLogger("stages.embed_images")


def main(argv: Optional[Sequence[str]] = None) -> None:
    paths = stage_paths("embed_images", argv, "out", "scratch")
    params = stage_params()
    workers = embedding_workers("embed_images", argv, params)
    if workers is None:  # this process launched the workers (`processes` > 1); they published the cache
        return
    backbone = backbone_from(params, workers)
    dataset = dataset_from(params)
    log.info("dataset %s: %d classes", dataset.name, len(dataset.classes))
    manifests = write_image_cache(dataset, backbone, paths.out, paths.scratch, batch_size=params.backbone.batch_size,
                                  num_workers=params.backbone.num_workers, skip_corrupt=params.dataset.skip_corrupt,
                                  extra_manifest={"seed": params.seed, "val_fraction": params.dataset.val_fraction},
                                  workers=workers)
    for split, m in manifests.items():
        log.info("wrote %s/%s: %d x %d", paths.out, split, m["count"], m["dim"])


if __name__ == "__main__":
    run_stage("embed_images", main)
