"""The report page, in Markdown (figures as files beside it) and in self-contained HTML
(figures inlined as data URIs, no external resource; each <img> names its file)."""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

def number(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


@dataclass
class Section:
    title: str
    text: str = ""
    table: Optional[List[List[Any]]] = None  # first row: header
    figures: List[str] = field(default_factory=list)  # paths relative to the report folder
    code: Optional[str] = None


@dataclass
class Page:
    title: str
    banner: Optional[str]
    sections: List[Section]


def method_label(method: str, metrics: Dict[str, Any]) -> str:
    """The evaluate stage's name for a method (``metrics["methods"]``), the key itself otherwise."""
    return metrics.get("methods", {}).get(method, method)


def headline_table(metrics: Dict[str, Any], split: str = "test") -> List[List[Any]]:
    rows: List[List[Any]] = [["method", "top-1", "top-5", "macro F1"]]
    for method, m in metrics[split].items():
        rows.append([method_label(method, metrics), m.get("top1"), m.get("top5"), m.get("macro_f1")])
    return rows


def _md_table(table: Sequence[Sequence[Any]]) -> str:
    head, *body = table
    lines = ["| " + " | ".join(str(h) for h in head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(number(v) for v in row) + " |" for row in body]
    return "\n".join(lines)


def render_markdown(page: Page) -> str:
    out = [f"# {page.title}", ""]
    if page.banner:
        out += [f"> **{page.banner}**", ""]
    for s in page.sections:
        out += [f"## {s.title}", ""]
        if s.text:
            out += [s.text, ""]
        if s.table:
            out += [_md_table(s.table), ""]
        for fig in s.figures:
            out += [f"![{Path(fig).stem}]({fig})", ""]
        if s.code:
            out += ["```", s.code.rstrip(), "```", ""]
    return "\n".join(out)


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{font-size:1.7em;margin-bottom:.2em}h2{margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ddd;padding:.3em .7em;text-align:right}
td:first-child,th:first-child{text-align:left}th{background:#f4f6f8}
img{max-width:100%;display:block;margin:.8em 0}
pre{background:#f6f8fa;padding:.8em;overflow-x:auto;font-size:.85em}
.banner{background:#b00020;color:#fff;padding:1em;font-size:1.2em;font-weight:bold;border-radius:4px}
"""


def _html_table(table: Sequence[Sequence[Any]]) -> str:
    head, *body = table
    rows = ["<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in head) + "</tr>"]
    rows += ["<tr>" + "".join(f"<td>{html.escape(number(v))}</td>" for v in row) + "</tr>" for row in body]
    return "<table>" + "".join(rows) + "</table>"


def _inline_png(folder: Path, rel: str) -> str:
    data = base64.b64encode((folder / rel).read_bytes()).decode("ascii")
    return (f'<img src="data:image/png;base64,{data}" data-file="{html.escape(rel)}" '
            f'alt="{html.escape(Path(rel).stem)}">')


def render_html(page: Page, folder: Path) -> str:
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{html.escape(page.title)}</title><style>{CSS}</style></head><body>",
             f"<h1>{html.escape(page.title)}</h1>"]
    if page.banner:
        parts.append(f'<div class="banner">{html.escape(page.banner)}</div>')
    for s in page.sections:
        parts.append(f"<h2>{html.escape(s.title)}</h2>")
        if s.text:
            parts.append(f"<p>{html.escape(s.text)}</p>")
        if s.table:
            parts.append(_html_table(s.table))
        parts += [_inline_png(folder, fig) for fig in s.figures]
        if s.code:
            parts.append(f"<pre>{html.escape(s.code)}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def pretty_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False)
