"""The pipeline's paths as dvc.yaml names them (its ``vars: - paths:``, the one place they are written),
for code outside the stages (the CLI's defaults, the tests); the stages get theirs on their command
line. ``${paths.<name>}`` in dvc.yaml is resolved here the way DVC resolves it."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any, Dict, List

import yaml

TEMPLATE = re.compile(r"\$\{\s*paths\.([A-Za-z0-9_]+)\s*\}")


def pipeline_paths(root: str | Path = ".") -> Dict[str, str]:
    """``paths`` of dvc.yaml's ``vars`` in the project at ``root``."""
    spec = yaml.safe_load((Path(root) / "dvc.yaml").read_text(encoding="utf-8")) or {}
    for entry in spec.get("vars") or []:
        if isinstance(entry, dict) and "paths" in entry:
            return {k: str(v) for k, v in entry["paths"].items()}
    raise KeyError(f"{Path(root) / 'dvc.yaml'} has no `vars: - paths:` block")


def pipeline_path(name: str, root: str | Path = ".") -> str:
    """One path of the pipeline by its name in dvc.yaml's ``vars`` (``spatial_model``: data/spatial/model)."""
    return pipeline_paths(root)[name]


def resolve(value: Any, paths: Dict[str, str]) -> Any:
    """``value`` (a parsed piece of dvc.yaml) with each ``${paths.<name>}`` replaced, keys included."""
    if isinstance(value, str):
        return TEMPLATE.sub(lambda m: paths[m.group(1)], value)
    if isinstance(value, list):
        return [resolve(v, paths) for v in value]
    if isinstance(value, dict):
        return {resolve(k, paths): resolve(v, paths) for k, v in value.items()}
    return value


def resolved_dvc_yaml(root: str | Path = ".") -> Dict[str, Any]:
    """dvc.yaml parsed, its paths templating resolved (its ``vars`` left out)."""
    spec = yaml.safe_load((Path(root) / "dvc.yaml").read_text(encoding="utf-8")) or {}
    paths = pipeline_paths(root)
    return {k: resolve(v, paths) for k, v in spec.items() if k != "vars"}


def stage_command(stage: str, root: str | Path = ".") -> List[str]:
    """A stage's ``cmd`` as dvc.yaml runs it (``python -m stages.<stage> --<path> ...``), split into words."""
    return shlex.split(resolved_dvc_yaml(root)["stages"][stage]["cmd"])
