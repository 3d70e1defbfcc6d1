"""Stage evaluate: the trained CBM against the training-free CLIP classifiers, with explanations.

Reads the caches, the trained model, ``data/filtered/concepts.txt``, the dataset (for
thumbnails) and params ``seed``, ``dataset.*``, ``evaluate.*``; writes
``metrics/evaluate.json`` (for ``dvc metrics``) and ``data/evaluation/``: per-class
results, the confusion matrix, explanations of sampled test images with thumbnails,
each class's top-weighted concepts, and a PCA map of the embeddings.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sparse_cbm.bottleneck.checkpoint import load_bottleneck
from sparse_cbm.bottleneck.sparsity import fraction_below
from sparse_cbm.bottleneck.train import evaluate_split
from sparse_cbm.classifiers import EvaluationInputs, build_classifiers
from sparse_cbm.classifiers.zero_shot import class_text_embeddings
from sparse_cbm.evaluation.embedding_map import embedding_map
from sparse_cbm.evaluation.explain import class_top_concepts, explain_images, sample_per_class
from sparse_cbm.evaluation.faithfulness import faithfulness
from sparse_cbm.evaluation.metrics import classification_report
from sparse_cbm.params import load_params
from sparse_cbm.runtime.atomic import atomic_directory, atomic_write_json
from sparse_cbm.runtime.runner import run_stage
from sparse_cbm.storage.image_cache import read_image_split
from sparse_cbm.storage.text_cache import concept_list_sha256, read_text_cache
from stages.common import dataset_from

IMAGES, TEXT, MODEL, OUT = "data/image_cache", "data/text_cache", "data/model", "data/evaluation"
CONCEPTS, METRICS = Path("data/filtered/concepts.txt"), Path("metrics/evaluate.json")
SUMMARY = ("top1", "top5", "macro_precision", "macro_recall", "macro_f1")
log = logging.getLogger("stages.evaluate")


def main() -> None:
    params = load_params()
    e = params.evaluate
    splits = {s: read_image_split(IMAGES, s) for s in ("train", "val", "test")}
    backbone = splits["train"].manifest["backbone"]
    for s in ("val", "test"):
        read_image_split(IMAGES, s, expect_backbone=backbone)
    concepts = CONCEPTS.read_text(encoding="utf-8").splitlines()
    text = read_text_cache(TEXT, expect_backbone=backbone, expect_concepts_sha256=concept_list_sha256(concepts))
    model, config = load_bottleneck(MODEL, expect_concepts_sha256=concept_list_sha256(concepts),
                                    expect_backbone=backbone)
    classes = config["classes"]
    rows = {s: split.rows() for s, split in splits.items()}
    class_emb = class_text_embeddings(text.class_prompt_embeddings)
    inputs = EvaluationInputs(
        concepts=concepts, classes=classes, concept_embeddings=text.concept_embeddings, class_embeddings=class_emb,
        description_embeddings=text.description_embeddings,
        description_class=text.descriptions["class_index"].to_numpy(np.int64),
        train=(rows["train"], splits["train"].labels), val=(rows["val"], splits["val"].labels),
        bottlenecks={"cbm": (model, f"CBM ({config['objective']})")},
        options={"linear_probe": e.linear_probe.model_dump()}, seed=params.seed)
    classifiers = build_classifiers(inputs)

    results, reports = {}, {}
    for s in ("val", "test"):
        reports[s] = {name: classification_report(splits[s].labels, *clf.predict(rows[s], e.batch_size),
                                                  num_classes=len(classes), with_confusion=(s == "test"))
                      for name, clf in classifiers.items()}
        results[s] = {name: {k: r[k] for k in SUMMARY} for name, r in reports[s].items()}
    results["test"]["linear_probe"]["C"] = classifiers["linear_probe"].C
    test = reports["test"]
    table = pd.DataFrame({"class": classes, "test_images": [r["support"] for r in test["cbm"]["per_class"]],
                          **{m: [r["accuracy"] for r in rep["per_class"]] for m, rep in test.items()}})
    missing = [name for name, r in zip(classes, test["cbm"]["per_class"]) if not r["support"]]
    if missing:
        log.warning("classes with no test images (reported, not scored): %s", ", ".join(missing))

    cbm_test = evaluate_split(model, rows["test"], splits["test"].labels, device="cpu")
    sparsity = {"cbl_concepts_for_90pct_mass": cbm_test["concepts_for_90pct_mass"],
                "cbl_fraction_below_1pct": cbm_test["fraction_below_1pct"],
                "fc_fraction_below_1pct": fraction_below(model.fc.weight.detach())}
    index = splits["test"].index()
    metrics = {"dataset": splits["test"].manifest["dataset"]["name"], "loss": config["loss"],
               "objective": config["objective"], "methods": {name: clf.label for name, clf in classifiers.items()},
               "num_classes": len(classes), "concepts": len(concepts), "test_images": int(len(splits["test"].labels)),
               "random_weights": bool(backbone.get("random_weights")), "classes_without_test_images": missing,
               "val": results["val"], "test": results["test"],
               "sparsity": {k: round(float(v), 4) for k, v in sparsity.items()}}
    if "shape" in index.columns:
        metrics["faithfulness"] = faithfulness(model, rows["test"], index, concepts, e.faithfulness_k)
    write_outputs(params, model, splits["test"], rows["test"], concepts, classes, class_emb, text, test, table)
    atomic_write_json(METRICS, metrics)
    log.info("test top-1: %s", ", ".join(f"{m} {r['top1']:.4f}" for m, r in results["test"].items()))


def write_outputs(params, model, test_split, test_rows, concepts, classes, class_emb, text, test, table) -> None:
    """data/evaluation/: per-class table, confusion, explanations with thumbnails, class concepts, PCA map."""
    e = params.evaluate
    index = test_split.index()
    sample = sample_per_class(test_split.labels, e.explain.per_class, e.explain.max_images, params.seed)
    explanations = explain_images(model, test_rows[sample], concepts, classes, top=e.explain.top)
    source = dataset_from(params).splits["test"]
    position = {image_id: k for k, image_id in enumerate(source.ids)}
    with atomic_directory(OUT) as tmp:
        table.to_csv(tmp / "per_class.csv", index=False, float_format="%.4f")
        atomic_write_json(tmp / "confusion.json", {"classes": classes, "matrix": test["cbm"]["confusion_matrix"]})
        (tmp / "thumbnails").mkdir()
        for k, (row, record) in enumerate(zip(sample, explanations)):
            image_id = str(index["image_id"][row])
            thumb = f"thumbnails/{k:03d}.png"
            source.load(position[image_id]).convert("RGB").resize((96, 96)).save(tmp / thumb)
            record.update(image_id=image_id, thumbnail=thumb, **{"class": classes[int(test_split.labels[row])]})
        atomic_write_json(tmp / "explanations.json", explanations)
        atomic_write_json(tmp / "class_concepts.json", class_top_concepts(model, concepts, classes, e.explain.top))
        embedding_map(test_rows, test_split.labels, text.concept_embeddings, class_emb, concepts, classes,
                      e.map_images, params.seed).to_csv(tmp / "embedding_map.csv", index=False, float_format="%.5f")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    run_stage("evaluate", main)
