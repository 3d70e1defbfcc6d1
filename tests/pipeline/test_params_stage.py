"""A bad param loses nothing: stage check_params runs first and stops the run before DVC removes any
stage's outputs (issue 20, item 2)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Dict

import pytest

from tests.project import copy_reproduced, dvc

pytestmark = pytest.mark.pipeline

KEPT = ("data", "metrics", "plots", "params/checked")   # every stage's outputs, git-tracked or DVC-cached


def outputs(root: Path) -> Dict[str, str]:
    """sha256 of every file under the outputs' folders (DVC-cached outputs are links into the cache)."""
    found = {}
    for top in KEPT:
        for path in sorted((root / top).rglob("*")):
            if path.is_file() and ".scratch" not in path.parts:
                found[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def test_bad_param_loses_nothing(reproduced, tmp_path):
    root = copy_reproduced(reproduced[0], tmp_path / "p")
    before = outputs(root)
    assert "metrics/train.json" in before and "plots/train/steps.csv" in before and "params/checked/train.json" in before
    assert any(p.startswith("data/model/") for p in before)
    proc = dvc(["exp", "run", "-S", "train.cbl.lr=abc"], root, check=False)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("check_params: error:")]
    assert len(errors) == 1 and "'train.cbl.lr'" in errors[0] and "'abc'" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert "Running stage 'train'" not in proc.stdout + proc.stderr
    assert outputs(root) == before   # no output of any stage removed or touched


def test_a_param_change_reruns_only_the_stages_that_read_it(reproduced, tmp_path):
    """check_params rewrites only the files of the stages whose params changed: a change to evaluate's
    params leaves train's file, and so train, alone."""
    root = copy_reproduced(reproduced[0], tmp_path / "p")
    params = root / "params.yaml"
    params.write_text(params.read_text().replace("batch_size: 4096", "batch_size: 2048", 1))
    assert "check_params:" in dvc(["status"], root).stdout
    dvc(["repro", "check_params"], root)
    status = dvc(["status"], root).stdout
    changed = {line[:-1] for line in status.splitlines() if line.endswith(":") and not line.startswith(("\t", " "))}
    assert changed == {"evaluate", "compare", "report"}, status   # the readers of evaluate.batch_size (and report,
                                                                   # which prints params.yaml whole)
