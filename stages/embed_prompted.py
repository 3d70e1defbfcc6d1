"""Stage embed_prompted: CLIP embeddings of ringed copies of images (SALF-CBM's visual prompts).

For a seeded sample of ``spatial.train_images`` train, ``spatial.val_images`` val (when not 0) and
``spatial.test_images`` test images,
each image's ``spatial.grid``^2 copies with a ring (``spatial.radius``, ``spatial.line_width``,
``spatial.colour``) around one grid location, embedded by the prompting CLIP
(``spatial.prompts``; null: the pipeline's backbone). Reads params ``seed``, ``dataset.*``,
``backbone.*`` and those of ``spatial``; writes ``data/spatial/prompted/{train,val,test}``.
Unfinished work waits in ``data/.scratch/embed_prompted/`` and a rerun resumes it.
"""

from __future__ import annotations

import logging
from typing import Optional, Sequence

from sparse_cbm.runtime.runner import run_stage, stage_paths
from sparse_cbm.spatial.caches import write_prompted_cache
from sparse_cbm.spatial.prompts import PromptedCopies
from stages.common import dataset_from, embedding_workers, prompting_backbone, stage_params

log = logging.getLogger("stages.embed_prompted")


def main(argv: Optional[Sequence[str]] = None) -> None:
    paths = stage_paths("embed_prompted", argv, "out", "scratch")
    params = stage_params()
    workers = embedding_workers("embed_prompted", argv, params)
    if workers is None:  # this process launched the workers (`processes` > 1); they published the cache
        return
    s = params.spatial
    backbone = prompting_backbone(params, workers)
    dataset = dataset_from(params)
    prompts = PromptedCopies(backbone, s.grid, s.radius, s.line_width, s.colour)
    describe = {"radius": s.radius, "line_width": s.line_width, "colour": list(s.colour)}
    log.info("%d ringed copies per image (grid %d x %d, radius %g px, line %g px)", prompts.per_image, s.grid, s.grid,
             s.radius, s.line_width)
    counts = {"train": s.train_images, **({"val": s.val_images} if s.val_images else {}), "test": s.test_images}
    manifests = write_prompted_cache(dataset, prompts, counts, paths.out,
                                     paths.scratch, seed=params.seed, batch_size=s.batch_size, describe=describe,
                                     workers=workers)
    for split, m in manifests.items():
        log.info("wrote %s/%s: %d images x %d copies x %d (%.1f MB per 1,000 images)", paths.out, split,
                 m["images"], m["per_image"], m["dim"], m["per_image"] * m["dim"] * 2 / 1e3)


if __name__ == "__main__":
    run_stage("embed_prompted", main)
