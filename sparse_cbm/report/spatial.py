"""The report's SALF-CBM sections: accuracy beside the Sparse-CBM models, heatmaps against true
masks, the grid pointing game, Explain Anything's region concepts, local edits, heatmap panels."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from sparse_cbm.report.figures import _save  # noqa: E402
from sparse_cbm.report.page import Section, method_label  # noqa: E402
from sparse_cbm.spatial.names import HEATMAP_LABELS  # noqa: E402

EA_LABELS = {"salf_cbm": "SALF-CBM: the region's concept maps",
             "salf_cbm_raw_maps": "SALF-CBM: the region's raw concept maps (the paper's sum)",
             "raw_p": "raw P (ringed CLIP) in the region",
             "whole_image": "SALF-CBM: the whole image's maps (what the region adds)", "random": "a random ranking"}
EDIT_LABELS = {"lower_top_concept": ("the concept contributing most, lowered", "the runner-up"),
               "lower_class_concepts": ("every positive-weight concept of the predicted class, lowered", "the runner-up"),
               "raise_runner_up": ("the runner-up's concepts, raised", "the runner-up"),
               "raise_other_class": ("a random other class's concepts, raised", "that class")}


def accuracy_table(spatial: Dict[str, Any], evaluate: Dict[str, Any], train: Dict[str, Any]) -> List[List[Any]]:
    """Top-1 and NEC of each model; where SALF-CBM's whole-image explanations were scored, how often their
    top-k concepts by contribution are true of the image, beside the CBM's (the same measure)."""
    quality = (spatial.get("concept_quality") or {}).get("precision_at_k")
    cbm_quality = ((evaluate.get("concept_quality") or {}).get("cbm") or {}).get("precision_at_k") or {}
    rows: List[List[Any]] = [["model", "test top-1", "NEC"],
                             ["SALF-CBM (concept maps, sparse final layer)", spatial["test_top1"], spatial["nec"]]]
    own = spatial.get("class_concept_model")
    if own:
        rows.append(["SALF-CBM with class concepts (the paper's Table 2 model)", own["test_top1"], own["nec"]])
    for name in ("cbm", "linear_probe"):
        if name in evaluate["test"]:
            rows.append([method_label(name, evaluate), evaluate["test"][name]["top1"],
                         train.get("nec") if name == "cbm" else None])
    if quality:
        rows[0].append(f"its top {quality['k']} concepts by contribution, true of the image")
        rows[1].append(quality["by_contribution"])
        for row in rows[2:]:
            same = row[0] == method_label("cbm", evaluate) and cbm_quality.get("k") == quality["k"]  # the same k only
            row.append(cbm_quality.get("by_contribution") if same else None)
    return rows


def heatmap_table(spatial: Dict[str, Any]) -> List[List[Any]]:
    pointing = spatial.get("pointing_game", {})
    rows: List[List[Any]] = [["heatmap", "pixel accuracy", "mIoU", "mAP", "AP of the object alone",
                              "pointing game (chance 0.25)"]]
    order = {m: i for i, m in enumerate(HEATMAP_LABELS)}
    for method, s in sorted(spatial["heatmaps"].items(), key=lambda kv: order.get(kv[0], len(order))):
        rows.append([HEATMAP_LABELS.get(method, method), s["pixel_accuracy"], s["miou"], s["map"],
                     s.get("map_foreground"), pointing.get(method)])
    return rows


def ea_table(ea: Dict[str, Any]) -> List[List[Any]]:
    """Each ranking's precision; beside it, where measured, the same ranking among the attribute words only
    (a diagnostic with an oracle vocabulary: do the maps see the object's attributes at all?)."""
    key = next(k for k in ea if k.startswith("precision_at_") and not k.endswith("_only"))
    words = ea.get(f"{key}_attribute_words_only")
    head = ["ranking", key.replace("_", " ")] + (["the same, among the attribute words only (a diagnostic)"]
                                                 if words else [])
    return [head, *[[EA_LABELS.get(m, m), v] + ([words.get(m)] if words else []) for m, v in ea[key].items()]]


SD_RANGE = 3.0  # concept maps are drawn from -3 to +3 standard deviations


