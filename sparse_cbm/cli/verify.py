"""``sparse-cbm verify``: rerun the pipeline in a clean checkout of HEAD and say, stage by stage,
whether every output reproduces the hash recorded in the committed ``dvc.lock``.

1. Clone HEAD into a temporary folder (``--in-place``: use this checkout, which must be clean).
2. Before running anything, ``dvc status --json`` there: a dependency, a param or a command
   that differs from the committed ``dvc.lock`` (someone changed it without rerunning), an
   output committed to git whose hash differs from the lock (someone edited a result), or a
   stage missing from the lock fails at once, stage by stage. In a fresh clone every
   DVC-cached output is missing ("not in cache"), and so are the dependencies made by other
   stages: that is expected and ignored.
3. ``dvc repro --force``: every stage runs.
4. Compare the new ``dvc.lock`` with the committed one, output by output. Equal hashes:
   reproduced. Different: a stage that declares ``meta: reproduce: {metrics: [...], atol: x}``
   in dvc.yaml (float outputs that may differ in the last bits across CPUs) is judged by those
   metrics files, committed against regenerated: same keys, same non-numeric values, numbers
   within ``atol``. Otherwise, or when the metrics disagree, the output fails.

Exit status: 0 when nothing failed, 1 when something did, 2 when the check cannot run.
The comparison is made of pure functions (``check_status``, ``compare_locks``, ``summary``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import yaml

from sparse_cbm.cli.tolerances import SPREAD_FILE, Tolerances, difference, is_number, leaves, parse_metrics
from sparse_cbm.errors import SparseCbmError

REPRODUCED = "reproduced"
WITHIN = "within tolerance"
FAILED = "FAILED"

Reader = Callable[[str], Optional[str]]


class VerifyError(SparseCbmError):
    """The check cannot run: not a git repository, a dirty checkout with --in-place, no dvc.yaml."""


@dataclass(frozen=True)
class Tolerance:
    """``meta: reproduce:`` of a stage: judge its differing outputs by these metrics files, each
    metric within its measured spread (``reproduce/spread.json``); ``atol``, when given, for the
    metrics with no measurement (else they must match exactly)."""

    metrics: Tuple[str, ...]
    atol: Optional[float] = None


@dataclass(frozen=True)
class Row:
    stage: str
    output: str
    status: str          # REPRODUCED | WITHIN | FAILED
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.status == FAILED

    @property
    def result(self) -> str:
        return f"{self.status} ({self.detail})" if self.detail else self.status


# ---------------------------------------------------------------- tolerances (dvc.yaml meta)

def tolerances(dvc_yaml: Mapping) -> Dict[str, Tolerance]:
    """Each stage's ``meta: reproduce:`` in a parsed dvc.yaml (foreach/matrix stages: their
    definition's, which applies to every generated ``name@key`` stage)."""
    found: Dict[str, Tolerance] = {}
    for name, definition in (dvc_yaml.get("stages") or {}).items():
        if not isinstance(definition, Mapping):
            continue
        body = definition.get("do", definition)
        meta = body.get("meta") if isinstance(body, Mapping) else None
        spec = meta.get("reproduce") if isinstance(meta, Mapping) else None
        if spec is None:
            continue
        where = f"dvc.yaml: stage {name}: meta.reproduce"
        if not isinstance(spec, Mapping) or set(spec) - {"metrics", "atol"}:
            raise VerifyError(f"{where} must be a mapping with the key metrics (and, optionally, atol)")
        metrics = spec.get("metrics")
        metrics = [metrics] if isinstance(metrics, str) else metrics
        if not metrics or not isinstance(metrics, list) or not all(isinstance(m, str) for m in metrics):
            raise VerifyError(f"{where}.metrics must be a list of metrics files, e.g. [metrics/evaluate.json]")
        atol = spec.get("atol")
        if atol is not None and (isinstance(atol, bool) or not isinstance(atol, (int, float)) or not atol >= 0):
            raise VerifyError(f"{where}.atol must be a number >= 0 (the absolute tolerance of the metrics with no "
                              f"measured spread), not {atol!r}")
        found[name] = Tolerance(tuple(metrics), None if atol is None else float(atol))
    return found


def tolerance_for(stage: str, declared: Mapping[str, Tolerance]) -> Optional[Tolerance]:
    return declared.get(stage) or declared.get(stage.split("@")[0])


# ---------------------------------------------------------------- metrics

