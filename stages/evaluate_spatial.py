"""Stage evaluate_spatial: SALF-CBM's accuracy, how true its whole-image explanations are, its heatmaps
against true masks, the grid pointing game, Explain Anything's region concepts and local edits.

Reads the trained SALF-CBM (``data/spatial/model``), the feature-map and prompted-copy caches of
test, the image cache (the black-box linear probe whose Grad-CAM is compared), the prompting
CLIP's concept embeddings (``data/spatial/prompt_concepts``), the dataset (images and object masks), the backbone and params ``seed``,
``dataset.*``, ``backbone.*``, ``spatial.features``, ``spatial.evaluate`` and
``evaluate.linear_probe``; writes ``metrics/spatial.json`` and ``data/spatial/evaluation/``
(``panels.npz``: heatmap panels for the report; ``predictions.parquet``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd
import torch

from sparse_cbm.bottleneck.final_layer import nec
from sparse_cbm.classifiers.linear_probe import fit_linear_probe, unit_matrix
from sparse_cbm.errors import CacheMismatchError
from sparse_cbm.evaluation.concept_quality import match_annotations
from sparse_cbm.runtime.atomic import atomic_directory, atomic_write_json
from sparse_cbm.runtime.runner import run_stage, stage_paths
from sparse_cbm.spatial import evaluate as sev
from sparse_cbm.spatial.caches import read_features, read_prompt_concepts, read_prompted
from sparse_cbm.spatial.checkpoint import CLASS_MODEL, load_spatial
from sparse_cbm.spatial.features import feature_backbone
from sparse_cbm.spatial.heatmaps import GradCamHeatmaps
from sparse_cbm.spatial.model import EmbeddingHead, SpatialClassifier
from sparse_cbm.storage.inputs import read_cached_inputs, read_concept_list
from sparse_cbm.storage.text_cache import concept_list_sha256
from stages.common import backbone_from, dataset_from, stage_params

log = logging.getLogger("stages.evaluate_spatial")


def black_box(params, backbone, images: str) -> EmbeddingHead:
    """A linear probe on the backbone's embeddings (fitted as the evaluate stage fits it), as a model of images."""
    train, val = read_cached_inputs(images, ("train", "val")).splits.values()
    lp = params.evaluate.linear_probe
    probe = fit_linear_probe((unit_matrix(train.rows()), train.labels), (unit_matrix(val.rows()), val.labels),
                             cs=lp.cs, max_iter=lp.max_iter, seed=params.seed)
    coef = torch.zeros(len(train.manifest["dataset"]["classes"]), probe.model.coef_.shape[1])
    coef[probe.model.classes_] = torch.as_tensor(probe.model.coef_, dtype=torch.float32)
    bias = torch.full((len(coef),), -1e4)
    bias[probe.model.classes_] = torch.as_tensor(probe.model.intercept_, dtype=torch.float32)
    return EmbeddingHead(backbone.model.encode_image, coef, bias, backbone.model).eval()


def build(params, prompted, paths):
    concepts = read_concept_list(paths.concepts)
    model, config = load_spatial(paths.model, expect_concepts_sha256=concept_list_sha256(concepts))
    embeddings = read_prompt_concepts(paths.prompt_concepts, concept_list_sha256(concepts),
                                      prompted.manifest["backbone"])
    if "kept" in config:  # Label-free CBM's cutoff dropped some concepts (spatial.cutoff)
        concepts, embeddings = list(config["concepts"]), np.asarray(embeddings)[config["kept"]]
    backbone = backbone_from(params)
    f = params.spatial.features
    features = feature_backbone(f.backbone, f.weights, f.layer, backbone, f.dense, params.spatial.grid)
    dataset = dataset_from(params)
    hook = (features.target_layer, features.reshape_transform)
    cams = {"gradcam_salf_cbm": GradCamHeatmaps(SpatialClassifier(features, model).eval(), *hook)}
    if f.backbone == "clip":  # the black box runs the CLIP as it is: its stage at its own grid
        probe = black_box(params, backbone, paths.images)
        for name, method in (("gradcam_probe", "gradcam"), ("gradcampp_probe", "gradcam++"),
                             ("layercam_probe", "layercam")):
            cams[name] = GradCamHeatmaps(probe, features.network_layer, features.reshape_transform, method=method)
    matched = match_annotations(concepts, dataset.attributes)
    ev = sev.SpatialEvaluation(
        model=model, feature_shape=tuple(config["feature_shape"]), grid=config["grid"],
        p_mean=torch.tensor(config["p_mean"]), p_std=torch.tensor(config["p_std"]),
        concept_embeddings=torch.from_numpy(np.asarray(embeddings, dtype=np.float32)),
        attribute_of=dict(zip(matched.concept_index.tolist(), matched.attribute_index.tolist())),
        source=dataset.splits["test"], preprocess=features.preprocess, features=features.encode, gradcam=cams,
        class_model=class_model(paths.model, config))
    return ev, config


