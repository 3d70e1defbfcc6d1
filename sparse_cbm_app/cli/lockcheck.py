"""The comparisons behind ``sparse-cbm verify``, as pure functions of parsed files: a committed
``dvc.lock`` against ``dvc status`` of a fresh checkout (``check_status``: a stale lock, a param
changed without rerunning, an edited result), and against the lock of a rerun (``compare_locks``:
equal hashes, or metrics within each one's measured spread), with the rows ``table`` and
``summary`` print.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Collection, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from sparse_cbm_app.cli.tolerances import Tolerances, difference, is_number, leaves, parse_metrics
from sparse_cbm.errors import SparseCbmError


class VerifyError(SparseCbmError):
    """The check cannot run: not a git repository, a dirty checkout with --in-place, no dvc.yaml."""


REPRODUCED = "reproduced"
WITHIN = "within tolerance"
FAILED = "FAILED"

Reader = Callable[[str], Optional[str]]   # path -> the file's text, None when absent


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
                problems.append(f"{key}: {a} committed, {b} now ({why})")
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
    how = ("their measured spread" if measured.spreads else
           f"atol {tol.atol:g}" if tol.atol is not None else "exact equality (no measured spread, no atol)")
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        return False, f"hash differs and metrics moved beyond {how}: {shown}"
    return True, f"compared by {names}, within {how}, largest difference {largest:.3g}"


# ---------------------------------------------------------------- dvc.lock comparison

def outputs(stage_lock: Mapping) -> Dict[str, Mapping]:
    """{path: entry} of a stage's outputs in a parsed dvc.lock."""
    return {o["path"]: o for o in stage_lock.get("outs") or []}


def output_hash(out: Mapping) -> Any:
    if "md5" in out:
        return out["md5"]
    return {k: v for k, v in out.items() if k not in ("path", "size", "nfiles")}


def outputs_sha256(lock: Mapping) -> str:
    """A digest of every stage's output hashes in a parsed dvc.lock (not its deps, params or commands):
    equal for two locks whose code or params moved while every result stayed byte for byte the same."""
    import hashlib

    entries = sorted((stage, path, json.dumps(output_hash(out), sort_keys=True))
                     for stage, stage_lock in (lock.get("stages") or {}).items()
                     for path, out in outputs(stage_lock).items())
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()


def compare_locks(committed_lock: Mapping, new_lock: Mapping, declared: Mapping[str, Tolerance],
                  read_committed: Reader, read_new: Reader, measured: Optional[Tolerances] = None,
                  only: Optional[Collection[str]] = None) -> List[Row]:
    """One row per output of every stage in the new lock (then any stage only in the committed one);
    ``only``: of these stages alone (those a targeted rerun ran)."""
    def keep(stages: Mapping) -> Dict[str, Any]:
        return {k: v for k, v in stages.items() if only is None or k in only}

    old_stages = keep(committed_lock.get("stages") or {})
    new_stages = keep(new_lock.get("stages") or {})
    rows: List[Row] = []
    for stage, new in new_stages.items():
        if stage not in old_stages:
            rows.append(Row(stage, "(all)", FAILED, "stage missing from the committed dvc.lock"))
            continue
        old_outs, new_outs = outputs(old_stages[stage]), outputs(new)
        tol = tolerance_for(stage, declared)
        judged: Optional[Tuple[bool, str]] = None
        for path, out in new_outs.items():
            if path not in old_outs:
                rows.append(Row(stage, path, FAILED, "output missing from the committed dvc.lock"))
            elif output_hash(out) == output_hash(old_outs[path]):
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

def count(n: int, noun: str) -> str:
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
    text = f"{count(len(exact), 'output')} reproduced exactly, {len(within)} within tolerance"
    if within:
        text += " (compared by their metrics: " + ", ".join(f"{r.output} ({r.stage})" for r in within) + ")"
    text += f", {len(failed)} failed"
    if failed:
        text += ": " + ", ".join(f"{r.output} ({r.stage})" for r in failed)
    return text
