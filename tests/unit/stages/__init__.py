"""The stages' modules run in-process, each on its command line as dvc.yaml's ``cmd`` writes it."""

from typing import List

from sparse_cbm_app.cli.pipeline import stage_command
from tests.conftest import REPO


def stage_argv(stage: str) -> List[str]:
    """The arguments dvc.yaml passes ``python -m stages.<stage>`` (its paths, ``${paths.*}`` resolved)."""
    return stage_command(stage, REPO)[3:]
