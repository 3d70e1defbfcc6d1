"""Each stage's params as dvc.yaml declares them, with their validated values: what the ``check_params``
stage writes, one file per stage, so that every stage runs after the params are checked and only when
its own params change (docs/development.md#a-bad-param-loses-nothing)."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping

from sparse_cbm.errors import ParamsError
from sparse_cbm_app.params import Params

PARAMS_FILE = "params.yaml"


def declared_keys(stage: str, spec: Mapping[str, Any]) -> List[str]:
    """The params.yaml keys a stage of dvc.yaml lists under ``params`` (``train.cbl``; ``{params.yaml: [..]}``)."""
    keys: List[str] = []
    for entry in spec.get("params") or []:
        if isinstance(entry, Mapping):
            for file, listed in entry.items():
                if file != PARAMS_FILE:
                    raise ParamsError(f"dvc.yaml: stage {stage} reads params from {file}; the pipeline's params live "
                                      f"in {PARAMS_FILE} only (profiles are applied to it: `sparse-cbm params apply`)")
                keys += [str(k) for k in listed or []]
        else:
            keys.append(str(entry))
    return keys


def value_at(values: Mapping[str, Any], key: str, stage: str) -> Any:
    """The value of a dotted key in the validated params; an unknown key is dvc.yaml's mistake, named."""
    node: Any = values
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise ParamsError(f"dvc.yaml: stage {stage} declares param '{key}', which params.yaml's schema does not "
                              f"have: fix the stage's `params:` list in dvc.yaml")
        node = node[part]
    return node


def stage_param_values(params: Params, stages: Mapping[str, Mapping[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """For every stage of dvc.yaml (``stages``), the validated value of each param it declares; a stage that
    declares none gets ``{}`` (its file still orders it after the check)."""
    values = params.model_dump(mode="json")
    return {stage: {key: value_at(values, key, stage) for key in declared_keys(stage, spec)}
            for stage, spec in stages.items()}
