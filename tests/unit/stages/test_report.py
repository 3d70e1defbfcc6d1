"""Stage report on a small synthetic project (2 classes, 3 concepts): every input file the stage reads,
written by hand; the page it renders holds every metric as the page formats it, and every figure."""

import base64
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.unit.report.test_page import Parsed
from tests.unit.stages import stage_argv

CLASSES, CONCEPTS = ["apple", "ball"], ["red", "round", "striped"]
EVALUATE = {
    "dataset": "shapes", "test_images": 40, "num_classes": 2, "concepts": 3,
    "methods": {"cbm": "CBM (l1)", "linear_probe": "linear probe", "zero_shot": "zero-shot CLIP"},
    "test": {"cbm": {"top1": 0.91237, "top5": 1.0, "macro_f1": 0.90011},
             "linear_probe": {"top1": 0.95, "top5": 1.0, "macro_f1": 0.94999},
             "zero_shot": {"top1": 0.525, "top5": None, "macro_f1": 0.4}},
    "val": {"cbm": {"top1": 0.8875, "top5": 1.0, "macro_f1": 0.88}},
    "sparsity": {"cbl_fraction_below_1pct": 0.0299, "cbl_concepts_for_90pct_mass": 2.8779},
    "concept_quality": {
        "models": {"cbm": "CBM (l1)", "clip_scores": "CLIP concept scores"},
        "cbm": {"annotated_concepts": 2, "auroc": 0.61234,
                "precision_at_k": {"k": 2, "by_activation": 0.25, "by_contribution": 0.375, "random_ranking": 0.3333},
                "intervention": {"accuracy_at_0": 0.9, "policies": ["worst_first", "random"],
                                 "gain_at_5": {"worst_first": -0.0504, "random": 0.0101}},
                "deletion": {"auc": 0.3633, "random_order_auc": 0.8867}},
        "clip_scores": {"annotated_concepts": 2, "auroc": 0.983,
                        "precision_at_k": {"k": 2, "by_activation": 0.5342, "random_ranking": 0.3333}}},
    "test_corrupted": {"corruptions": {"kinds": ["occlusion", "blur"], "severity": 0.5},
                       "test": {"cbm": {"top1": 0.41234}},
                       "concept_quality": {"cbm": {"intervention": {
                           "accuracy_at_0": 0.41234, "policies": ["worst_first", "random"],
                           "gain_at_5": {"worst_first": 0.31, "random": 0.12}}}}}}
TRAIN = {"objective": "l1", "form": "paper", "kept_epoch": 3, "epochs_run": 4, "final_layer": "sparse", "nec": 2.5,
         "dropped_concepts": ["striped"]}
SUMMARY = {"input": 7, "kept": 3, "kept_rows": 4, "removed_by_step": {"too long": 1, "too similar to a class": 3}}
COMPARE = {"configs": {"l1-paper-dense": {
                        "loss": "l1", "objective": "l1", "form": "paper", "final_layer": "dense",
                        "top1": 0.9, "random_concepts_top1": 0.5,
                        "auroc": 0.6, "precision_at_k": {"by_contribution": 0.375}, "nec": 3.0, "anec5": 0.875,
                        "random_concepts_anec5": None,
                        "intervention": {"policies": ["worst_first", "random"],
                                         "gain_at_5": {"worst_first": 0.0125, "random": 0.0}},
                        "test_corrupted": {"top1": 0.4, "intervention": {"policies": ["worst_first", "random"],
                                                                         "gain_at_5": {"worst_first": 0.25,
                                                                                       "random": -0.01}}}}},
           "grid": ["l1-paper-dense"]}
