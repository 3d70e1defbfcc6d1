"""``sparse-cbm docs``: the documentation that is generated, not written.

* ``docs/params.md``, the params reference, from the typed schema (``sparse_cbm_app.params``; its
  ``train`` section from ``sparse_cbm.bottleneck.config``): every key's path, type or choices,
  default and description. A description is written once, as the field's
  ``Field(..., description=...)``; a field without one is an error.
* The results tables, from the committed ``metrics/*.json`` (the intervention curves from
  ``plots/evaluate/``): blocks between
  ``<!-- generated:NAME begin ... -->`` and ``<!-- generated:NAME end -->`` in ``README.md`` and
  ``docs/results.md``; the text around them is written by hand.

``sparse-cbm docs`` rewrites what is stale; ``sparse-cbm docs --check`` changes nothing and exits 1
naming every stale file (``tests/unit/test_docs.py`` runs the same check).
"""

from __future__ import annotations

import json
import re
import sys
import typing
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import yaml
from pydantic import BaseModel

from sparse_cbm.datasets.corruptions import CORRUPTED_TEST
from sparse_cbm.errors import SparseCbmError
from sparse_cbm_app.cli.exp_show import exp_show_block

PARAMS_DOC = "docs/params.md"
RESULTS_DOC = "docs/results.md"
USAGE_DOC = "docs/usage.md"
README = "README.md"
# how a few types read better than their annotation (the validator decides them)
TYPE_TEXT = {"threads": "`auto` or int ≥ 1"}
BLOCK = re.compile(r"(?P<begin><!-- generated:(?P<name>[\w-]+) begin[^>]*-->\n)(?P<body>.*?)"
                   r"(?P<end><!-- generated:(?P=name) end -->)", re.DOTALL)


class DocsError(SparseCbmError):
    """Generated documentation that cannot be made: a field without a description, a missing block."""


# ---------------------------------------------------------------------------------------------- params


DOC_POINTER = re.compile(r"docs/([\w.-]+\.md)(#[\w-]+)?")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _linked(text: str) -> str:
    """A description's pointers into docs/ (``docs/methods.md#gumbel``) as links from docs/params.md."""
    return DOC_POINTER.sub(lambda m: f"[{m.group(0)}]({m.group(1)}{m.group(2) or ''})", text)


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def _bounds(metadata: list) -> str:
    lo = hi = None
    pattern = None
    for m in metadata:
        for attr, inclusive, is_low in (("gt", False, True), ("ge", True, True), ("lt", False, False),
                                        ("le", True, False)):
            if getattr(m, attr, None) is not None:
                bound = (getattr(m, attr), inclusive)
                lo, hi = (bound, hi) if is_low else (lo, bound)
        pattern = getattr(m, "pattern", None) or pattern
    if lo and hi:
        return f" in {'[' if lo[1] else '('}{lo[0]}, {hi[0]}{']' if hi[1] else ')'}"
    if lo:
        return f" {'≥' if lo[1] else '>'} {lo[0]}"
    if hi:
        return f" {'≤' if hi[1] else '<'} {hi[0]}"
    if pattern:
        return f" matching `{pattern}`"
    return ""


def type_text(annotation: Any) -> str:
    """A field's type as a reader wants it: ``one of `a`, `b```, ``float or `null```, ``list of int``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return "one of " + ", ".join(_literal(a) for a in args)
    if origin is typing.Union or (origin is not None and getattr(origin, "__name__", "") == "UnionType"):
        parts = [a for a in args if a is not type(None)]
        text = " or ".join(type_text(a) for a in parts)
        return text + " or `null`" if len(parts) < len(args) else text
    if origin in (list, List):
        inner = type_text(args[0]) if args else "any"
        return f"list, each {inner}" if inner.startswith("one of") else f"list of {inner}"
    if origin in (dict, Dict):
        return f"mapping of {type_text(args[0])} to {type_text(args[1])}"
    return getattr(annotation, "__name__", str(annotation))


def _field_type(annotation: Any, metadata: list) -> str:
    """The type with the field's bounds or pattern, which apply to the value when it is not null."""
    args = typing.get_args(annotation)
    if type(None) in args and len(args) == 2:
        inner = next(a for a in args if a is not type(None))
        return f"{type_text(inner)}{_bounds(metadata)}, or `null`"
    return type_text(annotation) + _bounds(metadata)


