"""Stage report: one page people would rather look at than read.

Reads the evaluation (``metrics/evaluate.json``, ``data/evaluation/``, ``plots/evaluate/``),
the comparison of objectives (``metrics/compare.json``), the training history
(``plots/train/``), the SALF-CBM branch (``metrics/spatial.json``, ``metrics/spatial_train.json``,
``data/spatial/evaluation/``), the filter's summary, ``params.yaml`` and the image cache's manifest; writes ``reports/index.html`` (self-contained: figures inlined),
``reports/report.md`` and ``reports/figures/*.png``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional, Sequence

import pandas as pd

from sparse_cbm.runtime.atomic import atomic_directory
from sparse_cbm.report import figures
from sparse_cbm.report.page import Page, Section, headline_table, method_label, pretty_json, \
    render_html, render_markdown
from sparse_cbm.report.spatial import spatial_sections
from sparse_cbm.report.trust import trust_sections
from sparse_cbm.runtime.runner import run_stage, stage_paths

READS = ("evaluate_metrics", "train_metrics", "compare_metrics", "spatial_metrics", "spatial_train_metrics",
         "filter_summary", "image_manifest", "evaluation", "train_plots", "evaluate_plots", "spatial_evaluation")
log = logging.getLogger("stages.report")


def read_json(path: str | Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def build(tmp: Path, paths) -> Page:
    EVAL, PLOTS, EVAL_PLOTS = Path(paths.evaluation), Path(paths.train_plots), Path(paths.evaluate_plots)
    SPATIAL_EVAL = Path(paths.spatial_evaluation)
    metrics = read_json(paths.evaluate_metrics)
    train_metrics = read_json(paths.train_metrics)
    summary = read_json(paths.filter_summary)
    manifest = read_json(paths.image_manifest)
    explanations = read_json(EVAL / "explanations.json")
    class_concepts = read_json(EVAL / "class_concepts.json")
    confusion = read_json(EVAL / "confusion.json")
    fig = tmp / "figures"
    labels = {m: method_label(m, metrics) for m in metrics["test"]}
    figures.headline(metrics["test"], labels, fig / "headline.png")
    figures.training_curves(pd.read_csv(PLOTS / "steps.csv"), pd.read_csv(PLOTS / "epochs.csv"),
                            fig / "training.png")
    sparse = pd.read_csv(PLOTS / "sparse_path.csv")
    if len(sparse):
        figures.curves(sparse, "nec", {"val_top1": "val top-1", "train_top1": "train top-1"},
                       fig / "sparse_path.png", "NEC: non-zero weights per class", "top-1",
                       "Sparse final layer along its regularisation path")
    figures.confusion(confusion["matrix"], confusion["classes"], fig / "confusion.png")
    figures.class_concepts(class_concepts["classes"], fig / "class_concepts.png")
    figures.embedding_map(pd.read_csv(EVAL / "embedding_map.csv"), fig / "embedding_map.png")
    panels = []
    for k, record in enumerate(explanations):
        panels.append(f"figures/explanation_{k:03d}.png")
        figures.explanation(EVAL / record["thumbnail"], record, tmp / panels[-1])

    random = manifest["backbone"].get("random_weights")
    banner = ("backbone.pretrained is 'none': the CLIP backbone has RANDOM weights. Every accuracy on this page "
              "is meaningless; this run only exercises the pipeline.") if random else None
    removed = summary["removed_by_step"]
    sparsity = metrics["sparsity"]
    sections = [
        Section("Headline (test split)", f"{metrics['dataset']} test split, {metrics['test_images']} images, "
                f"{metrics['num_classes']} classes, {metrics['concepts']} concepts in the bottleneck.",
                table=headline_table(metrics), figures=["figures/headline.png"]),
        Section("Validation split", table=headline_table(metrics, "val")),
        Section("Concept set", f"{summary['input']} candidate concepts, {summary['kept']} kept "
                f"({summary['kept_rows']} class-concept pairs).",
                table=[["filter step", "removed"], *[[k, v] for k, v in removed.items()]]),
        Section("Sparsity", "Of the CBM's concept activations (test) and its final-layer weights.",
                table=[["measure", "value"], *[[k, v] for k, v in sparsity.items()]]),
    ]
    sections += trust_sections(metrics, read_json(paths.compare_metrics), EVAL, EVAL_PLOTS, tmp)
    sections += spatial_sections(read_json(paths.spatial_metrics), read_json(paths.spatial_train_metrics), metrics,
                                 train_metrics, SPATIAL_EVAL / "panels.npz", tmp)
    sections += [
        Section("Training", f"objective {train_metrics['objective']} ({train_metrics['form']} form), kept epoch "
                f"{train_metrics['kept_epoch']} of {train_metrics['epochs_run']}; final layer "
                f"{train_metrics['final_layer']}, NEC {train_metrics['nec']}"
                + (f"; cos3's cutoff dropped {len(train_metrics['dropped_concepts'])} concepts: "
                   f"{', '.join(train_metrics['dropped_concepts'])}" if train_metrics['dropped_concepts'] else "") + ".",
                figures=["figures/training.png"] + (["figures/sparse_path.png"] if len(sparse) else [])),
        Section("Confusion matrix", figures=["figures/confusion.png"]),
        Section("Why the model decided: sample test images", "Each panel: the image (and, where the dataset "
                "annotates them, its true attributes), then its top concepts ranked by CBL activation, by "
                "contribution to the predicted class (weight x activation) and by CLIP's own score. Where the truth "
                "is known, the bars of concepts true of the image are green and ticked.", figures=panels),
        Section("What each class listens to", f"The concepts of each class ranked by {class_concepts['ranking']}.",
                figures=["figures/class_concepts.png"]),
        Section("Embedding map", "PCA of normalised CLIP embeddings (the paper's fig. 11).",
                figures=["figures/embedding_map.png"]),
        Section("Params", code=Path("params.yaml").read_text(encoding="utf-8")),
        Section("Backbone manifest (test split)", code=pretty_json({k: manifest[k] for k in (
            "backbone", "preprocess", "dataset", "count", "dim", "logit_scale") if k in manifest})),
    ]
    return Page(title=f"Sparse-CBM report: {metrics['dataset']}, {method_label('cbm', metrics)}", banner=banner,
                sections=sections)


def main(argv: Optional[Sequence[str]] = None) -> None:
    paths = stage_paths("report", argv, *READS, "out")
    with atomic_directory(paths.out) as tmp:
        page = build(tmp, paths)
        (tmp / "report.md").write_text(render_markdown(page), encoding="utf-8")
        (tmp / "index.html").write_text(render_html(page, tmp), encoding="utf-8")
    log.info("wrote %s/index.html and %s/report.md", paths.out, paths.out)


if __name__ == "__main__":
    run_stage("report", main)
