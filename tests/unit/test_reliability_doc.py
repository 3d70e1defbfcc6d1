"""docs/reliability.md, the reliability contract: every test it names exists, so a row cannot outlive its test."""

from __future__ import annotations

import re

from tests.conftest import REPO


def named_tests() -> list[tuple[str, str]]:
    """(file, test) of every cell like ``tests/unit/x.py::test_a, ::test_b, tests/pipeline/y.py::test_c``."""
    found = []
    text = (REPO / "docs/reliability.md").read_text(encoding="utf-8")
    for cell in re.findall(r"tests/[\w/]+\.py::[^|]+", text):
        file = None
        for item in re.findall(r"(tests/[\w/]+\.py)?::(\w+)", cell):
            file = item[0] or file
            found.append((file, item[1]))
    return sorted(set(found))


def test_every_named_test_exists():
    named = named_tests()
    assert len(named) > 100
    missing = [f"{file}::{name}" for file, name in named
               if not (REPO / file).is_file() or not re.search(rf"^\s*def {name}\(", (REPO / file).read_text(),
                                                                re.MULTILINE)]
    assert not missing, missing
