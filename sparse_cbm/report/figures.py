"""The report's figures, each a PNG written by matplotlib (Agg backend, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence

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


def _bars(ax, items: List[Dict], colour: str, title: str) -> None:
    items = items[::-1]
    ax.barh(range(len(items)), [it["value"] for it in items], color=colour)
    ax.set_yticks(range(len(items)), [it["concept"] for it in items], fontsize=7)
    ax.set_title(title, fontsize=8)
    ax.tick_params(axis="x", labelsize=7)


def explanation(thumbnail: Path, record: Dict, path: Path) -> Path:
    """A thumbnail, then bars of the image's top concepts by CBL activation and by contribution."""
    fig, axes = plt.subplots(1, 3, figsize=(9, 2.4), gridspec_kw={"width_ratios": [0.8, 1.4, 1.4]})
    axes[0].imshow(Image.open(thumbnail))
    axes[0].axis("off")
    verdict = "✓" if record["predicted"] == record["class"] else "✗"
    axes[0].set_title(f"{record['class']}\n→ {record['predicted']} {verdict}", fontsize=8)
    _bars(axes[1], record["by_activation"], "#1b6ca8", "top concepts (CBL activation)")
    _bars(axes[2], record["by_contribution"], "#e07b39", f"contribution to '{record['predicted']}'")
    fig.tight_layout()
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


def embedding_map(points: pd.DataFrame, path: Path) -> Path:
    """2-D PCA of image, concept and class embeddings (the paper's fig. 11)."""
    fig, ax = plt.subplots(figsize=(6.4, 5))
    styles = {"image": dict(s=6, alpha=0.35, c="#1b6ca8"), "concept": dict(s=18, marker="^", c="#e07b39"),
              "class": dict(s=40, marker="*", c="#5b9a4c")}
    for kind, style in styles.items():
        sub = points[points["kind"] == kind]
        ax.scatter(sub["x"], sub["y"], label=f"{kind}s ({len(sub)})", **style)
    for _, row in points[points["kind"] != "image"].head(60).iterrows():
        ax.annotate(row["label"], (row["x"], row["y"]), fontsize=6, alpha=0.8)
    ax.set_title("PCA of normalised CLIP embeddings: images, concepts, classes")
    ax.legend(frameon=False)
    return _save(fig, path)