ToleranceOf = Callable[[str, str], Tuple[float, bool]]   # (file, leaf) -> (tolerance, measured?)


def tolerance_of(tol: Tolerance, measured: Tolerances) -> ToleranceOf:
    """A leaf's measured tolerance; else the stage's ``atol``; else 0 (it must match exactly)."""
    def of(path: str, key: str) -> Tuple[float, bool]:
        found = measured.tolerance(path, key)
        if found is not None:
            return found, True
        return (tol.atol if tol.atol is not None else 0.0), False

    return of


def compare_metrics(committed: Any, new: Any, atol: Union[float, Callable[[str], Tuple[float, bool]]]
                    ) -> Tuple[float, List[str]]:
    """Largest numeric difference and the disagreements: keys present on one side only,
    non-numeric values that differ, numbers further apart than their tolerance (``atol``: one
    number for every leaf, or leaf -> (tolerance, measured?))."""
    old, now = dict(leaves(committed)), dict(leaves(new))
    problems: List[str] = []
    for key in old.keys() - now.keys():
        problems.append(f"{key or '<root>'} missing from the new run")
    for key in now.keys() - old.keys():
        problems.append(f"{key or '<root>'} not in the committed file")
    largest = 0.0
    for key in [k for k in old if k in now]:
        a, b = old[key], now[key]
        if is_number(a) and is_number(b):
            diff = difference(float(a), float(b))
            largest = max(largest, diff)
            limit, measured = atol(key) if callable(atol) else (atol, True)
            if diff > limit:
                why = f"tolerance {limit:g}" if measured else \
                    f"no measured spread, so tolerance {limit:g}: `sparse-cbm spread` measures it"
                problems.append(f"{key}: {a} committed, {b} now ({why})" if callable(atol) else
                                f"{key}: {a} committed, {b} now")
        elif a != b or isinstance(a, bool) != isinstance(b, bool):   # True == 1 in Python
            problems.append(f"{key}: {a!r} committed, {b!r} now")
    return largest, sorted(problems)


def judge_by_metrics(tol: Tolerance, read_committed: Reader, read_new: Reader,
                     measured: Optional[Tolerances] = None) -> Tuple[bool, str]:
    """(within tolerance?, the text that says how it was judged)."""
    measured = measured or Tolerances.empty()
    of = tolerance_of(tol, measured)
    largest, problems = 0.0, []
    for path in tol.metrics:
        texts = {}
        for side, read in (("committed", read_committed), ("new", read_new)):
            text = read(path)
            if text is None:
                problems.append(f"{path}: no {side} version" + (" in HEAD" if side == "committed" else ""))
                continue
            try:
                texts[side] = parse_metrics(path, text)
            except Exception as exc:  # noqa: BLE001 - any parse error is a failed comparison
                problems.append(f"{path}: cannot parse the {side} version ({exc})")
        if len(texts) == 2:
            diff, found = compare_metrics(texts["committed"], texts["new"], lambda key, p=path: of(p, key))
            largest = max(largest, diff)
            problems += [f"{path}: {p}" for p in found]
    names = ", ".join(tol.metrics)
    how = "their measured spread" if measured.spreads else f"atol {tol.atol:g}"
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        return False, f"hash differs and metrics moved beyond {how}: {shown}"
    return True, f"compared by {names}, within {how}, largest difference {largest:.3g}"


# ---------------------------------------------------------------- dvc.lock comparison

def _outs(stage_lock: Mapping) -> Dict[str, Mapping]:
    return {o["path"]: o for o in stage_lock.get("outs") or []}


def _hash(out: Mapping) -> Any:
    if "md5" in out:
        return out["md5"]
    return {k: v for k, v in out.items() if k not in ("path", "size", "nfiles")}


