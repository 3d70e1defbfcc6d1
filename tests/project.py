"""Copy this project into a temporary git repository and drive DVC there."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from sparse_cbm_app.cli.repo import dvc, env_for_children, run  # noqa: F401 (the tests' run and dvc)
from tests.conftest import REPO


def project_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    return [f for f in out.splitlines() if (REPO / f).is_file()]


def env() -> dict:
    """What the project's commands run with: ``sparse-cbm verify``'s environment for its children, offline
    (``tests/conftest.py`` sets the offline variables in this process)."""
    return env_for_children()


def copy_project(dest: Path) -> Path:
    """A fresh git repository holding this project's files (the defaults run the embedded offline world)."""
    for rel in project_files():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, target)
    run(["git", "init", "-q"], dest)
    run(["git", "config", "user.name", "test"], dest)
    run(["git", "config", "user.email", "test@example.invalid"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-qm", "test project"], dest)
    return dest


QUICK = "quick"  # params/quick.yaml: the embedded world on 800 train and 320 test images (of 6,000 and 2,400), about two minutes a `dvc repro`


def copy_quick_project(dest: Path) -> Path:
    """``copy_project`` with the ``quick`` profile applied and committed: what the pipeline tier runs, so that a
    `dvc repro` takes minutes. Its numbers are not the committed results (those are checked in
    tests/unit/test_committed_results.py, and `sparse-cbm verify` proves they reproduce)."""
    copy_project(dest)
    run([sys.executable, "-m", "sparse_cbm_app.cli", "params", "apply", QUICK], dest)
    run(["git", "commit", "-qam", f"params: the {QUICK} profile"], dest)
    return dest


def copy_reproduced(source: Path, dest: Path) -> Path:
    """A copy of a project that has run (``tests.conftest.reproduced``): its files, git history, outputs and
    DVC cache, so that `dvc repro` there reruns only what a test changes."""
    shutil.copytree(source, dest, symlinks=True)
    return dest
