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
   reproduced. Different: a stage that declares ``meta: reproduce: {metrics: [...]}`` in
   dvc.yaml is judged by those metrics files, committed against regenerated: same keys, same
   non-numeric values, every number within its measured spread (``reproduce/spread.json``,
   ``sparse_cbm_app.cli.tolerances``). Otherwise, or when the metrics disagree, the output fails.

Exit status: 0 when nothing failed, 1 when something did, 2 when the check cannot run.
The comparisons are pure functions (``sparse_cbm_app.cli.lockcheck``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, List, Optional, Sequence

import yaml

from sparse_cbm_app.cli.lockcheck import (VerifyError, check_status, compare_locks, count, outputs_sha256, summary, table,
                                      tolerances)
from sparse_cbm_app.cli.repo import Reader, clone_at, dvc, git, reader, repo_root, repro, say, tracked_by_git
from sparse_cbm_app.cli.tolerances import SPREAD_FILE, Tolerances


def _checkout(root: Path, sha: str, in_place: bool, tmp: Optional[Path]) -> Path:
    dirty = git(["status", "--porcelain"], root).stdout.strip()
    if in_place:
        if dirty:
            raise VerifyError(f"--in-place needs a clean checkout, and {root} has uncommitted changes "
                              f"(`git status`): commit or stash them, or run without --in-place")
        return root
    if dirty:
        print(f"verify: warning: {root} has uncommitted changes; they are not verified "
              f"(verify checks the committed HEAD, {sha[:7]})", file=sys.stderr, flush=True)
    assert tmp is not None
    return clone_at(root, sha, tmp / "repo")


def verify(in_place: bool = False, keep: bool = False, targets: Sequence[str] = ()) -> int:
    """``targets``: verify only these stages and the stages they depend on (all when empty)."""
    root = repo_root()
    if not (root / "dvc.yaml").is_file():
        raise VerifyError(f"no dvc.yaml in {root}: verify checks the pipeline of the repository's top folder")
    sha = git(["rev-parse", "HEAD"], root).stdout.strip()
    tmp = None if in_place else Path(tempfile.mkdtemp(prefix="sparse-cbm-verify-"))
    try:
        work = _checkout(root, sha, in_place, tmp)
        where = "in place" if in_place else f"in a clone at {work}"
        say(f"verify: HEAD {sha[:7]} of {root}, {where}")
        log = tmp / "repro.log" if tmp is not None else work / ".dvc" / "tmp" / "verify-repro.log"
        return _verify_in(work, in_place, log, survives=keep or in_place, targets=list(targets))
    finally:
        if tmp is not None:
            if keep:
                say(f"verify: kept the clone: {tmp / 'repo'} (dvc repro's log: {tmp / 'repro.log'})")
            else:
                shutil.rmtree(tmp, ignore_errors=True)


def _measured(read: Reader, committed_lock_text: str) -> Tolerances:
    """The committed ``reproduce/spread.json``, and a word on what it was measured for."""
    text = read(SPREAD_FILE)
    if text is None:
        say(f"verify: no {SPREAD_FILE} is committed: differing outputs are judged by their stage's atol, or "
            f"exactly; `sparse-cbm spread` measures how far each metric moves across machines and seeds")
        return Tolerances.empty()
    try:
        measured = Tolerances.parse(text)
    except (ValueError, KeyError, TypeError) as exc:
        raise VerifyError(f"{SPREAD_FILE} cannot be read ({exc}): rerun `sparse-cbm spread`, or restore it "
                         f"with `git checkout -- {SPREAD_FILE}`") from None
    lock_sha = hashlib.sha256(committed_lock_text.encode()).hexdigest()
    about = measured.about
    if about.get("dvc_lock_sha256") == lock_sha:
        note = ""
    elif about.get("dvc_lock_outputs_sha256") == outputs_sha256(yaml.safe_load(committed_lock_text)):
        note = (" (measured for an earlier dvc.lock with the same outputs: its code or params moved, no result "
                "did; `sparse-cbm spread` measures the current one)")
    else:
        note = " (measured for another dvc.lock: `sparse-cbm spread` measures the current one)"
    say(f"verify: tolerances from {SPREAD_FILE}, measured on {about.get('cpu', 'an unnamed CPU')} over "
         f"{', '.join(about.get('configurations', [])) or 'no reruns'}{note}")
    return measured


def _chosen(work: Path, stages: List[str], targets: List[str]) -> List[str]:
    """The stages ``dvc repro --force TARGETS`` runs: the targets and every stage upstream of them."""
    unknown = [t for t in targets if t not in stages]
    if unknown:
        raise VerifyError(f"no stage {', '.join(unknown)} in dvc.yaml; its stages: {', '.join(stages)}")
    if not targets:
        return stages
    dry = dvc(["repro", "--force", "--dry", *targets], work).stdout
    runs = {line.split("'")[1] for line in dry.splitlines() if line.startswith("Running stage '")}
    return [s for s in stages if s in runs]


def _verify_in(work: Path, in_place: bool, log: Path, survives: bool, targets: List[str]) -> int:
    committed_text = reader(work, "HEAD")("dvc.lock")
    if committed_text is None:
        say("verify: FAILED: no dvc.lock is committed at HEAD: run `dvc repro` and commit dvc.lock "
             "(and the metrics and plots it lists that are not cached by DVC)")
        return 1
    committed = yaml.safe_load(committed_text) or {}
    declared = tolerances(yaml.safe_load((work / "dvc.yaml").read_text()) or {})
    measured = _measured(reader(work, "HEAD"), committed_text)
    stages = _chosen(work, dvc(["stage", "list", "--name-only"], work).stdout.split(), targets)

    # the stale-lock check: fails fast, before the long run
    status = json.loads(dvc(["status", "--json"], work).stdout or "{}")

    def read_params(path: str) -> Any:
        file = work / path
        return yaml.safe_load(file.read_text()) if file.is_file() else None

    stale = check_status(status, stages, committed, tracked_by_git(work), read_params)
    if stale:
        say("verify: the committed dvc.lock does not match the committed code, params or results "
             "(dvc status); the pipeline was not run:")
        say()
        say(table(stale))
        say()
        names = sorted({r.stage for r in stale}, key=lambda s: stages.index(s) if s in stages else len(stages))
        say(f"{count(len(stale), 'problem')} in {count(len(names), 'stage')} ({', '.join(names)}): rerun "
             f"`dvc repro` and commit dvc.lock and the outputs it lists, or undo the change")
        return 1
    say(f"verify: dvc.lock matches the committed code, params and results ({len(stages)} stages); "
        f"running `dvc repro --force{''.join(' ' + t for t in targets)}`")

    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    rc, lines, last = repro(work, log, targets=targets)
    if rc != 0:
        print("\n".join(lines[-40:]), file=sys.stderr, flush=True)
        whole = f"the whole log: {log}" if survives else "--keep keeps the clone and the whole log"
        say(f"verify: FAILED: `dvc repro` failed in stage {last or '(before any stage ran)'} "
             f"(exit status {rc}; the tail of its output is on stderr; {whole})")
        return 1
    say(f"verify: dvc repro done in {time.monotonic() - start:.0f} s")

    new = yaml.safe_load((work / "dvc.lock").read_text()) or {}
    rows = compare_locks(committed, new, declared, reader(work, "HEAD"), reader(work, None), measured, only=stages)
    say()
    say(table(rows))
    say()
    say(summary(rows))
    if in_place and git(["status", "--porcelain"], work).stdout.strip():
        say(f"verify: this run changed committed files in {work} (`git status`); "
             f"`git checkout -- . && dvc checkout` restores the committed results")
    return 1 if any(r.failed for r in rows) else 0