SPATIAL = {"test_top1": 0.7125, "test_images": 40, "nec": 1.5, "heatmap_images": 9, "prompted_test_images": 12,
           "heatmaps": {m: {"pixel_accuracy": 0.7 + i / 100, "miou": 0.5 + i / 1000, "map": 0.61234 - i / 10,
                            "map_foreground": 0.4 + i / 100}
                        for i, m in enumerate(("salf_cbm", "gradcam_salf_cbm", "gradcam_probe", "raw_p"))},
           "pointing_game": {"salf_cbm": 0.5061, "gradcam_salf_cbm": 0.4, "gradcam_probe": 0.31},
           "explain_anything": {"precision_at_2": {"salf_cbm": 0.2467, "raw_p": 0.4233, "whole_image": 0.3467,
                                                   "random": 0.0217}, "regions": 20,
                                "salf_cbm_by_object": {"class_object": 0.25}},
           "local_edit": {"beta": 1.0, "units": "raw", "images": 16,
                          "lower_top_concept": {"to_intended": 0.4417, "changed": 0.4875},
                          "lower_class_concepts": {"to_intended": 0.5, "changed": 0.775},
                          "raise_runner_up": {"to_intended": 0.5458, "changed": 0.5542},
                          "raise_other_class": {"to_intended": 0.1583, "changed": 0.225}}}
PARAMS = "seed: 0\ndataset:\n  name: shapes   # <the embedded world> & co\n"


def write(path, content):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, pd.DataFrame):
        content.to_csv(path, index=False)
    elif isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_text(json.dumps(content, sort_keys=True), encoding="utf-8")  # as the stages write it


def synthetic_project(root: Path):
    rng = np.random.default_rng(0)
    ranked = lambda values: [{"concept": c, "value": v} for c, v in zip(CONCEPTS, values)]  # noqa: E731
    write(root / "metrics/evaluate.json", EVALUATE)
    write(root / "metrics/train.json", TRAIN)
    write(root / "metrics/compare.json", COMPARE)
    write(root / "metrics/spatial.json", SPATIAL)
    write(root / "metrics/spatial_train.json", {"cos3": 0.4746, "nec": 1.5, "epochs": 2})
    write(root / "data/filtered/summary.json", SUMMARY)
    write(root / "data/image_cache/test/manifest.json", {
        "backbone": {"model": "sparse-cbm-tiny", "random_weights": True}, "preprocess": "Resize(64)",
        "dataset": {"name": "shapes", "classes": CLASSES}, "count": 40, "dim": 64, "logit_scale": 100.0,
        "sha256": "not shown"})
    (root / "data/evaluation/thumbnails").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / "data/evaluation/thumbnails/000.png")
    write(root / "data/evaluation/explanations.json", [{
        "thumbnail": "thumbnails/000.png", "class": "apple", "predicted": "ball", "by_activation": ranked([3, 2, 1]),
        "by_contribution": ranked([1.5, 0.5, -1]), "by_clip_score": ranked([0.3, 0.2, 0.1]), "true_concepts": ["red"]}])
    write(root / "data/evaluation/class_concepts.json", {"ranking": "final-layer weight",
                                                         "classes": {c: ranked([1, 0.5, 0.1]) for c in CLASSES}})
    write(root / "data/evaluation/confusion.json", {"classes": CLASSES, "matrix": [[18, 2], [1, 19]]})
    write(root / "data/evaluation/embedding_map.csv", pd.DataFrame({
        "kind": ["image"] * 4 + ["concept"] * 3 + ["class"] * 2, "x": rng.random(9), "y": rng.random(9),
        "label": ["", "", "", ""] + CONCEPTS + CLASSES}))
    write(root / "data/evaluation/concept_auroc.csv", pd.DataFrame({
        "model": ["cbm"] * 2 + ["clip_scores"] * 2, "concept": ["red", "round"] * 2, "auroc": [0.6, 0.62, 0.97, 0.99]}))
    write(root / "plots/train/steps.csv", pd.DataFrame({"step": range(4), "ce": [1.0, 0.8, 0.6, 0.5], "cbl_loss":
                                                        [0.5, 0.4, 0.3, 0.3], "tau": [1.0] * 4, "lr_cbl": [1e-3] * 4}))
    write(root / "plots/train/epochs.csv", pd.DataFrame({"epoch": [1, 2], "train_top1": [0.6, 0.9], "val_top1": [0.5, 0.85],
                                                         "train_top5": [1.0, 1.0], "val_top5": [1.0, 1.0]}))
    write(root / "plots/train/sparse_path.csv", pd.DataFrame({"nec": [0, 1, 2.5], "train_top1": [0.5, 0.8, 0.9],
                                                              "val_top1": [0.5, 0.75, 0.85]}))
    write(root / "plots/evaluate/intervention.csv", pd.DataFrame({"k": [0, 1, 2], "cbm_worst_first": [0.9, 0.92, 0.95],
                                                                  "cbm_random": [0.9, 0.91, 0.92]}))
    write(root / "plots/evaluate/intervention_corrupted.csv", pd.DataFrame({
        "k": [0, 1, 2], "cbm_worst_first": [0.4, 0.6, 0.7], "cbm_random": [0.4, 0.45, 0.5]}))
    write(root / "plots/evaluate/deletion.csv", pd.DataFrame({"step": [0, 1, 2], "cbm_by_contribution": [0.9, 0.5, 0.3],
                                                              "cbm_random": [0.9, 0.8, 0.7]}))
    n, size = 1, 16
    masks = np.zeros((n, size, size), bool)
    masks[:, 4:12, 4:12] = True
    (root / "data/spatial/evaluation").mkdir(parents=True)
    np.savez_compressed(
        root / "data/spatial/evaluation/panels.npz", rows=np.arange(n), masks=masks,
        images=rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), predictions=np.zeros(n, np.int64),
        labels=np.zeros(n, np.int64), concepts=np.zeros((n, 1), np.int64),
        concept_maps=rng.standard_normal((n, 1, size, size)).astype(np.float16),
        class_heatmaps=rng.standard_normal((n, size, size)).astype(np.float16),
        concept_names=np.array(CONCEPTS), class_names=np.array(CLASSES))
    write(root / "params.yaml", PARAMS)


