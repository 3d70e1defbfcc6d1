"""The results blocks of ``README.md`` and ``docs/results.md``, made from the committed
``metrics/*.json`` (the intervention curves from ``plots/evaluate/``); ``sparse_cbm_app.cli.docs`` fills
them in between their ``<!-- generated:NAME ... -->`` lines.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List

from sparse_cbm.datasets.corruptions import CORRUPTED_TEST
from sparse_cbm.errors import DocsError
from sparse_cbm.spatial.names import HEATMAP_LABELS


def _f(x: float | None) -> str:
    return "–" if x is None else f"{x:.4f}"


def _g(x: float) -> str:
    return f"{x:g}"


def _metrics(root: Path, name: str) -> dict:
    path = root / "metrics" / name
    if not path.is_file():
        raise DocsError(f"{path} not found: the results tables are made from the committed metrics (dvc repro).")
    return json.loads(path.read_text(encoding="utf-8"))


def _compare_row(compare: dict, loss: str, form: str, final_layer: str) -> dict:
    from sparse_cbm.report.trust import grid_records

    for c in grid_records(compare):
        if (c["loss"], c["form"], c["final_layer"]) == (loss, form, final_layer):
            return c
    raise DocsError(f"metrics/compare.json has no configuration {loss}, {form}, {final_layer} (see compare.* in "
                    f"params.yaml).")


def headline_block(root: Path) -> str:
    ev, compare, spatial = _metrics(root, "evaluate.json"), _metrics(root, "compare.json"), _metrics(root, "spatial.json")
    train = _metrics(root, "train.json")
    quality, paper = ev["concept_quality"], _compare_row(compare, "l1", "paper", "dense")
    lines = [f"Test split of the default world ({ev['num_classes']} classes, {ev['test_images']:,} images, "
             f"{ev['concepts']} concepts; chance {1 / ev['num_classes']:.2f}), from `metrics/evaluate.json`:", "",
             "| method | test top-1 |", "|---|---|"]
    lines += [f"| {label} | {_f(ev['test'][key]['top1'])} |" for key, label in ev["methods"].items()]
    cbm = quality["cbm"]
    at_k, p_at_k = cbm["precision_at_k"], paper["precision_at_k"]
    sentences = (
        f"The default CBM (`loss: {train['loss']}`, {train['form']} form, {train['final_layer']} final layer) "
        f"uses {_g(train['nec'])} concepts per class (NEC). Concept AUROC of its units: {_f(cbm['auroc'])} "
        f"(CLIP's own concept scores: {_f(quality['clip_scores']['auroc'])}); its top-{at_k['k']} concepts by "
        f"contribution are true {_f(at_k['by_contribution'])} of the time (a random ranking: "
        f"{_f(at_k['random_ranking'])}).",
        *_corrupted_sentence(ev),
        f"The paper's form (`params/paper.yaml`: l1, dense layer; `metrics/compare.json`): top-1 "
        f"{_f(paper['top1'])}, concept AUROC {_f(paper['auroc'])}, precision@{p_at_k['k']} "
        f"{_f(p_at_k['by_contribution'])}.",
        f"SALF-CBM (`metrics/spatial.json`): top-1 {_f(spatial['test_top1'])} at NEC {_g(spatial['nec'])}, "
        + (f"precision@{q['k']} {_f(q['by_contribution'])}, " if (q := (spatial.get("concept_quality") or {})
                                                                 .get("precision_at_k")) else "")
        + f"grid pointing game {_f(spatial['pointing_game']['salf_cbm'])} (chance 0.25).")
    lines += ["", " ".join(sentences)]
    return "\n".join(lines)


def _corrupted_sentence(ev: dict) -> List[str]:
    """The headline's line on interventions, where the run has a corrupted test split."""
    bad = (ev.get(CORRUPTED_TEST) or {}).get("concept_quality", {}).get("cbm", {}).get("intervention")
    if not bad:
        return []
    from sparse_cbm.report.trust import POLICY_LABELS, ordered_gains

    said = ", ".join(f"{v:+.4f} ({POLICY_LABELS.get(p, p)})" for p, v in ordered_gains(bad))
    kinds = ", ".join(ev[CORRUPTED_TEST]["corruptions"]["kinds"])
    return [f"On a corrupted copy of the test split ({kinds}) its top-1 falls to {_f(bad['accuracy_at_0'])}; "
            f"checking 5 concepts of each image and correcting the wrong ones gains {said} "
            f"([interventions](docs/results.md#interventions))."]


