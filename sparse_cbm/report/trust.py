"""The report's answer to "can I trust these explanations?": concept metrics side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

import pandas as pd

from sparse_cbm.report import figures
from sparse_cbm.report.page import Section


def _gain(summary: Dict[str, Any]) -> Optional[float]:
    return next((v for k, v in (summary.get("intervention") or {}).items() if k.startswith("gain_at_")), None)


def model_table(quality: Dict[str, Any]) -> List[List[Any]]:
    labels = quality.get("models", {})
    k = next(iter(v["precision_at_k"]["k"] for n, v in quality.items() if n != "models"))
    rows: List[List[Any]] = [["model", "concept AUROC", f"precision@{k} by activation",
                              f"precision@{k} by weight x activation", f"precision@{k} of a random ranking",
                              "intervention gain at k = 5", "deletion AUC (random order)"]]
    for name, s in quality.items():
        if name == "models":
            continue
        deletion = s.get("deletion")
        rows.append([labels.get(name, name), s["auroc"], s["precision_at_k"]["by_activation"],
                     s["precision_at_k"].get("by_contribution"), s["precision_at_k"]["random_ranking"], _gain(s),
                     None if deletion is None else f"{deletion['auc']:.4f} ({deletion['random_order_auc']:.4f})"])
    return rows


def compare_table(compare: Dict[str, Any]) -> List[List[Any]]:
    rows: List[List[Any]] = [["objective", "form", "final layer", "test top-1 (random concepts)", "concept AUROC",
                              "precision@3 by weight x activation", "NEC", "ANEC-5 (random concepts)",
                              "intervention gain at k = 5"]]
    for r in compare["configs"]:
        def pair(key):
            value, control = r.get(key), r.get(f"random_concepts_{key}")
            if value is None:
                return None
            return f"{value:.4f}" + (f" ({control:.4f})" if control is not None else "")
        rows.append([r["objective"], r["form"], r["final_layer"], pair("top1"), r.get("auroc"),
                     (r.get("precision_at_k") or {}).get("by_contribution"), r["nec"],
                     f"{r['anec5']:.4f}" + (f" ({r['random_concepts_anec5']:.4f})"
                                            if r.get("random_concepts_anec5") is not None else ""), _gain(r)])
    return rows


def trust_sections(metrics: Dict[str, Any], compare: Optional[Dict[str, Any]], evaluation: Path,
                   plots: Path, tmp: Path) -> List[Section]:
    """The sections, their figures drawn into ``tmp/figures``; none when nothing is annotated."""
    quality = metrics.get("concept_quality")
    if not quality:
        return []
    labels = quality.get("models", {})
    figs = []
    intervention = pd.read_csv(plots / "intervention.csv")
    if "cbm" in intervention:
        figures.curves(intervention, "k", {"cbm": labels.get("cbm", "CBM")}, tmp / "figures/intervention.png",
                       "k: concepts of each image set to their annotated value (most wrong first)",
                       "test accuracy", "Intervention: correcting the bottleneck's most wrong concepts")
        figs.append("figures/intervention.png")
    deletion = pd.read_csv(plots / "deletion.csv")
    if "cbm_by_contribution" in deletion:
        figures.curves(deletion, "step", {"cbm_by_contribution": "by contribution (the explanation's order)",
                                          "cbm_random": "in a random order"}, tmp / "figures/deletion.png",
                       "concepts removed", "probability of the predicted class",
                       "Deletion: does the decision rest on the concepts the explanation names?")
        figs.append("figures/deletion.png")
    auroc = pd.read_csv(evaluation / "concept_auroc.csv")
    if len(auroc):
        figures.concept_auroc(auroc, labels, tmp / "figures/concept_auroc.png")
        figs.append("figures/concept_auroc.png")
    annotated = next(v["annotated_concepts"] for n, v in quality.items() if n != "models")
    sections = [Section(
        "Can I trust these explanations?",
        f"{annotated} of the bottleneck's {metrics['concepts']} concepts match an annotated attribute of the "
        f"{metrics['dataset']} test images (same text), so for them the truth is known. Concept AUROC: how well "
        "each concept's activation separates the images that have it from those that do not (0.5 = chance). "
        "Precision@k: the share of an image's top concepts that are true of it (a concept without annotation "
        "counts as not true). Intervention: accuracy after setting the k concepts that disagree most with the "
        "annotation to their 5th/95th-percentile train values; the gain at k = 5. Deletion: the predicted class's "
        "probability as the top-contributing concepts are removed one by one; a low area means the decision "
        "rests on the concepts the explanation names (beside it, a random order).",
        table=model_table(quality), figures=figs)]
    if compare:
        sections.append(Section(
            "Every objective, form and final layer, and random concepts",
            "The same bottleneck trained under each objective (stage compare) in the paper's form and in the faithful "
            "one (CBL unit m tied to concept m), with the dense final layer and with the sparse one (elastic net, "
            "GLM-SAGA, NEC closest to 5). NEC: non-zero final-layer weights per class; ANEC-5: the test top-1 at the "
            "point of the sparse layer's path whose NEC is closest to 5. In brackets, the same configuration trained "
            "on as many random text embeddings: what the concepts' meaning adds is the difference.",
            table=compare_table(compare)))
    return sections
