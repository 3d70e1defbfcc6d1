"""The pipeline tier (`pytest -m pipeline`): tests that run `dvc repro` in temporary copies of the project
share one reproduced project."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def reproduced(tmp_path_factory):
    """The pipeline run once for the whole session (`dvc repro` in a copy of this project with the quick profile
    applied), its results committed: (folder, what `dvc repro` printed). Tests that change it work on
    `tests.project.copy_reproduced`, which copies its DVC cache too, so a test reruns only what it changes."""
    from tests.project import copy_quick_project, dvc, run

    root = copy_quick_project(tmp_path_factory.mktemp("reproduced"))
    first = dvc(["repro"], root)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "pipeline results", "--allow-empty"], root)
    return root, first