def default_text(value: Any) -> str:
    if isinstance(value, dict):
        return "keys " + ", ".join(f"`{k}`" for k in value)
    text = yaml.safe_dump(value, default_flow_style=True, width=10 ** 6, allow_unicode=True).strip()
    text = text.removesuffix("...").strip()
    return f"`{text}`"


def _section(annotation: Any) -> Tuple[Any, bool]:
    """(the schema section a field holds, or None; whether it may be null instead)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if len(args) == 1 and type(None) in typing.get_args(annotation) and isinstance(args[0], type) and \
            issubclass(args[0], BaseModel):
        return args[0], True
    return None, False


def _rows(model: type[BaseModel], prefix: str, defaults: dict) -> List[Tuple[str, str, str, str]]:
    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        if not field.description:
            raise DocsError(f"params key '{key}' has no description: give its field in the schema "
                            f"Field(..., description=...) (sparse_cbm_app/params.py or sparse_cbm/bottleneck/config.py).")
        annotation = field.annotation
        section, nullable = _section(annotation)
        if section is not None and defaults[name] is not None:
            rows.append((f"`{key}.*`", "section, or `null`" if nullable else "section", "", _linked(field.description)))
            rows.extend(_rows(section, f"{key}.", defaults[name]))
            continue
        kind = TYPE_TEXT.get(key) or _field_type(annotation, field.metadata)
        rows.append((f"`{key}`", kind, default_text(defaults[name]), _linked(field.description)))
    return rows


def _table(rows: List[Tuple[str, str, str, str]]) -> List[str]:
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    lines += [f"| {' | '.join(_cell(c) for c in row)} |" for row in rows]
    return lines


def params_markdown() -> str:
    """docs/params.md: one table per section of the schema."""
    from sparse_cbm_app.params import Params

    defaults = Params().model_dump(mode="json")
    top, sections = [], []
    for name, field in Params.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            sections.append((name, field, annotation))
        else:
            top.append(name)
    top_rows = [row for row in _rows(Params, "", defaults) if row[0].strip("`") in top]
    out = [
        "# Params reference",
        "",
        "<!-- Generated by `sparse-cbm docs` from the params schema (sparse_cbm_app/params.py; the `train` section:",
        "sparse_cbm/bottleneck/config.py). Do not edit: change a field's description there and rerun",
        "`sparse-cbm docs`; `sparse-cbm docs --check` fails while this file is stale. -->",
        "",
        "Every key of `params.yaml`, with its type, default and meaning. The defaults run the embedded",
        "offline world; the paper's setups are profiles under `params/` that change some of them",
        "([usage](usage.md#profiles-the-papers-setups)). How the file is validated, and how to change a",
        "key for one run: [usage](usage.md#params).",
        "",
        "Sections: [top level](#top-level) · " + " · ".join(f"[`{name}`](#{name})" for name, _, _ in sections),
        "",
        "## Top level",
        "",
        *_table(top_rows),
    ]
    for name, field, annotation in sections:
        about = _linked(field.description[0].upper() + field.description[1:])
        out += ["", f"## `{name}`", "", about + ".", "", *_table(_rows(annotation, f"{name}.", defaults[name]))]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------- results


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
    # the columns, in the evaluation's order (sparse_cbm.spatial.evaluate.HEATMAP_METHODS; a test checks it)
    labels = {"salf_cbm": "SALF-CBM", "class_concept_maps": "SALF-CBM with class concepts, the class's own map "
              "(the paper's Table 2)", "gradcam_salf_cbm": "Grad-CAM of the SALF-CBM",
              "gradcam_probe": "Grad-CAM of the black box (linear probe on CLIP)",
              "gradcampp_probe": "Grad-CAM++ of the black box", "layercam_probe": "LayerCAM of the black box",
              "raw_p": "raw P upsampled"}
    cols = [c for c in labels if c in h or c in ("salf_cbm", "gradcam_probe")]
    own = m.get("class_concept_model")

    def row(label: str, values: Dict[str, str]) -> str:
        return f"| {label} | " + " | ".join(values.get(c, "") for c in cols) + " |"

    lines = [f"Top-1 on all {m['test_images']:,} test images; heatmaps on the {m['heatmap_images']} of the "
             f"{m['prompted_test_images']} prompted test images whose class the object alone decides; the pointing "
             f"game on every class; from `metrics/spatial.json`:", "",
             "| | " + " | ".join(labels[c] for c in cols) + " |", "|---|" + "---|" * len(cols),
             row("test top-1", {"salf_cbm": f"{_f(m['test_top1'])} (NEC {_g(m['nec'])})",
                                "gradcam_probe": _f(ev["test"]["linear_probe"]["top1"]),
                                **({"class_concept_maps": f"{_f(own['test_top1'])} (NEC {_g(own['nec'])})"}
                                   if own else {})})]
    quality = (m.get("concept_quality") or {}).get("precision_at_k")
    if quality:  # the CBM's explanations scored the same way (evaluate.json), for scale
        cbm = ((ev.get("concept_quality") or {}).get("cbm") or {}).get("precision_at_k", {}).get("by_contribution")
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


BLOCKS: Dict[str, Dict[str, Callable[[Path], str]]] = {
    README: {"headline": headline_block},
    RESULTS_DOC: {"methods": methods_block, "concept-quality": quality_block, "compare": compare_block,
                  "interventions": interventions_block, "spatial": spatial_block},
    USAGE_DOC: {"exp-show": exp_show_block},
}


def fill_blocks(text: str, blocks: Dict[str, Callable[[Path], str]], root: Path, path: str) -> str:
    """``text`` with every generated block's body made again; a DocsError for a missing or unknown block."""
    found = [m.group("name") for m in BLOCK.finditer(text)]
    missing, unknown = [b for b in blocks if b not in found], [b for b in found if b not in blocks]
    if missing or unknown:
        raise DocsError(f"{path}: " + "; ".join(
            ([f"no generated block {', '.join(missing)} (add `<!-- generated:NAME begin -->` and "
              f"`<!-- generated:NAME end -->` lines where it goes)"] if missing else []) +
            ([f"unknown generated block {', '.join(unknown)} (known: {', '.join(blocks)})"] if unknown else [])) + ".")
    return BLOCK.sub(lambda m: m.group("begin") + blocks[m.group("name")](root) + "\n" + m.group("end"), text)


def generated(root: Path | str = ".") -> Dict[str, str]:
    """Every generated file's text as it should be: {relative path: text}."""
    root = Path(root)
    out = {PARAMS_DOC: params_markdown()}
    for path, blocks in BLOCKS.items():
        file = root / path
        if not file.is_file():
            raise DocsError(f"{file} not found: it holds generated blocks ({', '.join(blocks)}).")
        out[path] = fill_blocks(file.read_text(encoding="utf-8"), blocks, root, path)
    return out


def stale(root: Path | str = ".") -> List[str]:
    """The generated files whose committed text differs from what the schema and metrics give."""
    root = Path(root)
    return [path for path, text in generated(root).items()
            if not (root / path).is_file() or (root / path).read_text(encoding="utf-8") != text]


def docs(check: bool = False, root: Path | str = ".") -> int:
    root = Path(root)
    out = stale(root)
    if check:
        for path in out:
            print(f"{path} is stale: run `sparse-cbm docs` and commit it", file=sys.stderr)
        if not out:
            print("generated docs are up to date")
        return 1 if out else 0
    texts = generated(root)
    for path in out:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(texts[path], encoding="utf-8")
        print(f"wrote {path}")
    if not out:
        print("generated docs are up to date")
    return 0
