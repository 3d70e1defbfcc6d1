"""Every stage takes its paths from its command line, as dvc.yaml's ``cmd`` passes them (``vars:
paths``, the one place they are written), and refuses to run without them."""

import importlib

import pytest

from sparse_cbm_app.cli.pipeline import resolved_dvc_yaml
from tests.conftest import REPO
from tests.unit.stages import stage_argv

STAGES = [s for s in resolved_dvc_yaml(REPO)["stages"] if s != "report"]  # report: test_report.py runs it


class Parsed(Exception):
    """Raised where the stage would load its params: its arguments were accepted."""


@pytest.mark.parametrize("stage", STAGES)
def test_the_stage_accepts_the_arguments_dvc_yaml_gives_it_and_needs_them(stage, monkeypatch):
    module = importlib.import_module(f"stages.{stage}")

    def parsed():
        raise Parsed

    # where the stage loads its params: stage_params, or (check_params, which sizes no thread pool) load_params
    monkeypatch.setattr(module, "stage_params" if hasattr(module, "stage_params") else "load_params", parsed)
    with pytest.raises(Parsed):
        module.main(stage_argv(stage))
    with pytest.raises(SystemExit) as exc:
        module.main([])
    assert exc.value.code == 2


def test_every_template_in_dvc_yaml_names_a_path_of_its_vars():
    spec = resolved_dvc_yaml(REPO)
    assert "${" not in str(spec)
