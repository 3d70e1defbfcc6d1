"""One writer at a time: a stage holds an exclusive lock for as long as it runs.

``dvc repro`` killed with SIGKILL leaves its running stage behind as an orphan, which goes on writing its
scratch folder and outputs; a rerun would start a second writer on the same files. The lock is an
``flock`` on ``<project>/.dvc/tmp/sparse-cbm-locks/<stage>.lock`` (DVC's own git-ignored scratch; a
folder under the system's temporary directory outside a DVC project), holding the holder's pid and command
line. The kernel releases it when the holder dies, however it dies, so a lock left by a dead process is
simply taken over; a live holder makes the second run stop with a message that names it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from sparse_cbm.errors import SparseCbmError


class StageBusyError(SparseCbmError):
    """Another process is running the same stage of the same project."""


def lock_folder(root: Optional[Path] = None) -> Path:
    root = Path(root or os.getcwd()).resolve()
    if (root / ".dvc").is_dir():
        return root / ".dvc" / "tmp" / "sparse-cbm-locks"
    return Path(tempfile.gettempdir()) / f"sparse-cbm-locks-{hashlib.sha256(str(root).encode()).hexdigest()[:12]}"


def _acquire(fd: int, wait: float) -> bool:
    """Take the exclusive lock, trying for ``wait`` seconds; whether it was taken."""
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)


@contextmanager
def stage_lock(stage: str, root: Optional[Path] = None, wait: float = 2.0) -> Iterator[Path]:
    """Hold the stage's lock for the block; raise StageBusyError naming the holder when a live process still has
    it after ``wait`` seconds (a holder that is just starting or ending is waited for)."""
    folder = lock_folder(root)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stage}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not _acquire(fd, wait):
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "another process"
            raise StageBusyError(
                f"stage {stage} is already running in this project ({holder}). Wait for it to finish, or stop it "
                f"(`kill <pid>`): a `dvc repro` that was killed may have left it running.")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}, since {time.strftime('%H:%M:%S')}: {' '.join(sys.argv)[:300]}".encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock
