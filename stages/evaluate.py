"""Stage evaluate: the trained CBM against the training-free CLIP classifiers, its explanations, and,
where the dataset annotates attributes, whether its concepts are true.

Reads the caches, the trained model, ``data/filtered/concepts.txt``, the dataset (for
thumbnails) and params ``seed``, ``dataset.*``, ``evaluate.*``; writes ``metrics/evaluate.json``
(``dvc metrics``; ``test_corrupted``: the same on the corrupted test split, where the cache has it),
``plots/evaluate/`` (intervention curves of both test splits and the deletion curve, ``dvc plots``) and
``data/evaluation/``: per-class results, the confusion matrix, per-concept AUROC, explanations of
sampled test images with thumbnails, each class's top-weighted concepts, a PCA map.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd
import torch

from sparse_cbm.bottleneck.checkpoint import load_bottleneck
from sparse_cbm.bottleneck.final_layer import nec
from sparse_cbm.bottleneck.sparsity import fraction_below
from sparse_cbm.bottleneck.train import evaluate_split
from sparse_cbm.classifiers import EvaluationInputs, build_classifiers
from sparse_cbm.classifiers.clip_scores import ClipConceptScores
from sparse_cbm.classifiers.zero_shot import class_text_embeddings
from sparse_cbm.datasets.corruptions import CORRUPTED_TEST
from sparse_cbm.evaluation.concept_quality import assess_scorers
from sparse_cbm.evaluation.embedding_map import embedding_map
from sparse_cbm.evaluation.explain import class_top_concepts, explain_images, sample_per_class
from sparse_cbm.evaluation.metrics import classification_report
from sparse_cbm.runtime.atomic import atomic_directory, atomic_write_json, atomic_write_text
from sparse_cbm.runtime.runner import run_stage, stage_paths
from sparse_cbm.storage.inputs import read_cached_inputs
from stages.common import dataset_from, stage_params

SUMMARY = ("top1", "top5", "macro_precision", "macro_recall", "macro_f1")
log = logging.getLogger("stages.evaluate")


def load_inputs(params, paths):
    cached = read_cached_inputs(paths.images, ("train", "val", "test"), concepts=paths.concepts, text=paths.text,
                                optional=(CORRUPTED_TEST,))
    splits, concepts, text = cached.splits, cached.concepts, cached.text
    model, config = load_bottleneck(paths.model, expect_concepts_sha256=cached.concepts_sha256,
                                    expect_backbone=cached.backbone)
    rows = {s: split.rows() for s, split in splits.items()}
    inputs = EvaluationInputs(
        concepts=concepts, classes=config["classes"], concept_embeddings=text.concept_embeddings,
        class_embeddings=class_text_embeddings(text.class_prompt_embeddings),
        description_embeddings=text.description_embeddings,
        description_class=text.descriptions["class_index"].to_numpy(np.int64),
        train=(rows["train"], splits["train"].labels), val=(rows["val"], splits["val"].labels),
        bottlenecks={"cbm": (model, f"CBM ({config['objective']})")},
        options={"linear_probe": params.evaluate.linear_probe.model_dump()}, seed=params.seed)
    return splits, rows, text, model, config, inputs


def assess_split(split, rows, classifiers, scorers, train_rows, params, num_classes, tested=True):
    """Every classifier's report on one split and, on a test split that is annotated, its concepts' quality."""
    e = params.evaluate
    q = e.concept_quality
    reports = {name: classification_report(split.labels, *clf.predict(rows, e.batch_size),
                                           num_classes=num_classes, with_confusion=tested)
               for name, clf in classifiers.items()}
    annotations = split.annotations() if tested else None
    quality = None if annotations is None else assess_scorers(
        scorers, rows, split.labels, annotations, split.attributes, train_embeddings=train_rows,
        batch_size=e.batch_size, seed=params.seed, k=q.k, max_k=q.intervention_max_k,
        deletion_steps=q.deletion_steps, policies=q.intervention_policies)
    return {name: {k: r[k] for k in SUMMARY} for name, r in reports.items()}, reports, quality


def headline(metrics: dict, model) -> dict:
    """The three numbers a run is judged by first, under short names so that ``dvc exp show`` fits them in
    120 columns (docs/usage.md): the CBM's test top-1, the precision@k of its explanations (null without
    annotated attributes) and its NEC."""
    precision = ((metrics.get("concept_quality") or {}).get("cbm") or {}).get("precision_at_k") or {}
    return {"top1": metrics["test"]["cbm"]["top1"], "precision_at_k": precision.get("by_contribution"),
            "nec": round(nec(model.fc.weight), 2)}


def main(argv: Optional[Sequence[str]] = None) -> None:
    paths = stage_paths("evaluate", argv, "images", "text", "concepts", "model", "out", "plots", "metrics")
    params = stage_params()
    splits, rows, text, model, config, inputs = load_inputs(params, paths)
    classes = inputs.classes
    classifiers = build_classifiers(inputs)
    scorers = {"clip_scores": ClipConceptScores(text.concept_embeddings, inputs.concepts,
                                                splits["train"].manifest["logit_scale"]),
               "cbm": classifiers["cbm"]}
    results, reports, quality = {}, {}, {}
    for s in [s for s in splits if s != "train"]:
        results[s], reports[s], quality[s] = assess_split(splits[s], rows[s], classifiers, scorers, rows["train"],
                                                          params, len(classes), tested=(s != "val"))
    results["test"]["linear_probe"]["C"] = classifiers["linear_probe"].C
    missing = [name for name, r in zip(classes, reports["test"]["cbm"]["per_class"]) if not r["support"]]
    if missing:
        log.warning("classes with no test images (reported, not scored): %s", ", ".join(missing))
    cbm_test = evaluate_split(model, rows["test"], splits["test"].labels, device="cpu")
    metrics = {"dataset": splits["test"].manifest["dataset"]["name"], "loss": config["loss"],
               "objective": config["objective"], "methods": {name: clf.label for name, clf in classifiers.items()},
               "num_classes": len(classes), "concepts": len(inputs.concepts),
               "test_images": int(len(splits["test"].labels)),
               "random_weights": bool(splits["train"].manifest["backbone"].get("random_weights")),
               "classes_without_test_images": missing, "val": results["val"], "test": results["test"],
               "sparsity": {"cbl_concepts_for_90pct_mass": round(cbm_test["concepts_for_90pct_mass"], 4),
                            "cbl_fraction_below_1pct": round(cbm_test["fraction_below_1pct"], 4),
                            "fc_fraction_below_1pct": round(fraction_below(model.fc.weight.detach()), 4)}}
    models = {n: s.label for n, s in scorers.items()}
    if quality["test"] is not None:
        metrics["concept_quality"] = {"models": models, **quality["test"]["summary"]}
    if CORRUPTED_TEST in splits:
        metrics[CORRUPTED_TEST] = {"corruptions": splits[CORRUPTED_TEST].manifest.get("source", {}).get("corruptions"),
                                   "test": results[CORRUPTED_TEST], **({} if quality[CORRUPTED_TEST] is None else {
                                       "concept_quality": {"models": models, **quality[CORRUPTED_TEST]["summary"]}})}
    metrics["headline"] = headline(metrics, model)
    write_plots(Path(paths.plots), quality)
    write_outputs(paths.out, params, scorers, splits["test"], rows["test"], inputs, reports["test"], quality["test"])
    atomic_write_json(Path(paths.metrics), metrics)
    log.info("test top-1: %s", ", ".join(f"{m} {r['top1']:.4f}" for m, r in results["test"].items()))


def write_plots(plots: Path, quality) -> None:
    """The intervention curves of test and test_corrupted, and the deletion curve (DVC plots); only
    their x column without annotations."""
    plots.mkdir(parents=True, exist_ok=True)
    files = (("intervention", "test", "intervention", "k"), ("intervention_corrupted", CORRUPTED_TEST, "intervention", "k"),
             ("deletion", "test", "deletion", "step"))
    for name, split, curve, x in files:
        frame = None if quality.get(split) is None else quality[split][curve]
        frame = pd.DataFrame({x: []}) if frame is None else frame
        atomic_write_text(plots / f"{name}.csv", frame.to_csv(index=False, float_format="%.6g"))


def write_outputs(out, params, scorers, test_split, test_rows, inputs, test_reports, quality) -> None:
    """data/evaluation/: per-class table, confusion, AUROC per concept, explanations with thumbnails,
    class concepts, PCA map."""
    e, classes, cbm = params.evaluate, inputs.classes, scorers["cbm"]
    index = test_split.index()
    sample = sample_per_class(test_split.labels, e.explain.per_class, e.explain.max_images, params.seed)
    annotations = test_split.annotations()
    truth = None if annotations is None else \
        [[a.concept for a, on in zip(test_split.attributes, annotations[r]) if on] for r in sample]
    explanations = explain_images(cbm, test_rows[sample], classes, top=e.explain.top,
                                  clip_scores=scorers["clip_scores"], true_concepts=truth)
    source = dataset_from(params).splits["test"]
    position = {image_id: k for k, image_id in enumerate(source.ids)}
    table = pd.DataFrame({"class": classes, "test_images": [r["support"] for r in test_reports["cbm"]["per_class"]],
                          **{m: [r["accuracy"] for r in rep["per_class"]] for m, rep in test_reports.items()}})
    with atomic_directory(out) as tmp:
        table.to_csv(tmp / "per_class.csv", index=False, float_format="%.4f")
        atomic_write_json(tmp / "confusion.json", {"classes": classes,
                                                   "matrix": test_reports["cbm"]["confusion_matrix"]})
        if quality is not None:
            quality["auroc"].to_csv(tmp / "concept_auroc.csv", index=False, float_format="%.4f")
        (tmp / "thumbnails").mkdir()
        for k, (row, record) in enumerate(zip(sample, explanations)):
            image_id = str(index["image_id"][row])
            thumb = f"thumbnails/{k:03d}.png"
            source.load(position[image_id]).convert("RGB").resize((96, 96)).save(tmp / thumb)
            record.update(image_id=image_id, thumbnail=thumb, **{"class": classes[int(test_split.labels[row])]})
        atomic_write_json(tmp / "explanations.json", explanations)
        atomic_write_json(tmp / "class_concepts.json",
                          class_top_concepts(cbm.model.fc.weight, inputs.concepts, classes, e.explain.top))
        embedding_map(test_rows, test_split.labels, inputs.concept_embeddings, inputs.class_embeddings,
                      inputs.concepts, classes, e.map_images, params.seed).to_csv(
            tmp / "embedding_map.csv", index=False, float_format="%.5f")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    run_stage("evaluate", main)