FIGURES = {"headline", "training", "sparse_path", "confusion", "class_concepts", "embedding_map", "explanation_000",
           "intervention", "deletion", "concept_auroc", "spatial_panels"}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from stages import report as stage

    root = tmp_path_factory.mktemp("project")
    synthetic_project(root)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        stage.main(stage_argv("report"))
    return root


def f4(value):
    return f"{value:.4f}"


def test_the_report_is_published_whole_with_every_figure(report):
    out = report / "reports"
    assert sorted(p.name for p in out.iterdir()) == ["figures", "index.html", "report.md"]
    assert [p.name for p in report.iterdir() if p.name.startswith(".reports.tmp")] == []
    assert {p.stem for p in (out / "figures").glob("*.png")} == FIGURES
    md = (out / "report.md").read_text(encoding="utf-8")
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert {Path(f).stem for f in linked} == FIGURES and all((out / f).is_file() for f in linked)
    page = Parsed((out / "index.html").read_text(encoding="utf-8"))
    assert [img["data-file"] for img in page.images] == linked  # the same figures, in the same order
    for img in page.images:
        data = base64.b64decode(img["src"].split(",", 1)[1])
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and data == (out / img["data-file"]).read_bytes()
        with Image.open(out / img["data-file"]) as image:
            assert min(image.size) > 50 and len(np.unique(np.asarray(image.convert("L")))) > 2  # drawn, not blank
    assert page.h1 == ["Sparse-CBM report: shapes, CBM (l1)"]
    # the synthetic cache's CLIP has random weights (as the tiny test CLIP has): the page says so first
    assert len(page.banner) == 1 and "RANDOM weights" in page.banner[0] and md.startswith(
        "# Sparse-CBM report: shapes, CBM (l1)\n\n> **backbone.pretrained is 'none'")