def methods_block(root: Path) -> str:
    ev = _metrics(root, "evaluate.json")
    lines = ["| method | test top-1 | test top-5 | test macro F1 | val top-1 |", "|---|---|---|---|---|"]
    for key, label in ev["methods"].items():
        t, v = ev["test"][key], ev["val"][key]
        extra = f" (C = {_g(t['C'])})" if "C" in t else ""
        lines.append(f"| {label}{extra} | {_f(t['top1'])} | {_f(t['top5'])} | {_f(t['macro_f1'])} | {_f(v['top1'])} |")
    return "\n".join(lines)


def quality_block(root: Path) -> str:
    ev, train = _metrics(root, "evaluate.json"), _metrics(root, "train.json")
    q = ev["concept_quality"]
    clip, cbm = q["clip_scores"], q["cbm"]
    k = cbm["precision_at_k"]["k"]
    lines = [f"| | concept AUROC | precision@{k} by activation | precision@{k} by weight × activation | "
             f"precision@{k} of a random ranking |", "|---|---|---|---|---|",
             f"| {q['models']['clip_scores']} | {_f(clip['auroc'])} | {_f(clip['precision_at_k']['by_activation'])} "
             f"| | {_f(clip['precision_at_k']['random_ranking'])} |",
             f"| {q['models']['cbm']} | {_f(cbm['auroc'])} | {_f(cbm['precision_at_k']['by_activation'])} | "
             f"{_f(cbm['precision_at_k']['by_contribution'])} | {_f(cbm['precision_at_k']['random_ranking'])} |",
             "",
             f"{q['models']['cbm']}: intervention accuracy {_f(cbm['intervention']['accuracy_at_0'])} at k = 0, "
             f"gain at k = 5 {_gains(cbm['intervention'])}; deletion AUC {_f(cbm['deletion']['auc'])} "
             f"against {_f(cbm['deletion']['random_order_auc'])} in a random order "
             f"({cbm['deletion']['steps']} steps). Training (`metrics/train.json`): epoch {train['kept_epoch']} of "
             f"{train['epochs_run']} kept, train top-1 {_f(train['train_top1'])}, val top-1 {_f(train['val_top1'])}; "
             f"the concepts carrying 90% of an image's activation: {_g(train['val_concepts_for_90pct_mass'])} of "
             f"{train['units']} (val); sparsity of the test activations: "
             f"{_g(ev['sparsity']['cbl_concepts_for_90pct_mass'])} concepts."]
    return "\n".join(lines)


