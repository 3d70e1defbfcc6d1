"""Stage train: the concept bottleneck (CBL + FC) on the cached embeddings.

Reads ``data/image_cache/{train,val}``, ``data/text_cache``, ``data/filtered/concepts.txt``
and params ``seed``, ``loss`` and ``train.*``; writes ``data/model/`` (``weights.safetensors``
and ``config.json``, the resolved configuration), ``plots/train/steps.csv``,
``plots/train/epochs.csv`` and ``plots/train/sparse_path.csv`` (the sparse final layer's
regularisation path; only its header with a dense layer) (DVC plots) and
``metrics/train.json`` (DVC metrics).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence

import pandas as pd

from sparse_cbm.bottleneck.checkpoint import save_bottleneck
from sparse_cbm.bottleneck.config import objective_label, resolve_ce_to_cbl
from sparse_cbm.bottleneck.final_layer import nec
from sparse_cbm.bottleneck.train import evaluate_split, train_bottleneck
from sparse_cbm.runtime.atomic import atomic_directory, atomic_write_json, atomic_write_text
from sparse_cbm.runtime.runner import run_stage, stage_paths
from sparse_cbm.storage.inputs import read_cached_inputs
from sparse_cbm.storage.text_cache import concept_list_sha256
from stages.common import stage_device, stage_params

log = logging.getLogger("stages.train")


def rounded(record: dict, digits: int = 6) -> dict:
    return {k: round(v, digits) if isinstance(v, float) else v for k, v in record.items()}


def main(argv: Optional[Sequence[str]] = None) -> None:
    paths = stage_paths("train", argv, "images", "text", "concepts", "model", "plots", "metrics")
    MODEL, PLOTS, METRICS = paths.model, Path(paths.plots), Path(paths.metrics)
    params = stage_params()
    t = params.train
    inputs = read_cached_inputs(paths.images, ("train", "val"), concepts=paths.concepts, text=paths.text)
    train, val = inputs.splits["train"], inputs.splits["val"]
    concepts, text, classes = inputs.concepts, inputs.text, inputs.classes
    label, ce_to_cbl = objective_label(params.loss, t), resolve_ce_to_cbl(params.loss, t.ce_to_cbl)
    device = stage_device(t.device, "training")
    log.info("training %s on %d images, %d concepts, %d classes (CE reaches the CBL: %s)", label,
             train.manifest["count"], len(concepts), len(classes), ce_to_cbl)
    result = train_bottleneck(text.concept_embeddings, len(classes), train.manifest["logit_scale"],
                              (train.rows(), train.labels), (val.rows(), val.labels), loss=params.loss, params=t,
                              seed=params.seed, device=device)
    final = {split: evaluate_split(result.model, s.rows(), s.labels, device=device)
             for split, s in (("train", train), ("val", val))}
    dropped = [concepts[j] for j in result.dropped_units]
    config = {"loss": params.loss, "objective": label, "ce_to_cbl": ce_to_cbl, "seed": params.seed,
              "train": t.model_dump(mode="json"), "classes": classes, "concepts": len(concepts),
              "concept_list_sha256": concept_list_sha256(concepts), "backbone": train.manifest["backbone"],
              "logit_scale": train.manifest["logit_scale"], "kept_epoch": result.kept_epoch,
              "dropped_concepts": dropped}
    with atomic_directory(MODEL) as tmp:
        save_bottleneck(tmp, result.model, config)
    PLOTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(PLOTS / "steps.csv", pd.DataFrame(result.steps).to_csv(index=False, float_format="%.6g"))
    atomic_write_text(PLOTS / "epochs.csv", pd.DataFrame(result.epochs).to_csv(index=False, float_format="%.6g"))
    path = pd.DataFrame(result.sparse_path or [], columns=["lambda", "nec", "train_top1", "val_top1"])
    atomic_write_text(PLOTS / "sparse_path.csv", path.to_csv(index=False, float_format="%.6g"))
    metrics = {"loss": params.loss, "objective": label, "form": t.form, "final_layer": t.final_layer,
               "ce_to_cbl": ce_to_cbl, "kept_epoch": result.kept_epoch, "epochs_run": len(result.epochs),
               "units": len(result.model.units), "dropped_concepts": dropped,
               "nec": round(nec(result.model.fc.weight), 2),
               **{f"{split}_{k}": v for split, m in final.items() for k, v in m.items()}}
    atomic_write_json(METRICS, rounded(metrics, 4))
    log.info("kept epoch %d: val top-1 %.4f, top-5 %.4f; %.1f s", result.kept_epoch, final["val"]["top1"],
             final["val"]["top5"], result.seconds)


if __name__ == "__main__":
    run_stage("train", main)
