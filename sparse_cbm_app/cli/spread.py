"""``sparse-cbm spread``: measure how far every metric moves when the committed pipeline reruns on
another kernel set, another thread count, or another seed, and write ``reproduce/spread.json``,
the tolerances ``sparse-cbm verify`` judges by (the model: ``sparse_cbm_app.cli.tolerances``).

Each configuration reruns the whole pipeline (``dvc repro --force``) in its own clone of HEAD, one
after the other (two pipelines on two cores would only slow each other). Machine configurations
change only the environment; seed configurations change only ``seed``. The committed ``dvc.lock``
and metrics are the base every rerun is measured from, so commit the pipeline's results first.
"""

from __future__ import annotations

import hashlib
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence

import yaml
from tqdm import tqdm

from sparse_cbm_app.cli import tolerances as tol
from sparse_cbm_app.cli.lockcheck import REPRODUCED, VerifyError, compare_locks, outputs_sha256, tolerances
from sparse_cbm_app.cli.repo import clone_at, git, reader, repo_root, repro, say


@dataclass(frozen=True)
class Configuration:
    kind: str                                   # tol.MACHINE | tol.SEED
    says: str
    env: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)


# What "another machine of our kind" can differ in, emulated on this one: PyTorch's own kernels
# (ATEN_CPU_CAPABILITY), the BLAS and oneDNN code paths (an AVX2-only CPU, like an AMD EPYC without
# AVX-512), and the thread count. Then the seed, to compare against.
CONFIGURATIONS: Dict[str, Configuration] = {
    "kernels-default": Configuration(tol.MACHINE, "PyTorch's scalar kernels (ATEN_CPU_CAPABILITY=default)",
                                     {"ATEN_CPU_CAPABILITY": "default"}),
    "avx2-cpu": Configuration(tol.MACHINE, "every library held to AVX2, as on a CPU without AVX-512",
                              {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
                               "ONEDNN_MAX_CPU_ISA": "AVX2", "OPENBLAS_CORETYPE": "Haswell"}),
    "threads-1": Configuration(tol.MACHINE, "one thread", {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                                                           "OPENBLAS_NUM_THREADS": "1"}),
    "seed-1": Configuration(tol.SEED, "seed 1", params={"seed": 1}),
    "seed-2": Configuration(tol.SEED, "seed 2", params={"seed": 2}),
}


def metrics_files(dvc_yaml: Mapping) -> List[str]:
    """Every metrics file a stage is judged by (``meta.reproduce.metrics``), in first-seen order."""
    seen: List[str] = []
    for spec in tolerances(dvc_yaml).values():
        seen += [m for m in spec.metrics if m not in seen]
    return seen


def _apply_params(work: Path, params: Mapping[str, Any]) -> None:
    if params:
        from sparse_cbm_app.params import apply_overrides

        profile = work / ".dvc" / "tmp" / "spread-params.yaml"
        profile.parent.mkdir(parents=True, exist_ok=True)
        profile.write_text(yaml.safe_dump(dict(params)))
        apply_overrides(profile, str(work / "params.yaml"))


def _read_metrics(read, files: Sequence[str]) -> Dict[str, Any]:
    out = {}
    for path in files:
        text = read(path)
        if text is not None:
            out[path] = tol.parse_metrics(path, text)
    return out


def _reproduced(committed: Mapping, new: Mapping) -> Dict[str, bool]:
    """{stage:output: the same hash as committed}."""
    rows = compare_locks(committed, new, {}, lambda _: None, lambda _: None)
    return {f"{r.stage}:{r.output}": r.status == REPRODUCED for r in rows}


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def spread(names: Sequence[str], out: str = tol.SPREAD_FILE, keep: bool = False) -> int:
    unknown = [n for n in names if n not in CONFIGURATIONS]
    if unknown:
        raise VerifyError(f"unknown configuration {', '.join(unknown)}: choose from {', '.join(CONFIGURATIONS)}")
    root = repo_root()
    sha = git(["rev-parse", "HEAD"], root).stdout.strip()
    read_head = reader(root, "HEAD")
    lock_text = read_head("dvc.lock")
    if lock_text is None:
        raise VerifyError("no dvc.lock is committed at HEAD: run `dvc repro`, commit its results, then measure")
    files = metrics_files(yaml.safe_load(read_head("dvc.yaml") or "{}") or {})
    committed = _read_metrics(read_head, files)
    committed_lock = yaml.safe_load(lock_text)
    tmp = Path(tempfile.mkdtemp(prefix="sparse-cbm-spread-"))
    runs: Dict[str, Dict[str, Any]] = {}
    exact: Dict[str, Dict[str, bool]] = {}
    try:
        for name in tqdm(names, desc="spread: configurations", unit="run", file=sys.stderr):
            config = CONFIGURATIONS[name]
            start = time.monotonic()
            work = clone_at(root, sha, tmp / name)
            _apply_params(work, config.params)
            rc, _, last = repro(work, tmp / f"{name}.log", config.env, label=f"{name}: ")
            if rc != 0:
                where = f"its log: {tmp / f'{name}.log'}" if keep else "--keep keeps its clone and log"
                raise VerifyError(f"`dvc repro` failed in stage {last} under configuration {name} ({config.says}); "
                                  f"{where}")
            runs[name] = _read_metrics(reader(work, None), files)
            if config.kind == tol.MACHINE:
                exact[name] = _reproduced(committed_lock, yaml.safe_load((work / "dvc.lock").read_text()))
            say(f"  {name}: done in {time.monotonic() - start:.0f} s")
            if not keep:
                shutil.rmtree(work, ignore_errors=True)
    finally:
        if keep:
            say(f"spread: kept the clones and logs in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    spreads = tol.measure(committed, runs, {n: CONFIGURATIONS[n].kind for n in names})
    measured = {"commit": sha, "dvc_lock_sha256": hashlib.sha256(lock_text.encode()).hexdigest(),
                "dvc_lock_outputs_sha256": outputs_sha256(committed_lock), "cpu": _cpu(),
                "torch": _torch_version(), "configurations": list(names),
                "says": {n: CONFIGURATIONS[n].says for n in names}}
    outputs = {key: {n: exact[n][key] for n in exact} for key in sorted({k for v in exact.values() for k in v})}
    path = root / out
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tol.dumps(spreads, measured, outputs))
    _print(spreads, outputs, path)
    return 0


def _torch_version() -> str:
    import torch

    return torch.__version__


def _print(spreads, outputs: Mapping[str, Mapping[str, bool]], path: Path) -> None:
    say("outputs with the committed bytes, per machine configuration:")
    names = sorted({n for v in outputs.values() for n in v})
    for name in names:
        same = [k for k, v in outputs.items() if v.get(name)]
        say(f"  {name}: {len(same)} of {len(outputs)}")
    say("metrics (file: metrics, moved by the machine, moved by the seed, chaotic; the most chaotic):")
    for file, count, machine, seed, chaotic, worst in tol.summarise(spreads):
        say(f"  {file}: {count} metrics, {machine} moved by the machine, {seed} by the seed, {chaotic} chaotic"
             + (f"; {worst}" if worst else ""))
    say(f"wrote {path}")
