"""``sparse-cbm docs``: the documentation that is generated, not written.

* ``docs/params.md``, the params reference, from the typed schema (``docs_params``).
* The results tables, from the committed ``metrics/*.json`` (``docs_results``): blocks between
  ``<!-- generated:NAME begin ... -->`` and ``<!-- generated:NAME end -->`` in ``README.md`` and
  ``docs/results.md``; the text around them is written by hand.

``sparse-cbm docs`` rewrites what is stale; ``sparse-cbm docs --check`` changes nothing and exits 1
naming every stale file (``tests/unit/test_docs.py`` runs the same check).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Callable, Dict, List

from sparse_cbm.errors import DocsError
from sparse_cbm_app.cli.docs_params import params_markdown
from sparse_cbm_app.cli.docs_results import (compare_block, headline_block, interventions_block, methods_block,
                                             quality_block, spatial_block)
from sparse_cbm_app.cli.exp_show import exp_show_block

__all__ = ["DocsError", "docs", "generated", "params_markdown", "stale"]

PARAMS_DOC = "docs/params.md"
RESULTS_DOC = "docs/results.md"
USAGE_DOC = "docs/usage.md"
README = "README.md"

BLOCK = re.compile(r"(?P<begin><!-- generated:(?P<name>[\w-]+) begin[^>]*-->\n)(?P<body>.*?)"
                   r"(?P<end><!-- generated:(?P=name) end -->)", re.DOTALL)


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
