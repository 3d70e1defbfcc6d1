"""Stage embed_images: CLIP image embeddings of every split, cached as float16 .npy.

Reads params ``seed``, ``dataset.*`` and ``backbone.*``; writes ``data/image_cache/``.
Unfinished work waits in ``data/.scratch/embed_images/`` and a rerun resumes it.
"""

from __future__ import annotations

import logging

import torch

from sparse_cbm.backbone import load_backbone
from sparse_cbm.datasets import load_dataset
from sparse_cbm.image_cache import write_image_cache
from sparse_cbm.params import load_params
from sparse_cbm.runner import run_stage

OUT = "data/image_cache"
SCRATCH = "data/.scratch/embed_images"
log = logging.getLogger("stages.embed_images")


def main() -> None:
    params = load_params()
    data, bb = params.dataset, params.backbone
    torch.manual_seed(params.seed)  # fixes the weights when backbone.pretrained is 'none'
    backbone = load_backbone(bb.model, bb.pretrained, device=bb.device, precision=bb.precision)
    dataset = load_dataset(
        data.name, data.root, seed=params.seed, val_fraction=data.val_fraction, download=data.download,
        class_names_file=data.class_names_file, shapes_n_train=data.shapes.n_train,
        shapes_n_test=data.shapes.n_test, shapes_image_size=data.shapes.image_size,
        shapes_class_attributes=data.shapes.class_attributes)
    log.info("dataset %s: %d classes", dataset.name, len(dataset.classes))
    manifests = write_image_cache(dataset, backbone, OUT, SCRATCH, batch_size=bb.batch_size,
                                  num_workers=bb.num_workers, skip_corrupt=data.skip_corrupt,
                                  extra_manifest={"seed": params.seed, "val_fraction": data.val_fraction})
    for split, m in manifests.items():
        log.info("wrote %s/%s: %d x %d", OUT, split, m["count"], m["dim"])


if __name__ == "__main__":
    run_stage("embed_images", main)
