"""One writer at a time: a second run of a stage beside a live one stops naming it; a dead holder's lock
is taken over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from sparse_cbm.runtime.lock import StageBusyError, stage_lock
from sparse_cbm.runtime.runner import run_stage
from tests.conftest import REPO

HOLDER = ("import sys, time; from sparse_cbm.runtime.lock import stage_lock\n"
          "with stage_lock('embed_images'):\n    print('held', flush=True); time.sleep(120)\n")


@pytest.fixture()
def project(tmp_path):
    (tmp_path / ".dvc").mkdir()
    return tmp_path


def hold(root):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER], cwd=root, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_is_stopped_naming_the_first_and_a_dead_ones_lock_is_taken_over(project, monkeypatch, capsys):
    proc = hold(project)
    try:
        with pytest.raises(StageBusyError, match=rf"stage embed_images is already running in this project \(pid "
                                                 rf"{proc.pid}, since .*\).*kill <pid>"):
            with stage_lock("embed_images", project):
                pass
        with stage_lock("train", project):  # another stage is free
            pass
        monkeypatch.chdir(project)
        ran = []
        with pytest.raises(SystemExit) as stopped:
            run_stage("embed_images", lambda: ran.append(1))
        assert stopped.value.code == 2 and not ran
        assert f"embed_images: error: stage embed_images is already running in this project (pid {proc.pid}" \
            in capsys.readouterr().err
    finally:
        proc.send_signal(signal.SIGKILL)  # as an orphan dies, or is killed
        proc.wait()
    with stage_lock("embed_images", project) as path:
        assert path.read_text().startswith(f"pid {os.getpid()}, since ")
    assert path == project / ".dvc" / "tmp" / "sparse-cbm-locks" / "embed_images.lock"
