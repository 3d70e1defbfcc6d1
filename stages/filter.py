"""Stage filter: the paper's step 2 (length, class names, similarity to classes and to
other concepts; optionally presence in the images), every cutoff a param.

Reads ``data/concepts/`` and params ``filter.*`` (and, for ``clip_mix`` or
``presence``, the backbone and ``data/image_cache/train``); writes ``data/filtered/``:
``concepts.parquet`` (kept rows, still linked to their classes), ``concepts.txt``
(the bottleneck's concepts, one a line), ``removed.csv`` (every removal: step, what
it was too close to, the similarity) and ``summary.json`` (counts per step).
"""

from __future__ import annotations

import logging
from typing import Optional, Sequence

import torch.nn.functional as F

from sparse_cbm.runtime.atomic import atomic_directory, atomic_write_json
from sparse_cbm.concept_filter.filter import filter_concepts
from sparse_cbm.concepts.table import read_concept_table, write_concept_table
from sparse_cbm.storage.image_cache import read_image_split
from sparse_cbm.storage.inputs import read_classes
from sparse_cbm.concept_filter.presence import presence_scores
from sparse_cbm.runtime.runner import run_stage, stage_paths
from sparse_cbm.storage.text_cache import concept_list_text
from sparse_cbm.concept_filter.text_similarity import TextEncoder
from stages.common import backbone_from, stage_device, stage_params

log = logging.getLogger("stages.filter")


def main(argv: Optional[Sequence[str]] = None) -> None:
    paths = stage_paths("filter", argv, "concepts", "images", "out")
    IN, IMAGES, OUT = paths.concepts, paths.images, paths.out
    params = stage_params()
    f = params.filter
    table = read_concept_table(f"{IN}/concepts.parquet")
    classes = read_classes(f"{IN}/classes.json")
    device = stage_device(params.backbone.device, "the concept filter's text encoder")
    st = TextEncoder(f.text_model, device=device, batch_size=f.batch_size)
    spaces = [(1.0, st.encode)]
    presence = None
    if f.clip_mix or f.presence.cutoff is not None:
        backbone = backbone_from(params)

        def clip_encode(texts):
            return F.normalize(backbone.encode_texts(texts, f.batch_size), dim=1).numpy()

        if f.clip_mix:
            spaces = [(0.25, st.encode), (0.75, clip_encode)]
        if f.presence.cutoff is not None:
            train = read_image_split(IMAGES, "train", expect_backbone=backbone.identity)

            def presence_of(texts):
                return presence_scores(train.embeddings, backbone.encode_texts(texts, f.batch_size).numpy(),
                                       top_k=f.presence.top_k)

            presence = presence_of

    result = filter_concepts(table, classes, spaces, max_length=f.max_length, class_similarity=f.class_similarity,
                             concept_similarity=f.concept_similarity, presence=presence,
                             presence_cutoff=f.presence.cutoff)
    with atomic_directory(OUT) as tmp:
        write_concept_table(result.kept, tmp / "concepts.parquet")
        (tmp / "concepts.txt").write_text(concept_list_text(result.vocabulary), encoding="utf-8")
        result.removed.to_csv(tmp / "removed.csv", index=False, float_format="%.6f")
        atomic_write_json(tmp / "classes.json", {"classes": classes})
        atomic_write_json(tmp / "summary.json", {"removed_by_step": {k: v for k, v in result.counts.items()
                                                                     if k not in ("input", "kept")},
                                                 "input": result.counts["input"], "kept": result.counts["kept"],
                                                 "kept_rows": len(result.kept), "text_model": f.text_model,
                                                 "clip_mix": f.clip_mix})
    log.info("kept %d of %d concepts (%d class-concept rows); removals in %s/removed.csv",
             result.counts["kept"], result.counts["input"], len(result.kept), OUT)


if __name__ == "__main__":
    run_stage("filter", main)
