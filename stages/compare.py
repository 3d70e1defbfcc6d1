"""Stage compare: the bottleneck under every objective of ``compare.losses``, each beside its
random-concept control, with the concept metrics where the dataset annotates attributes.

Reads the caches, ``data/filtered/concepts.txt`` and params ``seed``, ``train.*``,
``evaluate.batch_size``, ``evaluate.concept_quality`` and ``compare.*``; writes
``metrics/compare.json`` (``dvc metrics``): one record per loss.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from sparse_cbm.evaluation.compare import compare_objectives
from sparse_cbm.params import load_params
from sparse_cbm.runtime.atomic import atomic_write_json
from sparse_cbm.runtime.device import resolve_device
from sparse_cbm.runtime.runner import run_stage
from sparse_cbm.storage.image_cache import read_image_split
from sparse_cbm.storage.text_cache import concept_list_sha256, read_text_cache

IMAGES, TEXT, CONCEPTS, METRICS = "data/image_cache", "data/text_cache", Path("data/filtered/concepts.txt"), \
    Path("metrics/compare.json")
log = logging.getLogger("stages.compare")


def main() -> None:
    params = load_params()
    e, c = params.evaluate, params.compare
    splits = {s: read_image_split(IMAGES, s) for s in ("train", "val", "test")}
    backbone = splits["train"].manifest["backbone"]
    concepts = CONCEPTS.read_text(encoding="utf-8").splitlines()
    text = read_text_cache(TEXT, expect_backbone=backbone, expect_concepts_sha256=concept_list_sha256(concepts))
    pairs = {s: (split.rows(), split.labels) for s, split in splits.items()}
    q = e.concept_quality
    records = compare_objectives(
        text.concept_embeddings, concepts, len(text.manifest["classes"]), splits["train"].manifest["logit_scale"],
        pairs["train"], pairs["val"], pairs["test"], losses=c.losses, params=params.train, seed=params.seed,
        device=str(resolve_device(params.train.device)), random_control=c.random_control,
        annotations=splits["test"].annotations(), attributes=splits["test"].attributes, batch_size=e.batch_size,
        quality={"k": q.k, "max_k": q.intervention_max_k, "deletion_steps": q.deletion_steps})
    atomic_write_json(METRICS, {"dataset": splits["test"].manifest["dataset"]["name"], "configs": records})
    for r in records:
        log.info("%s: test top-1 %.4f, concept AUROC %s, random-concept control %s", r["objective"], r["top1"],
                 r.get("auroc"), r.get("random_concepts_top1"))


if __name__ == "__main__":
    torch.set_grad_enabled(True)
    run_stage("compare", main)
