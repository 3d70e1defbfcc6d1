"""Every file and every param a stage reads is declared for it in dvc.yaml.

Each stage of a repro'd copy of the project runs again, traced two ways:

* files: inotify watches every folder of the project (not .git, .dvc), and every file
  opened read-only by the stage's process is collected; whatever library opens it
  (Python, NumPy, Arrow, safetensors), the kernel reports it. Python source counts too
  (PYTHONDONTWRITEBYTECODE: no cached bytecode, so imports read the .py files);
* params: ``tests/trace_stage.py`` records every key read from the typed params.

A read is declared when it lies under one of the stage's deps or outs, or (params) under
one of its params keys (or the stage depends on params.yaml whole). Exempt, by design and
said in dvc.yaml: the files read by parsing params.yaml at all (``import
sparse_cbm_app.params``: the schema and the registries its choices come from) and by the stage
runner (errors, atomic writes, logging), which decide no result; a stage's own scratch
folder under data/.scratch; the params a stage lists under ``meta: undeclared_params``
(ones that do not change results, such as DataLoader workers); and the files it lists under ``meta:
undeclared_deps`` (dvc.yaml, which DVC refuses as a dependency).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Set

import pytest
import yaml

from sparse_cbm_app.cli.pipeline import resolved_dvc_yaml, stage_command
from sparse_cbm_app.declared_params import declared_keys
from tests.conftest import REPO
from tests.project import copy_reproduced, env

pytestmark = pytest.mark.pipeline

STAGES = list(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])  # in DAG order
IGNORED_TOP = {".git", ".dvc", "tests"}  # git and DVC internals; the tracer itself


class ReadWatcher:
    """Files of a folder tree opened read-only (and closed) while the context is open."""

    def __init__(self, root: Path):
        from inotify_simple import INotify, flags

        self.root, self.flags = root, flags
        self.inotify = INotify()
        self.dirs: Dict[int, Path] = {}
        self.rescan()

    def rescan(self) -> None:
        """Watch every folder there is now: stages replace their output folders whole (a new
        folder is a new inode), so watches are renewed before each stage runs."""
        for folder, subdirs, _ in os.walk(self.root):
            rel = Path(folder).relative_to(self.root)
            if rel.parts and rel.parts[0] in IGNORED_TOP:
                subdirs[:] = []
                continue
            self.dirs[self.inotify.add_watch(folder, self.flags.CLOSE_NOWRITE)] = rel

    def reads(self) -> Set[str]:
        found = set()
        for event in self.inotify.read(timeout=0):
            if event.mask & self.flags.Q_OVERFLOW:
                raise AssertionError("inotify queue overflowed: raise fs.inotify.max_queued_events")
            if event.mask & self.flags.ISDIR or not event.name or event.wd not in self.dirs:
                continue
            found.add((self.dirs[event.wd] / event.name).as_posix())
        return found

    def close(self) -> None:
        self.inotify.close()


def traced_env() -> dict:
    return {**env(), "PYTHONDONTWRITEBYTECODE": "1"}


def run_traced(root: Path, args: List[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=root, env=traced_env(), capture_output=True, text=True)


@dataclass
class Trace:
    files: Set[str]
    params: Set[str]
    returncode: int
    stderr: str


@dataclass
class Declared:
    deps: List[str]
    outs: List[str]
    params: List[str]
    undeclared_params: List[str] = field(default_factory=list)


def _paths(entries) -> List[str]:
    out = []
    for entry in entries or []:
        out += list(entry) if isinstance(entry, dict) else [entry]
    return [str(p).rstrip("/") for p in out]


def declared(spec: dict) -> Declared:
    params = declared_keys("the stage", spec)   # the reading check_params uses
    outs = _paths(spec.get("outs")) + _paths(spec.get("metrics")) + _paths(spec.get("plots"))
    meta = spec.get("meta") or {}
    # meta.undeclared_deps: files DVC refuses as deps (dvc.yaml itself), said in dvc.yaml
    return Declared(_paths(spec.get("deps")) + list(meta.get("undeclared_deps", [])), outs, params,
                    list(meta.get("undeclared_params", [])))


def _under(path: str, roots: List[str]) -> bool:
    return any(path == r or path.startswith(r + "/") for r in roots)


def _atomic_sibling(path: str, outs: List[str]) -> bool:
    """A file inside a stage's output being built beside it (``data/.model.tmp-xyz/...``)."""
    parts = path.split("/")
    for out in outs:
        parent, name = os.path.split(out)
        prefix = f"{parent}/.{name}.tmp-" if parent else f".{name}.tmp-"
        if path.startswith(prefix):
            return True
    return False


