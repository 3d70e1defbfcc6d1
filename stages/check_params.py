"""Stage check_params: params.yaml validated before any other stage runs.

DVC removes a stage's outputs just before it runs the stage's command, so a bad value found by the stage
that reads it (``dvc exp run -S train.cbl.lr=abc``) would cost that stage's outputs, git-tracked metrics
and plots included. This stage comes first in the DAG: it reads params.yaml whole and dvc.yaml, and writes
``<out>/<stage>.json`` for every stage, the validated values of the params that stage declares. Every
stage depends on its own file, so it runs after this check and reruns only when its own params change.
Its outputs are ``persist: true`` (DVC never removes them) and each file is replaced atomically, only
after every param passed: a bad param stops the run here, with every output of every stage in place.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence

import yaml

from sparse_cbm.runtime.atomic import atomic_write_json
from sparse_cbm.runtime.runner import run_stage, stage_paths
from sparse_cbm_app.declared_params import stage_param_values
from sparse_cbm_app.params import load_params

log = logging.getLogger("stages.check_params")


def main(argv: Optional[Sequence[str]] = None) -> None:
    paths = stage_paths("check_params", argv, "dvc_yaml", "out")
    params = load_params()   # a bad value ends the run here, in one line that names the key (no thread pool)
    spec = yaml.safe_load(Path(paths.dvc_yaml).read_text(encoding="utf-8"))
    stages = {name: stage for name, stage in spec["stages"].items() if name != "check_params"}
    values = stage_param_values(params, stages)
    out = Path(paths.out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in sorted(out.glob("*.json")):
        if stale.stem not in values:
            stale.unlink()   # a stage removed from dvc.yaml
    for stage, declared in values.items():
        atomic_write_json(out / f"{stage}.json", declared)
    log.info("params.yaml checked: %d stages' params written to %s", len(values), out)


if __name__ == "__main__":
    run_stage("check_params", main)