def class_model(folder, config):
    """The class-concept SALF-CBM that train_spatial trained beside the main one (``spatial.class_concepts``),
    or None."""
    if not (Path(folder) / CLASS_MODEL).is_dir():
        return None
    model, class_config = load_spatial(Path(folder) / CLASS_MODEL)
    if (class_config["classes"] != config["classes"] or class_config["feature_shape"] != config["feature_shape"]
            or len(class_config["concepts"]) != len(config["classes"])):  # concept c is class c's
        raise CacheMismatchError(f"{folder}/{CLASS_MODEL} was trained on other classes or feature maps than the "
                                 f"SALF-CBM beside it, or lacks a class's concept: run `dvc repro train_spatial`.")
    return model


def main(argv: Optional[Sequence[str]] = None) -> None:
    paths = stage_paths("evaluate_spatial", argv, "images", "concepts", "model", "features", "prompted",
                        "prompt_concepts", "out", "metrics")
    params = stage_params()
    e = params.spatial.evaluate
    features, prompted = read_features(paths.features, "test"), read_prompted(paths.prompted, "test")
    ev, config = build(params, prompted, paths)
    labels = np.asarray(ev.source.labels)
    models = [ev.model, *([ev.class_model] if ev.class_model is not None else [])]
    run = sev.split_pass(models, features.outputs, ev.feature_shape, ev.source.annotations(), ev.annotated, e.k)
    pred = run.predictions[0]
    metrics = {"test_top1": round(float((pred == labels).mean()), 4), "test_images": int(len(labels)),
               "nec": round(nec(ev.model.fc.weight), 2)}
    log.info("SALF-CBM test top-1 %.4f on %d images", metrics["test_top1"], len(labels))
    if run.precision is not None:
        metrics["concept_quality"] = {"precision_at_k": run.precision}
    if ev.class_model is not None:
        metrics["class_concept_model"] = {"test_top1": round(float((run.predictions[1] == labels).mean()), 4),
                                          "nec": round(nec(ev.class_model.fc.weight), 2)}
    rows = prompted.rows
    if ev.source.object_map(int(rows[0])) is None:
        log.info("the dataset has no object masks: heatmaps, pointing game and regions are not scored")
        panels = {}
    else:
        metrics["heatmaps"] = sev.score_heatmaps(ev, rows, features.outputs, prompted.outputs, e.heatmap_threshold)
        metrics["pointing_game"] = sev.pointing_game(ev, e.pointing_grids, params.seed)
        metrics["explain_anything"] = sev.explain_anything(ev, rows, features.outputs, prompted.outputs, e.regions,
                                                           e.k, params.seed)
        metrics["local_edit"] = sev.local_edits(ev, rows, features.outputs, e.edit_beta, e.edit_units,
                                                params.seed)
        panels = sev.heatmap_panels(ev, rows, features.outputs, e.panels, e.k)
    metrics["heatmap_images"] = int(len(sev.decided_by_object(ev, rows))) if panels else 0
    metrics["prompted_test_images"] = int(len(rows))
    with atomic_directory(paths.out) as tmp:
        pd.DataFrame({"label": labels, "prediction": pred}).to_parquet(tmp / "predictions.parquet", index=False)
        if panels:
            np.savez_compressed(tmp / "panels.npz", **panels, concept_names=np.array(config["concepts"]),
                                class_names=np.array(config["classes"]))
    atomic_write_json(paths.metrics, metrics)
    log.info("spatial metrics: %s", {k: v for k, v in metrics.items() if k != "heatmaps"})


if __name__ == "__main__":
    run_stage("evaluate_spatial", main)