def compare_block(root: Path) -> str:
    compare = _metrics(root, "compare.json")
    lines = ["| objective | form | final layer | test top-1 | top-1, random concepts | concept AUROC | "
             "precision@3 by weight × activation | NEC | ANEC-5 (random concepts) | intervention gain at k = 5 | "
             "corrupted test: top-1 | corrupted test: intervention gain at k = 5 |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    from sparse_cbm.report.trust import POLICY_LABELS, grid_records

    records = grid_records(compare)
    for c in records:
        lines.append(f"| {c['loss']} | {c['form']} | {c['final_layer']} | {_f(c['top1'])} | "
                     f"{_f(c['random_concepts_top1'])} | {_f(c['auroc'])} | "
                     f"{_f(c['precision_at_k']['by_contribution'])} | {_g(c['nec'])} | {_f(c['anec5'])} "
                     f"({_f(c['random_concepts_anec5'])}) | {_gains(c['intervention'])} | "
                     f"{_f(c.get(CORRUPTED_TEST, {}).get('top1'))} | "
                     f"{_gains(c.get(CORRUPTED_TEST, {}).get('intervention'))} |")
    listed = next((c["intervention"]["policies"] for c in records if c.get("intervention")), [])
    policies = " / ".join(POLICY_LABELS.get(p, p) for p in listed) or "none (no annotations)"
    return "\n".join(lines) + f"\n\nIntervention gains: {policies}."


def _gains(intervention) -> str:
    """Gains at k = 5 of every policy, "a / b / c"."""
    from sparse_cbm.report.trust import ordered_gains

    gains = ordered_gains(intervention)
    return " / ".join(f"{v:+.4f}" for _, v in gains) if gains else "–"


def interventions_block(root: Path) -> str:
    """The default CBM's intervention curves on both test splits, at a few k, per policy."""
    import pandas as pd

    from sparse_cbm.report.trust import POLICY_LABELS

    ev = _metrics(root, "evaluate.json")
    corrupted = ev.get(CORRUPTED_TEST)
    if not corrupted:
        return "No corrupted test split in this run (`dataset.corrupted_test` is null)."
    how = corrupted["corruptions"]
    clean = pd.read_csv(root / "plots/evaluate/intervention.csv")
    bad = pd.read_csv(root / "plots/evaluate/intervention_corrupted.csv")
    ks = [k for k in (0, 1, 2, 3, 5, 10) if k < len(bad)]
    lines = [f"Corrupted test split: {', '.join(how['kinds'])}, one an image in turn, severity {how['severity']}. "
             f"Top-1 there: " + ", ".join(f"{ev['methods'][m]} {_f(r['top1'])}" for m, r in corrupted["test"].items())
             + ".", "",
             "| split | order | " + " | ".join(f"k = {k}" for k in ks) + " |", "|---|---|" + "---|" * len(ks)]
    for split, frame in (("clean", clean), ("corrupted", bad)):
        for policy, label in POLICY_LABELS.items():
            column = f"cbm_{policy}"
            if column in frame:
                lines.append(f"| {split} | {label} | " + " | ".join(_f(frame[column][k]) for k in ks) + " |")
    return "\n".join(lines)


def spatial_block(root: Path) -> str:
    m, ev = _metrics(root, "spatial.json"), _metrics(root, "evaluate.json")
    h, pg, ea = m["heatmaps"], m["pointing_game"], m["explain_anything"]["precision_at_3"]
    cols = [c for c in HEATMAP_LABELS if c in h or c in ("salf_cbm", "gradcam_probe")]  # the evaluation's order
    own = m.get("class_concept_model")

    def row(label: str, values: Dict[str, str]) -> str:
        return f"| {label} | " + " | ".join(values.get(c, "") for c in cols) + " |"

    lines = [f"Top-1 on all {m['test_images']:,} test images; heatmaps on the {m['heatmap_images']} of the "
             f"{m['prompted_test_images']} prompted test images whose class the object alone decides; the pointing "
             f"game on every class; from `metrics/spatial.json`:", "",
             "| | " + " | ".join(HEATMAP_LABELS[c] for c in cols) + " |", "|---|" + "---|" * len(cols),
             row("test top-1", {"salf_cbm": f"{_f(m['test_top1'])} (NEC {_g(m['nec'])})",
                                "gradcam_probe": _f(ev["test"]["linear_probe"]["top1"]),
                                **({"class_concept_maps": f"{_f(own['test_top1'])} (NEC {_g(own['nec'])})"}
                                   if own else {})})]
    quality = (m.get("concept_quality") or {}).get("precision_at_k")
    if quality:  # the CBM's explanations scored the same way (evaluate.json), for scale
        at_k = ((ev.get("concept_quality") or {}).get("cbm") or {}).get("precision_at_k", {})
        cbm = at_k.get("by_contribution") if at_k.get("k") == quality["k"] else None  # the same k only
        lines.append(row(f"whole image: its top {quality['k']} concepts by contribution true of it"
                         + (f" (the CBM's: {_f(cbm)})" if cbm is not None else ""),
                         {"salf_cbm": _f(quality["by_contribution"])}))
    for key, label in (("pixel_accuracy", "heatmap pixel accuracy (Chefer et al.'s protocol)"),
                       ("miou", "heatmap mIoU (pooled, Chefer's)"),
                       ("map", "heatmap mAP (object and background, Chefer's)"),
                       ("map_foreground", "heatmap AP of the object alone (ours)")):
        lines.append(row(label, {c: _f(h[c][key]) for c in cols if c in h and h[c].get(key) is not None}))
    lines.append(row("grid pointing game (chance 0.25)", {c: _f(pg[c]) for c in cols if c in pg}))
    words = m["explain_anything"].get("precision_at_3_attribute_words_only")
    def only(c: str) -> str:
        return f"among the attribute words only: {_f(words[c])}"

    lines.append(row(f"Explain Anything precision@3 (random {_f(ea['random'])})",
                     {"salf_cbm": f"{_f(ea['salf_cbm'])} (whole image: {_f(ea['whole_image'])}"
                                  + (f"; {only('salf_cbm')})" if words else ")"),
                      "raw_p": _f(ea["raw_p"]) + (f" ({only('raw_p')})" if words else "")}))
    edit = m["local_edit"]
    units = "raw units" if edit.get("units") == "raw" else "sd"
    for name, label in (("lower_top_concept", "top concept lowered"),
                        ("raise_runner_up", "runner-up's concepts raised"),
                        ("raise_other_class", "a random other class's concepts raised")):
        lines.append(row(f"local edit, β = {_g(edit['beta'])} {units} in the class object's box, {label}: "
                         f"prediction became the intended class", {"salf_cbm": _f(edit[name]["to_intended"])}))
    return "\n".join(lines)