def compare_locks(committed_lock: Mapping, new_lock: Mapping, declared: Mapping[str, Tolerance],
                  read_committed: Reader, read_new: Reader, measured: Optional[Tolerances] = None) -> List[Row]:
    """One row per output of every stage in the new lock (then any stage only in the committed one)."""
    old_stages = committed_lock.get("stages") or {}
    new_stages = new_lock.get("stages") or {}
    rows: List[Row] = []
    for stage, new in new_stages.items():
        if stage not in old_stages:
            rows.append(Row(stage, "(all)", FAILED, "stage missing from the committed dvc.lock"))
            continue
        old_outs, new_outs = _outs(old_stages[stage]), _outs(new)
        tol = tolerance_for(stage, declared)
        judged: Optional[Tuple[bool, str]] = None
        for path, out in new_outs.items():
            if path not in old_outs:
                rows.append(Row(stage, path, FAILED, "output missing from the committed dvc.lock"))
            elif _hash(out) == _hash(old_outs[path]):
                rows.append(Row(stage, path, REPRODUCED))
            elif tol is None:
                rows.append(Row(stage, path, FAILED, "hash differs from the committed dvc.lock, "
                                                     "and the stage declares no meta.reproduce tolerance"))
            else:
                judged = judged or judge_by_metrics(tol, read_committed, read_new, measured)
                rows.append(Row(stage, path, WITHIN if judged[0] else FAILED, judged[1]))
        for path in old_outs.keys() - new_outs.keys():
            rows.append(Row(stage, path, FAILED, "in the committed dvc.lock but not produced by this run"))
    for stage in old_stages.keys() - new_stages.keys():
        rows.append(Row(stage, "(all)", FAILED, "in the committed dvc.lock but not in this run's"))
    return rows


# ---------------------------------------------------------------- stale lock (dvc status, before running)

def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


_ABSENT = object()


def _show(value: Any) -> str:
    return "absent" if value is _ABSENT else json.dumps(value, default=str)


def _lookup(params: Any, dotted: str) -> Any:
    value = params
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _ABSENT
        value = value[part]
    return value


