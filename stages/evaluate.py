"""Stage evaluate: the trained CBM against the training-free CLIP classifiers, with explanations.

Reads the caches, the trained model and params ``evaluate.*``; writes
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

from sparse_cbm.atomic import atomic_directory, atomic_write_json
from sparse_cbm.cms import ConceptMatrixSearch
from sparse_cbm.evaluation import embedding_map, faithfulness, sample_per_class
from sparse_cbm.explain import class_top_concepts, explain_images, load_bottleneck, predict
from sparse_cbm.image_cache import read_image_split
from sparse_cbm.linear_probe import fit_linear_probe
from sparse_cbm.metrics import classification_report
from sparse_cbm.params import load_params
from sparse_cbm.runner import run_stage
from sparse_cbm.sparsity import fraction_below
from sparse_cbm.text_cache import concept_list_sha256, read_text_cache
from sparse_cbm.train import evaluate_split
from sparse_cbm.zero_shot import class_text_embeddings, classify_by_descriptions, zero_shot_predict
from stages.common import dataset_from

IMAGES, TEXT, MODEL, OUT, METRICS = "data/image_cache", "data/text_cache", "data/model", "data/evaluation", \
    Path("metrics/evaluate.json")
log = logging.getLogger("stages.evaluate")


def main() -> None:
    params = load_params()
    e = params.evaluate
    splits = {s: read_image_split(IMAGES, s) for s in ("train", "val", "test")}
    backbone = splits["train"].manifest["backbone"]
    for s in ("val", "test"):
        read_image_split(IMAGES, s, expect_backbone=backbone)
    concepts = Path("data/filtered/concepts.txt").read_text(encoding="utf-8").splitlines()
    text = read_text_cache(TEXT, expect_backbone=backbone, expect_concepts_sha256=concept_list_sha256(concepts))
    model, config = load_bottleneck(MODEL, expect_concepts_sha256=concept_list_sha256(concepts),
                                    expect_backbone=backbone)
    classes = config["classes"]
    C = len(classes)
    class_emb = class_text_embeddings(text.class_prompt_embeddings)
    cms = ConceptMatrixSearch(text.concept_embeddings, class_emb)
    desc_class = text.descriptions["class_index"].to_numpy(np.int64)
    rows = {s: split.rows() for s, split in splits.items()}
    probe = fit_linear_probe((rows["train"], splits["train"].labels), (rows["val"], splits["val"].labels),
                             cs=e.linear_probe.cs, max_iter=e.linear_probe.max_iter, seed=params.seed)
    log.info("linear probe: C = %g (val accuracy per C: %s)", probe.C, probe.val_accuracy)

    results, per_class = {}, {}
    for s in ("val", "test"):
        x, y = rows[s], splits[s].labels
        predictions = {
            "cbm": predict(model, x, e.batch_size),
            "cms": cms.predict(x, batch_size=e.batch_size),
            "zero_shot": zero_shot_predict(x, class_emb, batch_size=e.batch_size),
            "descriptions": classify_by_descriptions(x, text.description_embeddings, desc_class, C,
                                                     batch_size=e.batch_size),
            "linear_probe": probe.predict_topk(x, batch_size=e.batch_size),
        }
        reports = {m: classification_report(y, p[0], p[1], num_classes=C, with_confusion=(m == "cbm" and s == "test"))
                   for m, p in predictions.items()}
        results[s] = {m: {k: r[k] for k in ("top1", "top5", "macro_precision", "macro_recall", "macro_f1")}
                      for m, r in reports.items()}
        per_class[s] = reports
    results["test"]["linear_probe"]["C"] = probe.C
    test = per_class["test"]
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
    sample = sample_per_class(splits["test"].labels, e.explain.per_class, e.explain.max_images, params.seed)
    explanations = explain_images(model, rows["test"][sample], concepts, classes, top=e.explain.top)
    source = dataset_from(params).splits["test"]
    position = {image_id: k for k, image_id in enumerate(source.ids)}
    metrics = {"dataset": splits["test"].manifest["dataset"]["name"], "loss": config["train"]["loss"],
               "gumbel_objective": config["train"]["gumbel_objective"] if config["train"]["loss"] == "gumbel" else None,
               "num_classes": C, "concepts": len(concepts), "test_images": int(len(splits["test"].labels)),
               "random_weights": bool(backbone.get("random_weights")), "classes_without_test_images": missing,
               "val": results["val"], "test": results["test"],
               "sparsity": {k: round(float(v), 4) for k, v in sparsity.items()}}
    if "shape" in index.columns:
        metrics["faithfulness"] = faithfulness(model, rows["test"], index, concepts, e.faithfulness_k)

    with atomic_directory(OUT) as tmp:
        table.to_csv(tmp / "per_class.csv", index=False, float_format="%.4f")
        atomic_write_json(tmp / "confusion.json", {"classes": classes, "matrix": test["cbm"]["confusion_matrix"]})
        (tmp / "thumbnails").mkdir()
        for k, (row, record) in enumerate(zip(sample, explanations)):
            image_id = str(index["image_id"][row])
            thumb = f"thumbnails/{k:03d}.png"
            source.load(position[image_id]).convert("RGB").resize((96, 96)).save(tmp / thumb)
            record.update(image_id=image_id, thumbnail=thumb, **{"class": classes[int(splits["test"].labels[row])]})
        atomic_write_json(tmp / "explanations.json", explanations)
        atomic_write_json(tmp / "class_concepts.json", class_top_concepts(model, concepts, classes, e.explain.top))
        embedding_map(rows["test"], splits["test"].labels, text.concept_embeddings, class_emb, concepts, classes,
                      e.map_images, params.seed).to_csv(tmp / "embedding_map.csv", index=False, float_format="%.5f")
    atomic_write_json(METRICS, metrics)
    log.info("test top-1: %s", ", ".join(f"{m} {r['top1']:.4f}" for m, r in results["test"].items()))


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    run_stage("evaluate", main)