def undeclared_reads(stage: str, trace: Trace, spec: Declared, exempt_files: Set[str]) -> List[str]:
    problems = []
    whole_params = "params.yaml" in spec.deps
    for path in sorted(trace.files - exempt_files):
        if path == "params.yaml" and (spec.params or whole_params):
            continue
        if path.startswith(f"data/.scratch/{stage}/") or _atomic_sibling(path, spec.outs):
            continue
        if not (_under(path, spec.deps) or _under(path, spec.outs)):
            problems.append(f"{stage} reads {path}, which dvc.yaml does not declare (deps or outs)")
    if not whole_params:
        for key in sorted(trace.params):
            allowed = spec.params + spec.undeclared_params
            if key == "<all>" or not any(key == p or key.startswith(p + ".") for p in allowed):
                problems.append(f"{stage} reads param {key}, which dvc.yaml does not declare")
    return problems


@pytest.fixture(scope="module")
def traced(reproduced, tmp_path_factory):
    root = copy_reproduced(reproduced[0], tmp_path_factory.mktemp("reads") / "p")
    specs = resolved_dvc_yaml(root)["stages"]  # its ${paths.*} resolved, before the watcher starts
    commands = {stage: stage_command(stage, root)[3:] for stage in STAGES}  # python -m stages.<stage> <args>
    watcher = ReadWatcher(root)
    try:
        # what parsing params.yaml and running a stage cost every stage (see the module docstring)
        base = run_traced(root, ["-c", "import sparse_cbm_app.params, sparse_cbm.runtime.runner, stages"])
        assert base.returncode == 0, base.stderr
        exempt = watcher.reads() | {"tests/trace_stage.py"}
        traces = {}
        keys = tmp_path_factory.mktemp("keys")  # outside the watched tree
        for stage in STAGES:
            watcher.rescan()
            out = keys / f"{stage}.json"
            proc = run_traced(root, ["-m", "tests.trace_stage", stage, str(out), *commands[stage]])
            files = watcher.reads()
            traces[stage] = Trace(files, set(json.loads(out.read_text())), proc.returncode, proc.stderr[-3000:])
    finally:
        watcher.close()
    return root, specs, traces, exempt


@pytest.mark.parametrize("stage", STAGES)
def test_stage_reads_only_what_dvc_yaml_declares(traced, stage):
    _, specs, traces, exempt = traced
    trace = traces[stage]
    assert trace.returncode == 0, trace.stderr
    assert trace.files, "the watcher saw no reads at all"
    problems = undeclared_reads(stage, trace, declared(specs[stage]), exempt)
    assert not problems, "\n".join(problems)


def test_the_check_catches_an_undeclared_file_and_param(traced):
    """The same trace of evaluate, against a dvc.yaml entry without data/filtered/concepts.txt
    and without the dataset params: both omissions are named."""
    _, specs, traces, exempt = traced
    spec = declared(specs["evaluate"])
    spec.deps = [d for d in spec.deps if d != "data/filtered/concepts.txt"]
    spec.params = [p for p in spec.params if p != "dataset"]
    problems = undeclared_reads("evaluate", traces["evaluate"], spec, exempt)
    assert "evaluate reads data/filtered/concepts.txt, which dvc.yaml does not declare (deps or outs)" in problems
    assert any(p.startswith("evaluate reads param dataset.") for p in problems)
    code = declared(specs["train"])
    code.deps = [d for d in code.deps if d != "sparse_cbm/bottleneck"]
    assert any("sparse_cbm/bottleneck/train.py" in p for p in undeclared_reads("train", traces["train"], code, exempt))