def panels_figure(panels: Dict[str, np.ndarray], path: Path, limit: int = 8) -> Path:
    """One row per image: image, true class-object mask, the top concepts' maps, class heatmap, Grad-CAM."""
    n = min(limit, len(panels["rows"]))
    k = panels["concepts"].shape[1]
    has_cam = "gradcam" in panels
    cols = 3 + k + has_cam
    concepts, classes = panels["concept_names"], panels["class_names"]
    fig, axes = plt.subplots(n, cols, figsize=(1.45 * cols, 1.55 * n), squeeze=False)
    for r in range(n):
        image = panels["images"][r]
        cells = [("image", image, None), ("class object", panels["masks"][r], "gray")]
        cells += [(str(concepts[c]), panels["concept_maps"][r, j], "sd") for j, c in enumerate(panels["concepts"][r])]
        cells.append((f"pred: {classes[panels['predictions'][r]]}", panels["class_heatmaps"][r], "magma"))
        if has_cam:
            cells.append(("Grad-CAM", panels["gradcam"][r], "magma"))
        for ax, (title, data, cmap) in zip(axes[r], cells):
            if cmap in ("magma", "sd"):  # concept maps on one scale (standard deviations); the others each their own
                ax.imshow(image)
                ax.imshow(np.asarray(data, dtype=np.float32), cmap="magma", alpha=0.6,
                          **(dict(vmin=-SD_RANGE, vmax=SD_RANGE) if cmap == "sd" else {}))
            else:
                ax.imshow(data, cmap=cmap)
            ax.set_title(title if r == 0 or cmap in ("magma", "sd") else "", fontsize=6)
            ax.set_axis_off()
        axes[r][0].set_title(f"true: {classes[panels['labels'][r]]}", fontsize=6)
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    bar = fig.colorbar(ScalarMappable(Normalize(-SD_RANGE, SD_RANGE), "magma"), ax=axes, fraction=0.015, pad=0.01)
    bar.set_label("concept maps (sd)", fontsize=6)  # the section's text says what the scale means
    bar.ax.tick_params(labelsize=6)
    return _save(fig, path)


def spatial_sections(spatial: Dict[str, Any], spatial_train: Dict[str, Any], evaluate: Dict[str, Any],
                     train: Dict[str, Any], panels_path: Path, tmp: Path) -> List[Section]:
    sections = [Section("SALF-CBM: accuracy on the same test images",
                        f"{spatial['test_images']} test images. SALF-CBM's concept maps come from the backbone's "
                        f"unpooled feature maps, taught by CLIP's similarities to ringed copies (cubic cosine "
                        f"{spatial_train['cos3']} on train).", table=accuracy_table(spatial, evaluate, train))]
    if "heatmaps" not in spatial:
        return sections
    sections.append(Section(
        "SALF-CBM: heatmaps against the true class object's mask",
        f"On the {spatial['heatmap_images']} of {spatial['prompted_test_images']} test images whose class the class "
        "object alone decides (classes whose rule names the background have evidence off the object too), each "
        "heatmap of the true class binarised at its mean and scored against the mask of the class object by the "
        "protocol of the paper's Table 2, Chefer et al.'s: pixel accuracy and mIoU (foreground and background) pooled "
        "over the images, mAP per image over foreground and background ranked together, which the background, most "
        "of each image, dominates; beside it, the AP of the object alone. The pointing game, on every class: 2 x 2 "
        "mosaics of four classes, the share of each class's positive heatmap mass inside its own cell.",
        table=heatmap_table(spatial)))
    ea = spatial["explain_anything"]
    sections.append(Section(
        "SALF-CBM: Explain Anything",
        f"{ea['regions']} boxes, each around one object; the region's top concepts (Σ region x concept map) against "
        "that object's own attributes (colour, shape, texture; never the background)." + "".join(
            f" SALF-CBM on the {kind.replace('_', ' ')}s: {v}." for kind, v in (ea.get("salf_cbm_by_object") or {}).items()),
        table=ea_table(ea)))
    edit = spatial["local_edit"]
    units = "raw map units (the paper's c[m] + βI)" if edit.get("units") == "raw" else "standard deviations"
    sections.append(Section(
        "SALF-CBM: local editing",
        f"Concepts lowered or raised by β = {edit['beta']} {units} inside the box of the class object, on "
        f"{edit['images']} test images; each edit is meant to give one class: the runner-up, or (the last) a random "
        "other class.",
        table=[["edit", "meant to give", "prediction became it", "prediction changed"],
               *[[EDIT_LABELS[name][0], EDIT_LABELS[name][1], edit[name]["to_intended"], edit[name]["changed"]]
                 for name in EDIT_LABELS if name in edit]]))
    if panels_path.exists():
        with np.load(panels_path) as npz:
            panels = {k: npz[k] for k in npz.files}
        panels_figure(panels, tmp / "figures" / "spatial_panels.png")
        sections.append(Section("SALF-CBM: heatmap panels", "Each row: the image, the true class object's mask, the "
                                "maps of the concepts contributing most to the prediction, the class heatmap and "
                                "Grad-CAM of the black box. Concept maps share one colour scale, from −3 to +3 standard "
                                "deviations of the concept on train (the bar); the class heatmap and Grad-CAM are each "
                                "drawn from their own minimum to maximum.", figures=["figures/spatial_panels.png"]))
    return sections
