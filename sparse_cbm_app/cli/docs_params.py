"""The params reference, ``docs/params.md``, generated from the typed schema (``sparse_cbm_app.params``;
its ``train`` section from ``sparse_cbm.bottleneck.config``): every key's path, type or choices, default and
description. A description is written once, as the field's ``Field(..., description=...)``; a field
without one is an error (``sparse_cbm_app.cli.docs`` writes and checks the file).
"""

from __future__ import annotations

import re
import typing
from typing import Any, Dict, List, Tuple

import yaml
from pydantic import BaseModel

from sparse_cbm.errors import DocsError

# how a few types read better than their annotation (the validator decides them)
TYPE_TEXT = {"threads": "`auto` or int ≥ 1"}
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
