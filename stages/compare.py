"""Stage compare: the bottleneck under every objective, final layer and form of ``compare.*``, each
beside its random-concept control, with NEC, ANEC-5 and the concept metrics where the dataset
annotates attributes.

Reads the caches, ``data/filtered/concepts.txt`` and params ``seed``, ``train.*`` (all but
``final_layer`` and ``form``, which the grid sweeps), ``evaluate.batch_size``,
``evaluate.concept_quality`` and ``compare.*``; writes ``metrics/compare.json`` (``dvc metrics``):
one record per configuration, keyed by its name (``l1-faithful-sparse``), with its top-1 and intervention
curves on the corrupted test split (``test_corrupted``) where the image cache has one.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence

from sparse_cbm.bottleneck.config import TrainParams
from sparse_cbm.datasets.corruptions import CORRUPTED_TEST
from sparse_cbm.evaluation.compare import CompareData, CompareSettings, compare_bottlenecks, keyed_records
from sparse_cbm.runtime.atomic import atomic_write_json
from sparse_cbm.runtime.runner import run_stage, stage_paths
from sparse_cbm.storage.inputs import read_cached_inputs
from stages.common import stage_device, stage_params

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


def main(argv: Optional[Sequence[str]] = None) -> None:
    paths = stage_paths("compare", argv, "images", "text", "concepts", "metrics")
    METRICS = Path(paths.metrics)
    params = stage_params()
    e, c = params.evaluate, params.compare
    inputs = read_cached_inputs(paths.images, ("train", "val", "test"), concepts=paths.concepts, text=paths.text,
                                optional=(CORRUPTED_TEST,))
    splits = inputs.splits
    corrupted = splits.get(CORRUPTED_TEST)
    q = e.concept_quality
    train_params = base_train_params(params)
    data = CompareData(inputs.text.concept_embeddings, inputs.concepts, len(inputs.text.manifest["classes"]),
                       inputs.logit_scale, inputs.pair("train"), inputs.pair("val"), inputs.pair("test"),
                       annotations=splits["test"].annotations(), attributes=splits["test"].attributes,
                       corrupted=None if corrupted is None else (*inputs.pair(CORRUPTED_TEST), corrupted.annotations()))
    device = stage_device(train_params.device, "the compare grid's training")
    settings = CompareSettings(losses=c.losses, final_layers=c.final_layers, forms=c.forms, params=train_params,
                               seed=params.seed, device=device,
                               random_control=c.random_control, batch_size=e.batch_size,
                               quality={"k": q.k, "max_k": q.intervention_max_k, "deletion_steps": q.deletion_steps,
                                        "policies": q.intervention_policies})
    records = compare_bottlenecks(data, settings)
    atomic_write_json(METRICS, {"dataset": splits["test"].manifest["dataset"]["name"], **keyed_records(records)})
    for r in records:
        log.info("%s, %s, %s: test top-1 %.4f, NEC %s, ANEC-5 %s, AUROC %s, random concepts %s", r["objective"],
                 r["form"], r["final_layer"], r["top1"], r["nec"], r["anec5"], r.get("auroc"),
                 r.get("random_concepts_top1"))


if __name__ == "__main__":
    run_stage("compare", main)
