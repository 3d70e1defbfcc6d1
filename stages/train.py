"""Stage train: the concept bottleneck (CBL + FC) on the cached embeddings.

Reads ``data/image_cache/{train,val}``, ``data/text_cache`` and params ``seed``,
``loss`` and ``train.*``; writes ``data/model/`` (``weights.safetensors`` and
``config.json``, the resolved configuration), ``plots/train/steps.csv`` and
``plots/train/epochs.csv`` (DVC plots) and ``metrics/train.json`` (DVC metrics).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pandas as pd
from safetensors.torch import save_file

from sparse_cbm.atomic import atomic_directory, atomic_write_json, atomic_write_text
from sparse_cbm.backbone import resolve_device
from sparse_cbm.image_cache import read_image_split
from sparse_cbm.params import load_params
from sparse_cbm.runner import run_stage
from sparse_cbm.text_cache import concept_list_sha256, read_text_cache
from sparse_cbm.train import OptimizerConfig, TrainConfig, evaluate_split, resolve_ce_to_cbl, train_bottleneck
from sparse_cbm.errors import CacheMismatchError

IMAGES, TEXT, FILTERED = "data/image_cache", "data/text_cache", Path("data/filtered")
MODEL, PLOTS, METRICS = "data/model", Path("plots/train"), Path("metrics/train.json")
log = logging.getLogger("stages.train")


def rounded(record: dict, digits: int = 6) -> dict:
    return {k: round(v, digits) if isinstance(v, float) else v for k, v in record.items()}


def main() -> None:
    params = load_params()
    t = params.train
    train = read_image_split(IMAGES, "train")
    val = read_image_split(IMAGES, "val", expect_backbone=train.manifest["backbone"])
    concepts = (FILTERED / "concepts.txt").read_text(encoding="utf-8").splitlines()
    text = read_text_cache(TEXT, expect_backbone=train.manifest["backbone"],
                           expect_concepts_sha256=concept_list_sha256(concepts))
    classes = train.manifest["dataset"]["classes"]
    if text.manifest["classes"] != classes:
        raise CacheMismatchError(f"{TEXT} was made for the classes {text.manifest['classes'][:5]}..., the image cache "
                                 f"holds {classes[:5]}...: rerun `dvc repro` so that both come from one dataset.")
    cfg = TrainConfig(
        loss=params.loss, epochs=t.epochs, batch_size=t.batch_size, seed=params.seed,
        ce_to_cbl=resolve_ce_to_cbl(params.loss, t.ce_to_cbl), log_alpha=t.log_alpha, l1_lambda=t.l1_lambda,
        tau_start=t.gumbel.tau_start, tau_end=t.gumbel.tau_end, tau_schedule=t.gumbel.schedule,
        gumbel_hard=t.gumbel.hard, gumbel_objective=t.gumbel.objective,
        cbl=OptimizerConfig(t.cbl.optimizer, t.cbl.lr, t.cbl.weight_decay),
        fc=OptimizerConfig(t.fc.optimizer, t.fc.lr, t.fc.weight_decay), clip_grad_norm=t.clip_grad_norm,
        lr_schedule=t.lr_schedule, early_stopping_patience=t.early_stopping.patience,
        device=str(resolve_device(t.device)))
    log.info("training %s on %d images, %d concepts, %d classes (CE reaches the CBL: %s)", cfg.loss,
             train.manifest["count"], len(concepts), len(classes), cfg.ce_to_cbl)
    result = train_bottleneck(text.concept_embeddings, len(classes), train.manifest["logit_scale"],
                              (train.rows(), train.labels), (val.rows(), val.labels), cfg)
    final = {split: evaluate_split(result.model, s.rows(), s.labels, device=cfg.device)
             for split, s in (("train", train), ("val", val))}
    config = {"train": dataclasses.asdict(cfg), "classes": classes, "concepts": len(concepts),
              "concept_list_sha256": concept_list_sha256(concepts), "backbone": train.manifest["backbone"],
              "logit_scale": train.manifest["logit_scale"], "best_epoch": result.best_epoch}
    with atomic_directory(MODEL) as tmp:
        save_file({k: v.contiguous().cpu() for k, v in result.model.state_dict().items()},
                  str(tmp / "weights.safetensors"), metadata={"loss": cfg.loss})
        atomic_write_json(tmp / "config.json", config)
    PLOTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(PLOTS / "steps.csv", pd.DataFrame(result.steps).to_csv(index=False, float_format="%.6g"))
    atomic_write_text(PLOTS / "epochs.csv", pd.DataFrame(result.epochs).to_csv(index=False, float_format="%.6g"))
    metrics = {"loss": cfg.loss, "gumbel_objective": cfg.gumbel_objective if cfg.loss == "gumbel" else None,
               "ce_to_cbl": cfg.ce_to_cbl, "best_epoch": result.best_epoch, "epochs_run": len(result.epochs),
               **{f"{split}_{k}": v for split, m in final.items() for k, v in m.items()}}
    atomic_write_json(METRICS, rounded(metrics, 4))
    log.info("best epoch %d: val top-1 %.4f, top-5 %.4f; %.1f s", result.best_epoch, final["val"]["top1"],
             final["val"]["top5"], result.seconds)


if __name__ == "__main__":
    run_stage("train", main)
