"""Git and DVC in a checkout of the project, for ``sparse-cbm verify`` and ``sparse-cbm spread``:
subprocesses with a clean environment, files as committed or as they are, and ``dvc repro
--force`` with each stage named as it starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, List, Mapping, Optional, Sequence, Tuple

from sparse_cbm_app.cli.lockcheck import Reader, VerifyError


def env_for_children() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["DVC_NO_ANALYTICS"] = "1"
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def run(cmd: List[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env_for_children(), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise VerifyError(f"`{' '.join(cmd)}` failed in {cwd}:\n{(proc.stdout + proc.stderr).strip()}")
    return proc


def git(args: List[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    return run(["git", *args], cwd, check)


def dvc(args: List[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "dvc", *args], cwd, check)


def say(text: str = "") -> None:
    print(text, flush=True)


def repo_root() -> Path:
    proc = git(["rev-parse", "--show-toplevel"], Path.cwd(), check=False)
    if proc.returncode != 0:
        raise VerifyError("not inside a git repository: run `sparse-cbm verify` in a checkout of the project")
    return Path(proc.stdout.strip())


def clone_at(root: Path, sha: str, dest: Path) -> Path:
    """A clone of ``root`` in ``dest`` (a new folder), checked out at commit ``sha``."""
    git(["clone", "--quiet", "--no-hardlinks", str(root), str(dest)], dest.parent)
    if git(["rev-parse", "HEAD"], dest).stdout.strip() != sha:
        git(["fetch", "--quiet", str(root), sha], dest)
        git(["checkout", "--quiet", "--detach", sha], dest)
    return dest


def reader(work: Path, rev: Optional[str]) -> Reader:
    def read(path: str) -> Optional[str]:
        if rev is None:
            file = work / path
            return file.read_text() if file.is_file() else None
        proc = git(["show", f"{rev}:{path}"], work, check=False)
        return proc.stdout if proc.returncode == 0 else None

    return read


def tracked_by_git(work: Path) -> Callable[[str], bool]:
    """Whether git tracks a path, or a file below it."""
    files = set(git(["ls-files", "-z"], work).stdout.split("\0")) - {""}

    def tracked(path: str) -> bool:
        return path in files or any(f.startswith(path.rstrip("/") + "/") for f in files)

    return tracked


def repro(work: Path, log: Path, env: Optional[Mapping[str, str]] = None, label: str = "",
          targets: Sequence[str] = ()) -> Tuple[int, List[str], Optional[str]]:
    """Run ``dvc repro --force [TARGETS]`` (every stage, or the targets and what they depend on; no
    run-cache) with ``env`` added to the environment, print each stage as it starts; (exit status,
    its output's lines, the last stage started)."""
    lines: List[str] = []
    stage = None
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "--force", *targets], cwd=work,
                                env={**env_for_children(), **(env or {})}, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
            lines.append(line.rstrip("\n"))
            if line.startswith("Running stage '"):
                stage = line.split("'")[1]
                say(f"  {label}running {stage}")
        rc = proc.wait()
    return rc, lines, stage
