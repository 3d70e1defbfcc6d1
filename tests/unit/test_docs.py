"""The documentation: generated parts up to date (`sparse-cbm docs --check`), headline numbers equal to the
committed metrics, every relative link and docs pointer leading somewhere, a short README whose test command is
the one CI runs."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from sparse_cbm_app.cli.docs import DocsError, generated, params_markdown, stale
from sparse_cbm_app.cli.main import main
from tests.conftest import REPO
from sparse_cbm.report.trust import grid_records
from sparse_cbm.spatial.names import HEATMAP_LABELS, HEATMAP_METHODS

README_LIMIT = 8500  # bytes; the README is an entry point, the rest lives under docs/
DOCS = sorted((REPO / "docs").glob("*.md"))
FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
POINTER = re.compile(r"docs/[\w.-]+\.md(?:#[\w-]+)?")
CODE_PATH = re.compile(r"`((?:tests|sparse_cbm|stages|bench)/[\w/.-]+\.py)(?:::\w+)?`")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set:
    seen: dict = {}
    out = set()
    for line in FENCE.sub("", path.read_text(encoding="utf-8")).splitlines():
        match = re.match(r"#{1,6} (.+)", line)
        if match:
            base = slug(match.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def broken(target: str, source: Path) -> str | None:
    """Why a relative link from ``source`` leads nowhere, or None."""
    if re.match(r"[a-z]+:", target):  # https:, mailto:
        return None
    file, _, anchor = target.partition("#")
    dest = (source.parent / file).resolve() if file else source
    if not dest.exists():
        return f"{source.relative_to(REPO)}: {target} (no file {file})"
    if anchor and dest.suffix == ".md" and anchor not in anchors(dest):
        return f"{source.relative_to(REPO)}: {target} (no heading #{anchor} in {dest.relative_to(REPO)})"
    return None


def broken_links(path: Path) -> list:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    return [why for target in LINK.findall(text) if (why := broken(target, path))]


def code_blocks(text: str) -> list:
    return [block.split("\n", 1)[1].rsplit("```", 1)[0].strip("\n") for block in FENCE.findall(text)]


# ---------------------------------------------------------------------------------------------- generated


def test_the_committed_params_reference_is_what_the_schema_generates():
    assert (REPO / "docs/params.md").read_text(encoding="utf-8") == params_markdown(), (
        "docs/params.md is stale: run `sparse-cbm docs` and commit it")


def test_no_generated_doc_is_stale():
    assert stale(REPO) == [], "run `sparse-cbm docs` and commit what it writes"


def test_every_params_key_is_in_the_reference():
    import yaml

    def keys(d, prefix=""):  # leaves, and concepts.llm.prompts (a mapping the user fills) as one key
        for k, v in d.items():
            key = f"{prefix}{k}"
            yield from keys(v, f"{key}.") if isinstance(v, dict) and key != "concepts.llm.prompts" else [key]

    reference = (REPO / "docs/params.md").read_text(encoding="utf-8")
    missing = [k for k in keys(yaml.safe_load((REPO / "params.yaml").read_text())) if f"| `{k}` |" not in reference]
    assert not missing


def docs_copy(tmp_path: Path) -> Path:
    for name in ("README.md", "docs", "metrics", "plots"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, tmp_path / name)
    return tmp_path


def test_check_names_the_files_a_moved_metric_makes_stale_and_docs_rewrites_them(tmp_path, monkeypatch, capsys):
    root = docs_copy(tmp_path)
    monkeypatch.chdir(root)
    assert main(["docs", "--check"]) == 0
    metrics = json.loads((root / "metrics/evaluate.json").read_text())
    metrics["test"]["cbm"]["top1"] = 0.1234
    (root / "metrics/evaluate.json").write_text(json.dumps(metrics))
    capsys.readouterr()
    assert main(["docs", "--check"]) == 1
    err = capsys.readouterr().err
    assert "README.md is stale" in err and "docs/results.md is stale" in err and "params.md" not in err
    assert main(["docs"]) == 0 and main(["docs", "--check"]) == 0
    assert "| CBM (l1) | 0.1234 |" in (root / "README.md").read_text()


def test_a_changed_description_makes_the_params_reference_stale(monkeypatch):
    from sparse_cbm_app.params import Params

    monkeypatch.setattr(Params.model_fields["seed"], "description", "a changed description")
    assert "docs/params.md" in stale(REPO)


def test_a_params_field_without_a_description_is_refused(monkeypatch):
    from sparse_cbm.bottleneck.config import TrainParams

    monkeypatch.setattr(TrainParams.model_fields["epochs"], "description", None)
    with pytest.raises(DocsError, match="'train.epochs' has no description"):
        params_markdown()


def test_a_missing_generated_block_is_named(tmp_path):
    root = docs_copy(tmp_path)
    text = (root / "docs/results.md").read_text()
    (root / "docs/results.md").write_text(re.sub(r"<!-- generated:compare (begin|end)[^>]*-->\n?", "", text))
    with pytest.raises(DocsError, match="docs/results.md: no generated block compare"):
        generated(root)


# ---------------------------------------------------------------------------------------- numbers = metrics


def committed(name: str) -> dict:
    return json.loads((REPO / "metrics" / name).read_text())


def table_rows(text: str, header_start: str) -> list:
    """The cells of each row of the first table whose header starts with ``header_start``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def test_the_readme_headline_numbers_are_the_committed_metrics():
    evaluate, spatial = committed("evaluate.json"), committed("spatial.json")
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    rows = dict(table_rows(readme, "| method | test top-1 |"))
    assert rows == {label: f"{evaluate['test'][key]['top1']:.4f}" for key, label in evaluate["methods"].items()}
    auroc = evaluate["concept_quality"]["cbm"]["auroc"]
    assert f"Concept AUROC of its units: {auroc:.4f}" in readme
    assert f"SALF-CBM (`metrics/spatial.json`): top-1 {spatial['test_top1']:.4f}" in readme