def test_every_metric_is_in_its_table_as_the_page_formats_it(report):
    page = Parsed((report / "reports/index.html").read_text(encoding="utf-8"))
    tables = {t[0][0] + "|" + t[0][1]: {row[0]: row[1:] for row in t[1:]} for t in page.tables}
    headline, validation = [{row[0]: row[1:] for row in t[1:]} for t in page.tables if t[0][:2] == ["method", "top-1"]]
    for rows, split in ((headline, "test"), (validation, "val")):
        assert list(rows) == [EVALUATE["methods"][m] for m in EVALUATE[split]]
        for method, m in EVALUATE[split].items():
            assert rows[EVALUATE["methods"][method]] == [
                "–" if m[k] is None else f4(m[k]) for k in ("top1", "top5", "macro_f1")]
    assert tables["filter step|removed"] == {k: [str(v)] for k, v in SUMMARY["removed_by_step"].items()}
    assert tables["measure|value"] == {k: [f4(v)] for k, v in EVALUATE["sparsity"].items()}
    trust = tables["model|concept AUROC"]
    cbm = EVALUATE["concept_quality"]["cbm"]
    assert trust["CBM (l1)"] == [f4(cbm["auroc"]), "0.2500", "0.3750", "0.3333", "-0.0504 / +0.0101",
                                 "0.3633 (0.8867)"]
    assert trust["CLIP concept scores"] == ["0.9830", "0.5342", "–", "0.3333", "–", "–"]
    (compare,) = tables["objective|form"].values()
    assert compare == ["paper", "dense", "0.9000 (0.5000)", "0.6000", "0.3750", "3.0000", "0.8750",
                       "+0.0125 / +0.0000", "0.4000", "+0.2500 / -0.0100"]
    headers = [t[0] for t in page.tables if t[0][0] == "objective"][0]
    assert headers[8] == headers[10].replace("corrupted test: ", "") == \
        "intervention gain at k = 5 (most wrong first / in a random order)"
    assert tables["model|test top-1"] == {"SALF-CBM (concept maps, sparse final layer)": ["0.7125", "1.5000"],
                                          "CBM (l1)": ["0.9124", "2.5000"], "linear probe": ["0.9500", "–"]}
    from sparse_cbm.report.spatial import EA_LABELS, HEATMAP_LABELS

    heat = tables["heatmap|pixel accuracy"]
    assert list(heat) == [HEATMAP_LABELS[m] for m in HEATMAP_LABELS if m in SPATIAL["heatmaps"]]  # SALF-CBM first
    for method, s in SPATIAL["heatmaps"].items():
        pointing = SPATIAL["pointing_game"].get(method)
        assert heat[HEATMAP_LABELS[method]] == [f4(s["pixel_accuracy"]), f4(s["miou"]), f4(s["map"]),
                                                f4(s["map_foreground"]), "–" if pointing is None else f4(pointing)]
    assert tables["ranking|precision at 2"] == {EA_LABELS[m]: [f4(v)] for m, v in
                                               SPATIAL["explain_anything"]["precision_at_2"].items()}


def test_texts_code_and_markdown_agree_with_the_html(report):
    out = report / "reports"
    md = (out / "report.md").read_text(encoding="utf-8")
    page = Parsed((out / "index.html").read_text(encoding="utf-8"))
    assert [line[3:] for line in md.splitlines() if line.startswith("## ")] == page.h2
    assert "Headline (test split)" in page.h2 and "SALF-CBM: heatmap panels" in page.h2
    text = "\n".join(page.p)
    assert "shapes test split, 40 images, 2 classes, 3 concepts in the bottleneck." in text
    assert "7 candidate concepts, 3 kept (4 class-concept pairs)." in text
    assert "kept epoch 3 of 4; final layer sparse, NEC 2.5; cos3's cutoff dropped 1 concepts: striped." in text
    assert "cubic cosine 0.4746 on train" in text and "On the 9 of 12 test images" in text
    assert ("On the corrupted test split (occlusion, blur; severity 0.5) the CBM's top-1 is 0.4123 (clean: 0.9124); "
            "checking 5 concepts of each image gains +0.3100 (most wrong first), +0.1200 (in a random order).") in text
    assert "Concepts lowered or raised by β = 1.0 raw map units (the paper's c[m] + βI) inside the box" in text
    assert page.pre[0] == PARAMS  # params.yaml whole, escaped in the HTML, as written in the Markdown
    assert "```\n" + PARAMS.rstrip() + "\n```" in md
    manifest = json.loads(page.pre[1])
    assert set(manifest) == {"backbone", "preprocess", "dataset", "count", "dim", "logit_scale"}  # sha256 left out
    for table in page.tables:  # each HTML row is a Markdown row
        for row in table[1:]:
            assert "| " + " | ".join(row) + " |" in md
