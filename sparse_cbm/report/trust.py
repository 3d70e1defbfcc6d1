"""The report's answer to "can I trust these explanations?": concept metrics side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pandas as pd

from sparse_cbm.datasets.corruptions import CORRUPTED_TEST
from sparse_cbm.report import figures
from sparse_cbm.report.page import Section


POLICY_LABELS = {"worst_first": "most wrong first", "contribution": "most cited first", "random": "in a random order"}


def grid_records(compare: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The records of ``metrics/compare.json`` (keyed by configuration name) in the order the grid ran them."""
    return [compare["configs"][name] for name in compare["grid"]]


def ordered_gains(intervention: Optional[Dict[str, Any]]) -> List[Tuple[str, float]]:
    """(policy, gain at k = 5) in the order the run listed its policies (the JSON file sorts its keys)."""
    gains = next((v for k, v in (intervention or {}).items() if k.startswith("gain_at_")), None) or {}
    order = (intervention or {}).get("policies") or list(gains)
    return [(p, gains[p]) for p in order if p in gains]


def _gains(summary: Optional[Dict[str, Any]]) -> Optional[str]:
    """The intervention gains at k = 5 of every policy, "worst first / contribution / random"."""
    gains = ordered_gains((summary or {}).get("intervention"))
    return " / ".join(f"{v:+.4f}" for _, v in gains) if gains else None


def _policies(summary: Optional[Dict[str, Any]]) -> str:
    policies = ((summary or {}).get("intervention") or {}).get("policies") or []
    return " / ".join(POLICY_LABELS.get(p, p) for p in policies)


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
        if s.get("intervention"):
            rows[0][5] = f"intervention gain at k = 5 ({_policies(s)})"
        rows.append([labels.get(name, name), s["auroc"], s["precision_at_k"]["by_activation"],
                     s["precision_at_k"].get("by_contribution"), s["precision_at_k"]["random_ranking"], _gains(s),
                     None if deletion is None else f"{deletion['auc']:.4f} ({deletion['random_order_auc']:.4f})"])
    return rows


def compare_table(compare: Dict[str, Any]) -> List[List[Any]]:
    rows: List[List[Any]] = [["objective", "form", "final layer", "test top-1 (random concepts)", "concept AUROC",
                              "precision@3 by weight x activation", "NEC", "ANEC-5 (random concepts)",
                              "intervention gain at k = 5", "corrupted test: top-1", "corrupted test: intervention "
                              "gain at k = 5"]]
    records = grid_records(compare)
    for r in records:
        def pair(key):
            value, control = r.get(key), r.get(f"random_concepts_{key}")
            if value is None:
                return None
            return f"{value:.4f}" + (f" ({control:.4f})" if control is not None else "")
        rows.append([r["objective"], r["form"], r["final_layer"], pair("top1"), r.get("auroc"),
                     (r.get("precision_at_k") or {}).get("by_contribution"), r["nec"],
                     f"{r['anec5']:.4f}" + (f" ({r['random_concepts_anec5']:.4f})"
                                            if r.get("random_concepts_anec5") is not None else ""), _gains(r),
                     (r.get(CORRUPTED_TEST) or {}).get("top1"), _gains(r.get(CORRUPTED_TEST))])
    policies = next((_policies(r) for r in records if (r.get("intervention") or {}).get("policies")), "")
    if policies:
        rows[0][8] += f" ({policies})"
        rows[0][10] += f" ({policies})"
    return rows


def intervention_figure(plots: Path, label: str, path: Path) -> Optional[Path]:
    """The CBM's intervention curves on the corrupted test split (each policy) and on the clean one."""
    clean = pd.read_csv(plots / "intervention.csv")
    corrupted_file = plots / "intervention_corrupted.csv"
    corrupted = pd.read_csv(corrupted_file) if corrupted_file.exists() else pd.DataFrame({"k": []})
    series, frame = {}, clean[["k"]].copy()
    for policy, words in POLICY_LABELS.items():
        if f"cbm_{policy}" in corrupted:
            frame[f"corrupted_{policy}"] = corrupted[f"cbm_{policy}"].to_numpy()
            series[f"corrupted_{policy}"] = f"corrupted test, {words}"
    if "cbm_worst_first" in clean:
        frame["clean"] = clean["cbm_worst_first"]
        series["clean"] = f"clean test, {POLICY_LABELS['worst_first']}"
    if not series:
        return None
    return figures.curves(frame, "k", series, path, "k: concepts of each image checked (a wrong one is set to its "
                          "annotated value)", "accuracy", f"Intervention: {label} corrected through its concepts")


def corrupted_summary(metrics: Dict[str, Any]) -> Optional[str]:
    """One sentence: what the corruptions did to the CBM, and what checking 5 concepts gave back."""
    corrupted = metrics.get(CORRUPTED_TEST) or {}
    cbm = ((corrupted.get("concept_quality") or {}).get("cbm") or {}).get("intervention")
    if not cbm:
        return None
    how = corrupted.get("corruptions") or {}
    gains = ordered_gains(cbm)
    k = next(k for k in cbm if k.startswith("gain_at_"))[len("gain_at_"):]
    return (f"On the corrupted test split ({', '.join(how.get('kinds', []))}; severity {how.get('severity')}) the "
            f"CBM's top-1 is {corrupted['test']['cbm']['top1']:.4f} (clean: {metrics['test']['cbm']['top1']:.4f}); "
            f"checking {k} concepts of each image gains " +
            ", ".join(f"{v:+.4f} ({POLICY_LABELS.get(p, p)})" for p, v in gains) + ".")


def trust_sections(metrics: Dict[str, Any], compare: Optional[Dict[str, Any]], evaluation: Path,
                   plots: Path, tmp: Path) -> List[Section]:
    """The sections, their figures drawn into ``tmp/figures``; none when nothing is annotated."""
    quality = metrics.get("concept_quality")
    if not quality:
        return []
    labels = quality.get("models", {})
    figs = []
    if intervention_figure(plots, labels.get("cbm", "CBM"), tmp / "figures/intervention.png"):
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
        "counts as not true). Intervention (Koh et al. 2020): each image's concepts are checked in an order (most "
        "wrong by the annotation first; most cited by the explanation first; at random), and a checked concept that "
        "contradicts the annotation is set to its 5th/95th-percentile train value; the accuracy after k checks, and "
        "the gain at k = 5. It is measured on the clean test split and on a corrupted copy (occlusion, noise, blur, "
        "colour shift), where concepts go wrong and there is something to correct. Deletion: the predicted class's "
        "probability as the top-contributing concepts are removed one by one; a low area means the decision "
        "rests on the concepts the explanation names (beside it, a random order).",
        table=model_table(quality), figures=figs)]
    corrupted_line = corrupted_summary(metrics)
    if corrupted_line:
        sections[0].text += " " + corrupted_line
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
