"""Thread pools sized from the cores a process may use: affinity mask, cgroup quota, the `threads` param."""

import os
import subprocess
import sys

import pytest
import torch
import yaml

from sparse_cbm.runtime.cpus import (QUIET_OPENMP, affinity_cores, cgroup_quota, thread_count, usable_cores,
                                     use_threads)
from tests.conftest import REPO


def cgroup_v2(tmp_path, text):
    (tmp_path / "cpu.max").write_text(text)
    return tmp_path


def cgroup_v1(tmp_path, quota, period):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text(f"{quota}\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text(f"{period}\n")
    return tmp_path


def test_cgroup_v2_and_v1_quotas_in_cores(tmp_path):
    for d in "abcd":
        (tmp_path / d).mkdir()
    assert cgroup_quota(cgroup_v2(tmp_path / "a", "150000 100000\n")) == 1.5
    assert cgroup_quota(cgroup_v2(tmp_path / "b", "max 100000\n")) is None
    assert cgroup_quota(cgroup_v1(tmp_path / "c", 50000, 100000)) == 0.5
    assert cgroup_quota(cgroup_v1(tmp_path / "d", -1, 100000)) is None
    assert cgroup_quota(tmp_path / "nothing-here") is None


def test_usable_cores_is_the_affinity_mask_capped_by_the_quota_rounded_down(tmp_path):
    assert usable_cores(tmp_path) == affinity_cores()                          # no cgroup files: the mask
    if hasattr(os, "sched_getaffinity"):
        assert affinity_cores() == len(os.sched_getaffinity(0))
    assert usable_cores(cgroup_v2(tmp_path, "150000 100000")) == 1             # 1.5 cores -> 1 thread
    (tmp_path / "cpu.max").write_text("10000 100000")
    assert usable_cores(tmp_path) == 1                                         # never below one
    (tmp_path / "cpu.max").write_text("6400000 100000")
    assert usable_cores(tmp_path) == affinity_cores()                          # a quota above the mask


def test_a_process_limited_by_taskset_gets_one_thread():
    if not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs an affinity mask of two or more cores")
    code = ("import os; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]}); "
            "from sparse_cbm.runtime.cpus import use_threads; import torch; print(use_threads('auto'), "
            "torch.get_num_threads())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["1", "1"]


def test_the_threads_param_overrides_and_is_checked():
    assert thread_count(3) == 3 and thread_count("auto") == usable_cores()
    for bad in (0, -2, "many", True, 1.5):
        with pytest.raises(ValueError, match="threads must be 'auto' or a positive integer"):
            thread_count(bad)
    before = torch.get_num_threads()
    try:
        assert use_threads(1) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_stage_processes_make_idle_openmp_threads_sleep_before_torch_loads():
    code = "import sys, os, stages; print('torch' in sys.modules, os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k not in QUIET_OPENMP}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                         check=True).stdout
    assert out.split() == ["False", "PASSIVE"]


def test_every_stage_that_sizes_threads_declares_the_param():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        uses = "params = stage_params()" in (REPO / "stages" / f"{name}.py").read_text()
        assert uses == ("threads" in stage.get("params", [])), name
    assert sum("threads" in s.get("params", []) for s in stages.values()) >= len(stages) - 2   # report and
    # check_params have no pool


def test_small_steps_run_on_one_thread_and_the_pool_is_restored_after():
    from sparse_cbm.runtime.cpus import SMALL_STEP_FLOPS, threads_for

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with threads_for(SMALL_STEP_FLOPS / 10) as n:
            assert n == 1 == torch.get_num_threads()
        assert torch.get_num_threads() == 2
        with threads_for(SMALL_STEP_FLOPS * 10) as n:
            assert n == 2 == torch.get_num_threads()
        with pytest.raises(RuntimeError, match="boom"):
            with threads_for(1.0):
                raise RuntimeError("boom")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_the_sparse_paths_step_cost_picks_one_thread_here_and_every_thread_at_imagenets_shape(monkeypatch):
    import numpy as np

    from sparse_cbm.bottleneck import sparse_layer
    from sparse_cbm.runtime.cpus import SMALL_STEP_FLOPS

    seen = []
    real = sparse_layer.threads_for
    monkeypatch.setattr(sparse_layer, "threads_for", lambda flops: seen.append(flops) or real(flops))
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((512, 112)).astype(np.float32), rng.integers(0, 20, 512)
    sparse_layer.fit_sparse_path(lambda a: a, (x, y), None, 20, path_points=2, max_epochs=1)
    assert len(seen) == 2 and all(f < SMALL_STEP_FLOPS for f in seen)  # the default world's steps: one thread
    imagenet = np.zeros((1, 768), np.float32)
    cbl = torch.nn.Linear(768, 4751)
    assert sparse_layer._step_flops(cbl, imagenet, 256, 1000) > 100 * SMALL_STEP_FLOPS