def _param_changes(key: str, old: Any, new: Any) -> Iterator[Tuple[str, str]]:
    """(dotted param, 'old in dvc.lock, new now') for every leaf that differs."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        for k in list(old) + [k for k in new if k not in old]:
            yield from _param_changes(f"{key}.{k}", old.get(k, _ABSENT), new.get(k, _ABSENT))
    elif old is not new and (old is _ABSENT or new is _ABSENT or old != new):
        yield key, f"{_show(old)} in dvc.lock, {_show(new)} now"


def check_status(status: Mapping, stages: Sequence[str], committed_lock: Mapping,
                 tracked: Callable[[str], bool], read_params: Callable[[str], Any]) -> List[Row]:
    """Failures in ``dvc status --json`` of a fresh checkout of HEAD that mean the committed
    dvc.lock does not describe the committed code, params or results.

    ``tracked(path)``: whether git tracks the path (an output committed to git); ``read_params(file)``:
    the parsed params file as it is now.
    """
    locked = committed_lock.get("stages") or {}
    produced = [o["path"] for s in locked.values() for o in s.get("outs") or []]
    rows: List[Row] = []
    for stage in stages:
        if stage not in locked:
            rows.append(Row(stage, "(all)", FAILED, "stage missing from the committed dvc.lock: "
                                                   "run `dvc repro` and commit dvc.lock"))
            continue
        for entry in status.get(stage, []):
            if isinstance(entry, str):
                if entry == "always changed":
                    continue
                what = "cmd" if entry == "changed command" else "-"
                rows.append(Row(stage, what, FAILED, f"{entry} since the committed dvc.lock"))
                continue
            for kind, changes in entry.items():
                if kind == "changed deps":
                    rows += _dep_rows(stage, changes, produced, locked[stage], read_params)
                elif kind == "changed outs":
                    for path, state in changes.items():
                        if tracked(path) and state != "not in cache":
                            rows.append(Row(stage, path, FAILED, f"committed output {state}: its hash differs "
                                                                 f"from the committed dvc.lock"))
                else:
                    rows.append(Row(stage, "-", FAILED, f"{kind}: {changes}"))
    return rows


def _dep_rows(stage: str, changes: Mapping, produced: Sequence[str], stage_lock: Mapping,
              read_params: Callable[[str], Any]) -> List[Row]:
    rows = []
    for path, state in changes.items():
        if isinstance(state, Mapping):          # a params file: {param: modified | new | deleted}
            locked = (stage_lock.get("params") or {}).get(path, {})
            now = read_params(path)
            for key, how in state.items():
                leaves = list(_param_changes(key, locked.get(key, _ABSENT), _lookup(now, key)))
                for param, text in leaves or [(key, how)]:
                    rows.append(Row(stage, f"param {param}", FAILED, f"changed since the committed dvc.lock: {text}"))
        elif any(_under(path, out) or _under(out, path) for out in produced):
            continue                            # made by a stage: missing in a fresh clone, judged at its stage
        else:
            rows.append(Row(stage, path, FAILED, f"dependency {state} since the committed dvc.lock"))
    return rows


# ---------------------------------------------------------------- output

def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def table(rows: Iterable[Row]) -> str:
    lines = [("stage", "output", "result")] + [(r.stage, r.output, r.result) for r in rows]
    w0 = max(len(a) for a, _, _ in lines)
    w1 = max(len(b) for _, b, _ in lines)
    return "\n".join(f"{a:<{w0}}  {b:<{w1}}  {c}".rstrip() for a, b, c in lines)


def summary(rows: Sequence[Row]) -> str:
    exact = [r for r in rows if r.status == REPRODUCED]
    within = [r for r in rows if r.status == WITHIN]
    failed = [r for r in rows if r.failed]
    text = f"{_count(len(exact), 'output')} reproduced exactly, {len(within)} within tolerance"
    if within:
        text += " (compared by their metrics: " + ", ".join(f"{r.output} ({r.stage})" for r in within) + ")"
    text += f", {len(failed)} failed"
    if failed:
        text += ": " + ", ".join(f"{r.output} ({r.stage})" for r in failed)
    return text


# ---------------------------------------------------------------- the command

def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["DVC_NO_ANALYTICS"] = "1"
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _run(cmd: List[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise VerifyError(f"`{' '.join(cmd)}` failed in {cwd}:\n{(proc.stdout + proc.stderr).strip()}")
    return proc


def _git(args: List[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    return _run(["git", *args], cwd, check)


def _dvc(args: List[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    return _run([sys.executable, "-m", "dvc", *args], cwd, check)


def _say(text: str = "") -> None:
    print(text, flush=True)


def _repo_root() -> Path:
    proc = _git(["rev-parse", "--show-toplevel"], Path.cwd(), check=False)
    if proc.returncode != 0:
        raise VerifyError("not inside a git repository: run `sparse-cbm verify` in a checkout of the project")
    return Path(proc.stdout.strip())


def _checkout(root: Path, sha: str, in_place: bool, tmp: Optional[Path]) -> Path:
    dirty = _git(["status", "--porcelain"], root).stdout.strip()
    if in_place:
        if dirty:
            raise VerifyError(f"--in-place needs a clean checkout, and {root} has uncommitted changes "
                              f"(`git status`): commit or stash them, or run without --in-place")
        return root
    if dirty:
        print(f"verify: warning: {root} has uncommitted changes; they are not verified "
              f"(verify checks the committed HEAD, {sha[:7]})", file=sys.stderr, flush=True)
    assert tmp is not None
    work = tmp / "repo"
    _git(["clone", "--quiet", "--no-hardlinks", str(root), str(work)], tmp)
    if _git(["rev-parse", "HEAD"], work).stdout.strip() != sha:
        _git(["fetch", "--quiet", str(root), sha], work)
        _git(["checkout", "--quiet", "--detach", sha], work)
    return work


def _reader(work: Path, rev: Optional[str]) -> Reader:
    def read(path: str) -> Optional[str]:
        if rev is None:
            file = work / path
            return file.read_text() if file.is_file() else None
        proc = _git(["show", f"{rev}:{path}"], work, check=False)
        return proc.stdout if proc.returncode == 0 else None

    return read


def _tracked(work: Path) -> Callable[[str], bool]:
    files = set(_git(["ls-files", "-z"], work).stdout.split("\0")) - {""}

    def tracked(path: str) -> bool:
        return path in files or any(f.startswith(path.rstrip("/") + "/") for f in files)

    return tracked


def _repro(work: Path, log: Path) -> Tuple[int, List[str], Optional[str]]:
    """Run ``dvc repro --force`` (every stage, no run-cache), print each stage as it starts."""
    lines: List[str] = []
    stage = None
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "--force"], cwd=work, env=_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
            lines.append(line.rstrip("\n"))
            if line.startswith("Running stage '"):
                stage = line.split("'")[1]
                _say(f"  running {stage}")
        rc = proc.wait()
    return rc, lines, stage


def verify(in_place: bool = False, keep: bool = False) -> int:
    root = _repo_root()
    if not (root / "dvc.yaml").is_file():
        raise VerifyError(f"no dvc.yaml in {root}: verify checks the pipeline of the repository's top folder")
    sha = _git(["rev-parse", "HEAD"], root).stdout.strip()
    tmp = None if in_place else Path(tempfile.mkdtemp(prefix="sparse-cbm-verify-"))
    try:
        work = _checkout(root, sha, in_place, tmp)
        where = "in place" if in_place else f"in a clone at {work}"
        _say(f"verify: HEAD {sha[:7]} of {root}, {where}")
        log = tmp / "repro.log" if tmp is not None else work / ".dvc" / "tmp" / "verify-repro.log"
        return _verify_in(work, in_place, log, survives=keep or in_place)
    finally:
        if tmp is not None:
            if keep:
                _say(f"verify: kept the clone: {tmp / 'repo'} (dvc repro's log: {tmp / 'repro.log'})")
            else:
                shutil.rmtree(tmp, ignore_errors=True)


def _measured(read: Reader, committed_lock_text: str) -> Tolerances:
    """The committed ``reproduce/spread.json``, and a word on what it was measured for."""
    text = read(SPREAD_FILE)
    if text is None:
        _say(f"verify: no {SPREAD_FILE} is committed: differing outputs are judged by their stage's atol, or "
             f"exactly; `sparse-cbm spread` measures how far each metric moves across machines and seeds")
        return Tolerances.empty()
    try:
        measured = Tolerances.parse(text)
    except (ValueError, KeyError, TypeError) as exc:
        raise VerifyError(f"{SPREAD_FILE} cannot be read ({exc}): rerun `sparse-cbm spread`, or restore it "
                          f"with `git checkout -- {SPREAD_FILE}`") from None
    lock_sha = hashlib.sha256(committed_lock_text.encode()).hexdigest()
    about = measured.about
    note = "" if about.get("dvc_lock_sha256") == lock_sha else \
        " (measured for another dvc.lock: `sparse-cbm spread` measures the current one)"
    _say(f"verify: tolerances from {SPREAD_FILE}, measured on {about.get('cpu', 'an unnamed CPU')} over "
         f"{', '.join(about.get('configurations', [])) or 'no reruns'}{note}")
    return measured


def _verify_in(work: Path, in_place: bool, log: Path, survives: bool) -> int:
    committed_text = _reader(work, "HEAD")("dvc.lock")
    if committed_text is None:
        _say("verify: FAILED: no dvc.lock is committed at HEAD: run `dvc repro` and commit dvc.lock "
             "(and the metrics and plots it lists that are not cached by DVC)")
        return 1
    committed = yaml.safe_load(committed_text) or {}
    declared = tolerances(yaml.safe_load((work / "dvc.yaml").read_text()) or {})
    measured = _measured(_reader(work, "HEAD"), committed_text)
    stages = _dvc(["stage", "list", "--name-only"], work).stdout.split()

    # the stale-lock check: fails fast, before the long run
    status = json.loads(_dvc(["status", "--json"], work).stdout or "{}")

    def read_params(path: str) -> Any:
        file = work / path
        return yaml.safe_load(file.read_text()) if file.is_file() else None

    stale = check_status(status, stages, committed, _tracked(work), read_params)
    if stale:
        _say("verify: the committed dvc.lock does not match the committed code, params or results "
             "(dvc status); the pipeline was not run:")
        _say()
        _say(table(stale))
        _say()
        names = sorted({r.stage for r in stale}, key=lambda s: stages.index(s) if s in stages else len(stages))
        _say(f"{_count(len(stale), 'problem')} in {_count(len(names), 'stage')} ({', '.join(names)}): rerun "
             f"`dvc repro` and commit dvc.lock and the outputs it lists, or undo the change")
        return 1
    _say(f"verify: dvc.lock matches the committed code, params and results ({len(stages)} stages); "
         f"running `dvc repro --force`")

    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    rc, lines, last = _repro(work, log)
    if rc != 0:
        print("\n".join(lines[-40:]), file=sys.stderr, flush=True)
        whole = f"the whole log: {log}" if survives else "--keep keeps the clone and the whole log"
        _say(f"verify: FAILED: `dvc repro` failed in stage {last or '(before any stage ran)'} "
             f"(exit status {rc}; the tail of its output is on stderr; {whole})")
        return 1
    _say(f"verify: dvc repro done in {time.monotonic() - start:.0f} s")

    new = yaml.safe_load((work / "dvc.lock").read_text()) or {}
    rows = compare_locks(committed, new, declared, _reader(work, "HEAD"), _reader(work, None), measured)
    _say()
    _say(table(rows))
    _say()
    _say(summary(rows))
    if in_place and _git(["status", "--porcelain"], work).stdout.strip():
        _say(f"verify: this run changed committed files in {work} (`git status`); "
             f"`git checkout -- . && dvc checkout` restores the committed results")
    return 1 if any(r.failed for r in rows) else 0
