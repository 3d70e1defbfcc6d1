"""Stage compare: the bottleneck under every objective, final layer and form of ``compare.*``, each
beside its random-concept control, with NEC, ANEC-5 and the concept metrics where the dataset
annotates attributes.

Reads the caches, ``data/filtered/concepts.txt`` and params ``seed``, ``train.*`` (all but
``final_layer`` and ``form``, which the grid sweeps), ``evaluate.batch_size``,
``evaluate.concept_quality`` and ``compare.*``; writes ``metrics/compare.json`` (``dvc metrics``):
one record per configuration.
"""

from __future__ import annotations

import logging
from pathlib import Path

from sparse_cbm.bottleneck.config import TrainParams
from sparse_cbm.evaluation.compare import compare_bottlenecks
from sparse_cbm.runtime.atomic import atomic_write_json
from sparse_cbm.runtime.device import resolve_device
from sparse_cbm.runtime.runner import run_stage
from sparse_cbm.storage.image_cache import read_image_split
from sparse_cbm.storage.text_cache import concept_list_sha256, read_text_cache
from stages.common import stage_params

IMAGES, TEXT, CONCEPTS, METRICS = "data/image_cache", "data/text_cache", Path("data/filtered/concepts.txt"), \
    Path("metrics/compare.json")
SWEPT = ("final_layer", "form")  # train params the grid sets itself: not dependencies of this stage
log = logging.getLogger("stages.compare")


def base_train_params(params) -> TrainParams:
    """The run's train params without the swept keys, read key by key (so each read is declared)."""
    t = params.train
    values = {}
    for name in TrainParams.model_fields:
        if name in SWEPT:
            continue
        value = getattr(t, name)
        values[name] = value.model_dump() if hasattr(value, "model_dump") else value
    return TrainParams.model_validate(values)


def main() -> None:
    params = stage_params()
    e, c = params.evaluate, params.compare
    splits = {s: read_image_split(IMAGES, s) for s in ("train", "val", "test")}
    backbone = splits["train"].manifest["backbone"]
    concepts = CONCEPTS.read_text(encoding="utf-8").splitlines()
    text = read_text_cache(TEXT, expect_backbone=backbone, expect_concepts_sha256=concept_list_sha256(concepts))
    pairs = {s: (split.rows(), split.labels) for s, split in splits.items()}
    q = e.concept_quality
    train_params = base_train_params(params)
    records = compare_bottlenecks(
        text.concept_embeddings, concepts, len(text.manifest["classes"]), splits["train"].manifest["logit_scale"],
        pairs["train"], pairs["val"], pairs["test"], losses=c.losses, final_layers=c.final_layers, forms=c.forms,
        params=train_params, seed=params.seed, device=str(resolve_device(train_params.device)),
        random_control=c.random_control, annotations=splits["test"].annotations(),
        attributes=splits["test"].attributes, batch_size=e.batch_size,
        quality={"k": q.k, "max_k": q.intervention_max_k, "deletion_steps": q.deletion_steps})
    atomic_write_json(METRICS, {"dataset": splits["test"].manifest["dataset"]["name"], "configs": records})
    for r in records:
        log.info("%s, %s, %s: test top-1 %.4f, NEC %s, ANEC-5 %s, AUROC %s, random concepts %s", r["objective"],
                 r["form"], r["final_layer"], r["top1"], r["nec"], r["anec5"], r.get("auroc"),
                 r.get("random_concepts_top1"))


if __name__ == "__main__":
    run_stage("compare", main)
