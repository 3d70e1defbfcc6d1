"""The embedding stages as 2 worker processes under torchrun (gloo), on the small random CLIP and a small
shapes world: each writes the bytes one process writes, whether the stage launches its workers
(``processes: 2``) or the user's own ``torchrun`` does (the command of docs/usage.md); a worker killed
mid-stage fails the stage with a message that names it, and a rerun resumes its shard and ends with the
same bytes. (The in-process version of these checks is tests/unit/storage/test_shards.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from sparse_cbm.runtime.workers import shard
from sparse_cbm.storage.embed import COMMIT_EVERY_ENV, progress_name
from tests.conftest import REPO
from tests.project import env
from tests.unit.storage.test_shards import assert_same_but_run, files_of

pytestmark = pytest.mark.pipeline

STAGES = {"embed_images": "image_cache", "embed_prompted": "prompted", "embed_features": "features"}


def small_project(root: Path, processes: int, **spatial) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["processes"] = processes
    params["dataset"]["shapes"].update(n_train=48, n_test=24)
    params["backbone"].update(model="sparse-cbm-tiny", pretrained="none", batch_size=8)
    params["spatial"].update({**dict(train_images=20, test_images=10, batch_size=4, grid=3), **spatial})
    params["spatial"]["prompts"] = {"model": None, "pretrained": None}
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def stage_env(**extra) -> dict:
    return {**env(), "PYTHONPATH": str(REPO), **extra}


def run_stage(root: Path, stage: str, out: str):
    cmd = [sys.executable, "-m", f"stages.{stage}", "--out", out, "--scratch", f"scratch/{stage}"]
    proc = subprocess.run(cmd, cwd=root, env=stage_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_two_workers_write_the_bytes_of_one_in_every_embedding_stage(tmp_path):
    one, two = small_project(tmp_path / "one", 1), small_project(tmp_path / "two", 2)
    for stage, out in STAGES.items():
        run_stage(one, stage, out)
        proc = run_stage(two, stage, out)
        assert "launching 2 worker processes" in proc.stderr
        assert_same_but_run(files_of(one / out), files_of(two / out), 2)
        assert not (two / "scratch" / stage).exists()


def documented_torchrun() -> list:
    """The torchrun command of docs/usage.md#several-processes-gpus-and-nodes, as a list."""
    text = (REPO / "docs" / "usage.md").read_text(encoding="utf-8")
    line = next(ln.strip() for ln in text.splitlines() if ln.strip().startswith("torchrun --standalone"))
    return line.split()


def test_the_documented_torchrun_command_shards_a_stage(tmp_path):
    cmd = documented_torchrun()
    assert cmd[:6] == ["torchrun", "--standalone", "--nproc-per-node", "2", "-m", "stages.embed_features"]
    one, two = small_project(tmp_path / "one", 1), small_project(tmp_path / "two", 1)
    run_stage(one, "embed_features", "data/spatial/features")
    cmd[0] = str(Path(sys.executable).with_name("torchrun"))
    proc = subprocess.run(cmd, cwd=two, env=stage_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "feature maps train (worker 1)" in proc.stderr  # each worker's bar names it
    assert_same_but_run(files_of(one / "data/spatial/features"), files_of(two / "data/spatial/features"), 2)


def worker(parent: psutil.Process, rank: int):
    """The worker process of ``rank`` that ``parent`` (the stage process) launched, once it runs."""
    for child in parent.children(recursive=True):
        try:
            if child.environ().get("RANK") == str(rank):
                return child
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return None


def test_a_killed_worker_fails_the_stage_by_name_and_a_rerun_resumes_its_shard(tmp_path):
    spatial = dict(grid=7, train_images=64, test_images=16)
    one, two = small_project(tmp_path / "one", 1, **spatial), small_project(tmp_path / "two", 2, **spatial)
    run_stage(one, "embed_prompted", "prompted")

    cmd = [sys.executable, "-m", "stages.embed_prompted", "--out", "prompted", "--scratch", "scratch/embed_prompted"]
    stage = subprocess.Popen(cmd, cwd=two, env=stage_env(**{COMMIT_EVERY_ENV: "0"}), stderr=subprocess.PIPE,
                             text=True)
    images = json.loads((one / "prompted" / "train" / "manifest.json").read_text())["images"]
    lo, hi = shard(images, 4, 1, 2)
    progress = two / "scratch" / "embed_prompted" / "train" / progress_name(lo * 49, hi * 49)
    deadline, killed = time.monotonic() + 300, None
    while time.monotonic() < deadline and stage.poll() is None:
        done = json.loads(progress.read_text())["rows_done"] if progress.is_file() else 0
        if done > lo * 49:  # worker 1 has committed a batch of its shard, and has more to do
            killed = worker(psutil.Process(stage.pid), 1)
            killed.kill()
            break
        time.sleep(0.02)
    assert killed is not None, "worker 1 never committed a batch"
    _, stderr = stage.communicate(timeout=300)
    assert stage.returncode == 2, stderr[-3000:]
    assert f"worker 1 of 2 (pid {killed.pid}) failed: killed by SIGKILL" in stderr
    assert "rerun the stage and it resumes the unfinished shards only" in stderr
    assert not (two / "prompted").exists()  # nothing that looks complete
    kept = json.loads(progress.read_text())["rows_done"]
    assert lo * 49 < kept < hi * 49

    proc = run_stage(two, "embed_prompted", "prompted")
    assert f"resuming train rows {lo * 49}-{hi * 49} at row {kept}" in proc.stderr
    assert_same_but_run(files_of(one / "prompted"), files_of(two / "prompted"), 2)
    assert not (two / "scratch" / "embed_prompted").exists()
