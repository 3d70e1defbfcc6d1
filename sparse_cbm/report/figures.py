"""The report's figures, each a PNG written by matplotlib (Agg backend, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402

COLOURS = {"cbm": "#1b6ca8", "cms": "#e07b39", "zero_shot": "#5b9a4c", "descriptions": "#9467bd",
           "linear_probe": "#7f7f7f"}
plt.rcParams.update({"figure.dpi": 110, "font.size": 9, "axes.spines.top": False, "axes.spines.right": False,
                     "svg.hashsalt": "sparse-cbm", "path.simplify": True})


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return path


def headline(methods: Dict[str, Dict[str, float]], labels: Dict[str, str], path: Path) -> Path:
    """Top-1 and top-5 test accuracy of every method, one row each."""
    names = list(methods)[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.55 * len(names) + 0.8))
    y = np.arange(len(names))
    colours = [COLOURS.get(n, "#444") for n in names]
    ax.barh(y + 0.2, [methods[n].get("top5") or 0 for n in names], 0.4, color=colours, alpha=0.4, label="top-5")
    ax.barh(y - 0.2, [methods[n]["top1"] for n in names], 0.4, color=colours, label="top-1")
    for yi, n in zip(y, names):
        ax.text(methods[n]["top1"] + 0.01, yi - 0.2, f"{methods[n]['top1']:.3f}", va="center", fontsize=8)
    ax.set_yticks(y, [labels[n] for n in names])
    ax.set_xlim(0, 1.12)
    ax.set_xlabel("test accuracy")
    ax.legend(frameon=False, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=2, fontsize=7)
    return _save(fig, path)


def training_curves(steps: pd.DataFrame, epochs: pd.DataFrame, path: Path) -> Path:
    fig, axes = plt.subplots(1, 3, figsize=(10, 2.8))
    axes[0].plot(steps["step"], steps["ce"], label="cross-entropy (FC)", color="#1b6ca8")
    axes[0].plot(steps["step"], steps["cbl_loss"], label="CBL objective", color="#e07b39")
    axes[0].set_xlabel("step")
    axes[0].set_title("losses")
    axes[0].legend(frameon=False)
    axes[1].plot(steps["step"], steps["tau"], color="#9467bd", label="τ")
    axes[1].plot(steps["step"], steps["lr_cbl"] / steps["lr_cbl"].max(), color="#7f7f7f", ls="--",
                 label="lr (relative)")
    axes[1].set_xlabel("step")
    axes[1].set_title("Gumbel temperature, learning rate")
    axes[1].legend(frameon=False)
    for col, style in (("train_top1", "-"), ("val_top1", "-"), ("train_top5", ":"), ("val_top5", ":")):
        axes[2].plot(epochs["epoch"], epochs[col], style, label=col.replace("_", " "),
                     color="#1b6ca8" if col.startswith("train") else "#e07b39")
    axes[2].set_xlabel("epoch")
    axes[2].set_ylim(0, 1.02)
    axes[2].set_title("accuracy")
    axes[2].legend(frameon=False, fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def confusion(matrix: Sequence[Sequence[int]], classes: Sequence[str], path: Path) -> Path:
    m = np.asarray(matrix, dtype=float)
    rows = m.sum(axis=1, keepdims=True)
    share = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    n = len(classes)
    size = min(2.5 + 0.32 * n, 14)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    if n <= 40:
        ax.set_xticks(range(n), classes, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(n), classes, fontsize=7)
        if n <= 20:
            for i in range(n):
                for j in range(n):
                    if m[i, j]:
                        ax.text(j, i, int(m[i, j]), ha="center", va="center", fontsize=6,
                                color="white" if share[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("CBM confusion matrix (test; share of each true class)")
    return _save(fig, path)


TRUE, FALSE = "#2e8540", "#9aa5b1"  # bars of concepts annotated true of the image, and the others


def _bars(ax, items: List[Dict], colour: str, title: str, true: Optional[set] = None, top: int = 8) -> None:
    items = items[:top][::-1]
    colours = [colour if true is None else (TRUE if it["concept"] in true else FALSE) for it in items]
    ax.barh(range(len(items)), [it["value"] for it in items], color=colours)
    labels = [f"{it['concept']}{' ✓' if true is not None and it['concept'] in true else ''}" for it in items]
    ax.set_yticks(range(len(items)), labels, fontsize=7)
    ax.set_title(title, fontsize=8)
    ax.tick_params(axis="x", labelsize=7)


def explanation(thumbnail: Path, record: Dict, path: Path) -> Path:
    """A thumbnail with its true attributes, then bars of the image's top concepts by activation, by
    contribution (weight x activation) and by CLIP score; where attributes are annotated, bars of true
    concepts are green and ticked."""
    columns = [("by_activation", "#1b6ca8", "by activation"),
               ("by_contribution", "#e07b39", f"by weight x activation → '{record['predicted']}'"),
               ("by_clip_score", "#5b9a4c", "by CLIP score")]
    columns = [c for c in columns if c[0] in record]
    fig, axes = plt.subplots(1, 1 + len(columns), figsize=(3.2 + 3.1 * len(columns), 2.6),
                             gridspec_kw={"width_ratios": [1.0] + [1.4] * len(columns)})
    axes[0].imshow(Image.open(thumbnail))
    axes[0].axis("off")
    verdict = "✓" if record["predicted"] == record["class"] else "✗"
    title = f"{record['class']}\n→ {record['predicted']} {verdict}"
    true = set(record["true_concepts"]) if "true_concepts" in record else None
    if true is not None:
        title += "\ntrue: " + ", ".join(record["true_concepts"])
    axes[0].set_title(title, fontsize=7)
    for ax, (key, colour, name) in zip(axes[1:], columns):
        _bars(ax, record[key], colour, name, true)
    fig.tight_layout()
    return _save(fig, path)


def curves(frame: pd.DataFrame, x: str, series: Dict[str, str], path: Path, xlabel: str, ylabel: str,
           title: str) -> Path:
    """Line plot of some columns of ``frame`` against ``x`` (series: column -> legend label)."""
    fig, ax = plt.subplots(figsize=(5.6, 3.2))
    for column, label in series.items():
        if column in frame:
            ax.plot(frame[x], frame[column], marker="o", ms=3, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1.02)
    ax.set_title(title, fontsize=9)
    ax.legend(frameon=False, fontsize=7)
    return _save(fig, path)


def concept_auroc(table: pd.DataFrame, labels: Dict[str, str], path: Path, show: int = 8) -> Path:
    """Per-concept AUROC of every model, the ``show`` best and worst concepts of the last model."""
    models = list(dict.fromkeys(table["model"]))
    pivot = table.pivot_table(index="concept", columns="model", values="auroc")
    ranked = pivot[models[-1]].dropna().sort_values()
    keep = list(dict.fromkeys(list(ranked.index[:show]) + list(ranked.index[-show:])))
    pivot = pivot.loc[keep]
    fig, ax = plt.subplots(figsize=(6.4, 0.26 * len(keep) + 1.2))
    y = np.arange(len(keep))
    height = 0.8 / max(len(models), 1)
    for k, model in enumerate(models):
        ax.barh(y + k * height, pivot[model], height, label=labels.get(model, model))
    ax.axvline(0.5, color="#444", lw=0.8, ls=":")
    ax.set_yticks(y + height * (len(models) - 1) / 2, keep, fontsize=7)
    ax.set_xlim(0, 1.02)
    ax.set_xlabel("ROC-AUC of the activation against the annotation (0.5 = chance)")
    ax.legend(frameon=False, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12 - 1.5 / (len(keep) + 6)),
              ncols=len(models))
    ax.set_title(f"concept AUROC: the {show} worst and best concepts of {labels.get(models[-1], models[-1])}",
                 fontsize=9)
    return _save(fig, path)


def class_concepts(table: Dict[str, List[Dict]], path: Path, top: int = 5, limit: int = 24) -> Path:
    """Each class's concepts with the largest FC weights (the first ``limit`` classes)."""
    names = list(table)[:limit]
    cols = 4
    rows = int(np.ceil(len(names) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(10, 1.6 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        _bars(ax, table[name][:top], "#5b9a4c", name)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    return _save(fig, path)


def place_labels(ax, rows: pd.DataFrame, colours: Dict[str, str]) -> int:
    """Annotate the rows in order, each only where its text overlaps no label already placed (measured by the
    renderer); how many were placed."""
    renderer = ax.figure.canvas.get_renderer()
    placed = []
    for _, row in rows.iterrows():
        text = ax.annotate(row["label"], (row["x"], row["y"]), fontsize=6, alpha=0.85, color=colours[row["kind"]])
        box = text.get_window_extent(renderer).expanded(1.05, 1.15)
        if any(box.overlaps(other) for other in placed):
            text.remove()
        else:
            placed.append(box)
    return len(placed)


def embedding_map(points: pd.DataFrame, path: Path) -> Path:
    """2-D PCA of image, concept and class embeddings (the paper's fig. 11)."""
    fig, ax = plt.subplots(figsize=(6.4, 5))
    styles = {"image": dict(s=6, alpha=0.35, c="#1b6ca8"), "concept": dict(s=18, marker="^", c="#e07b39"),
              "class": dict(s=40, marker="*", c="#5b9a4c")}
    plural = {"image": "images", "concept": "concepts", "class": "classes"}
    for kind, style in styles.items():
        sub = points[points["kind"] == kind]
        ax.scatter(sub["x"], sub["y"], label=f"{plural[kind]} ({len(sub)})", **style)
    ax.legend(frameon=False)
    named = pd.concat([points[points["kind"] == "class"], points[points["kind"] == "concept"]])
    shown = place_labels(ax, named, {"class": "#3d6b31", "concept": "#8a4a1c"})  # classes first
    ax.set_title(f"PCA of normalised CLIP embeddings: images, concepts, classes\n(labels that would overprint "
                 f"are left out: {shown} of {len(named)} shown)", fontsize=9)
    return _save(fig, path)