def test_the_results_tables_are_the_committed_metrics():
    results = (REPO / "docs/results.md").read_text(encoding="utf-8")
    grid = table_rows(results, "| objective | form | final layer |")
    configs = grid_records(committed("compare.json"))
    assert [row[:3] for row in grid] == [[c["loss"], c["form"], c["final_layer"]] for c in configs]
    assert [row[3] for row in grid] == [f"{c['top1']:.4f}" for c in configs]
    assert [row[5] for row in grid] == [f"{c['auroc']:.4f}" for c in configs]
    methods = table_rows(results, "| method | test top-1 | test top-5 |")
    evaluate = committed("evaluate.json")
    assert [row[1] for row in methods] == [f"{evaluate['test'][k]['top1']:.4f}" for k in evaluate["methods"]]
    spatial = table_rows(results, f"| | {HEATMAP_LABELS['salf_cbm']} |")
    heatmaps = committed("spatial.json")["heatmaps"]
    miou = next(row for row in spatial if row[0].startswith("heatmap mIoU"))
    assert miou[1:] == [f"{heatmaps[m]['miou']:.4f}" for m in HEATMAP_METHODS if m in heatmaps]
    quality = committed("spatial.json")["concept_quality"]["precision_at_k"]
    explained = next(row for row in spatial if row[0].startswith("whole image: its top"))
    assert explained[1] == f"{quality['by_contribution']:.4f}"


def test_the_readme_salf_table_is_the_docs_table_and_names_params_that_exist():
    import yaml

    readme = table_rows((REPO / "README.md").read_text(encoding="utf-8"), "| # | point | paper | ours (default) |")
    docs = table_rows((REPO / "docs/salf-cbm.md").read_text(encoding="utf-8"), "| # | point | paper | release |")
    assert [row[0] for row in readme] == [row[0] for row in docs] == [str(i) for i in range(1, len(docs) + 1)]
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    for row in readme:
        for name in re.findall(r"`([a-z_]+(?:\.[a-z_]+)+)`", row[4]):
            node = params
            for key in name.split("."):
                assert isinstance(node, dict) and key in node, f"README SALF row {row[0]}: no param {name}"
                node = node[key]
            assert f"`{name}`" in docs[int(row[0]) - 1][5], f"row {row[0]}: {name} not in docs/salf-cbm.md's row"
        assert (row[4] == "open") == (docs[int(row[0]) - 1][5] == "none yet"), f"row {row[0]}: open in one table only"


# ---------------------------------------------------------------------------------------------------- links


@pytest.mark.parametrize("path", [REPO / "README.md", *DOCS], ids=lambda p: p.name)
def test_every_relative_link_resolves(path):
    assert broken_links(path) == []


def test_every_docs_pointer_in_the_code_and_params_resolves():
    sources = [*REPO.glob("sparse_cbm/**/*.py"), *REPO.glob("stages/*.py"), *REPO.glob("bench/*.py"),
               REPO / "params.yaml", *REPO.glob("params/*.yaml"), REPO / "dvc.yaml"]
    bad = [f"{src.relative_to(REPO)}: {why}" for src in sources
           for pointer in POINTER.findall(src.read_text(encoding="utf-8"))
           if (why := broken(pointer, REPO / "x"))]
    assert bad == []


def test_every_code_path_the_docs_name_exists():
    missing = [f"{path.name}: {p}" for path in [REPO / "README.md", *DOCS]
               for p in CODE_PATH.findall(path.read_text(encoding="utf-8"))
               if not (REPO / p).exists()]
    assert missing == []


def test_the_link_check_finds_a_broken_link_and_a_missing_anchor(tmp_path, monkeypatch):
    monkeypatch.setattr(f"{__name__}.REPO", tmp_path)
    (tmp_path / "a.md").write_text("# Title\n\n## Two forms: paper and faithful\n\n```\n## not a heading\n```\n")
    page = tmp_path / "b.md"
    page.write_text("[ok](a.md#two-forms-paper-and-faithful) [gone](c.md) [anchor](a.md#not-a-heading) "
                    "[web](https://dvc.org)\n")
    assert broken_links(page) == ["b.md: c.md (no file c.md)",
                                  "b.md: a.md#not-a-heading (no heading #not-a-heading in a.md)"]


# --------------------------------------------------------------------------------------------------- README


def test_the_readme_is_short():
    size = len((REPO / "README.md").read_bytes())
    assert size <= README_LIMIT, f"README.md is {size} bytes: move material into docs/"


def test_the_readme_opens_with_the_setup_command_and_its_test_command_is_what_ci_runs():
    blocks = code_blocks((REPO / "README.md").read_text(encoding="utf-8"))
    assert blocks[0] == "python3 -m venv .venv && . .venv/bin/activate && pip install -e . && dvc repro"
    test = blocks[1]
    assert test == ('python3 -m venv .venv && . .venv/bin/activate && pip install -e ".[test]" && '
                    "DVC_NO_ANALYTICS=1 pytest")
    assert test in (REPO / ".ci/run").read_text().splitlines()
