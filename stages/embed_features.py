"""Stage embed_features: the unpooled feature maps that SALF-CBM's concept maps are made from.

The backbone is ``spatial.features.backbone`` (``clip``: the pipeline's CLIP image tower, at
stage ``spatial.features.layer``; or a torchvision model). Reads params ``seed``,
``dataset.*``, ``backbone.*`` and ``spatial.features``, ``spatial.batch_size``; writes
``data/spatial/features/{train,val,test}``. A rerun resumes unfinished work.
"""

from __future__ import annotations

import logging
from typing import Optional, Sequence

from sparse_cbm.runtime.runner import run_stage, stage_paths
from sparse_cbm.spatial.caches import write_feature_cache
from sparse_cbm.spatial.features import feature_backbone
from stages.common import backbone_from, dataset_from, embedding_workers, stage_params

log = logging.getLogger("stages.embed_features")


def main(argv: Optional[Sequence[str]] = None) -> None:
    paths = stage_paths("embed_features", argv, "out", "scratch")
    params = stage_params()
    workers = embedding_workers("embed_features", argv, params)
    if workers is None:  # this process launched the workers (`processes` > 1); they published the cache
        return
    f = params.spatial.features
    features = feature_backbone(f.backbone, f.weights, f.layer, backbone_from(params, workers), f.dense,
                                params.spatial.grid)
    manifests = write_feature_cache(dataset_from(params), features, paths.out, paths.scratch,
                                    batch_size=params.spatial.batch_size, workers=workers)
    for split, m in manifests.items():
        log.info("wrote %s/%s: %d images x %s", paths.out, split, m["images"], " x ".join(map(str, m["shape"])))


if __name__ == "__main__":
    run_stage("embed_features", main)
