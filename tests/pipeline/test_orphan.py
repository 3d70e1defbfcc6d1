"""A `dvc repro` killed with SIGKILL leaves its stage running as an orphan; a rerun stops with a message
that names the orphan instead of writing beside it, and once the orphan is gone a rerun completes. (The
orphan is stopped with SIGSTOP while the rerun starts, so that it is surely still alive then: the quick
profile's stages are short.)"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.project import copy_reproduced, dvc, env

pytestmark = pytest.mark.pipeline


def holder(path):
    """The pid the lock file names when it is a live `stages.compare` process (the copied file may name the
    reproduced project's old one), else None."""
    try:
        pid = int(path.read_text().split(",")[0].split()[1])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (OSError, ValueError, IndexError):
        return None
    return pid if "stages.compare" in cmdline else None


def held_by_another(path) -> bool:
    if not path.is_file():
        return False
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def test_a_rerun_beside_an_orphaned_stage_names_it_and_a_later_rerun_completes(reproduced, tmp_path):
    root = copy_reproduced(reproduced[0], tmp_path / "p")
    lock = root / ".dvc" / "tmp" / "sparse-cbm-locks" / "compare.lock"
    first = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "--force", "--single-item", "compare"], cwd=root, env=env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while holder(lock) is None:  # read without taking the lock, so that the stage never finds it held
        assert first.poll() is None and time.monotonic() < deadline, "the compare stage never started"
        time.sleep(0.2)
    orphan = holder(lock)
    first.send_signal(signal.SIGKILL)  # dvc dies; its stage goes on as an orphan
    first.wait()
    os.kill(orphan, signal.SIGSTOP)  # held still, so that it is surely alive while the rerun starts
    try:
        second = dvc(["repro", "--force", "--single-item", "compare"], root, check=False)
        text = second.stdout + second.stderr
        assert second.returncode != 0 and f"stage compare is already running in this project (pid {orphan}" in text
        assert "Traceback" not in text
    finally:
        os.kill(orphan, signal.SIGKILL)
        for _ in range(100):
            if not held_by_another(lock):
                break
            time.sleep(0.1)
    third = dvc(["repro", "--force", "--single-item", "compare"], root)
    assert third.returncode == 0
    assert "up to date" in dvc(["status"], root).stdout
