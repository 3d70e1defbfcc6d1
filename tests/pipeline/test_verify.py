"""`sparse-cbm verify` on a real committed project: one `dvc repro` shared with the pipeline tier sets it
up; verify reruns in its own clone."""

import hashlib
import json
import re
import sys
from pathlib import Path

import pytest
import yaml

from sparse_cbm_app.cli.tolerances import SPREAD_FILE

pytestmark = pytest.mark.pipeline


def _project():
    from tests.project import copy_project, dvc, run

    return copy_project, dvc, run


@pytest.fixture(scope="module")
def committed(reproduced, tmp_path_factory):
    """A project whose dvc.lock, metrics and plots come from its own `dvc repro`, committed."""
    from tests.project import copy_reproduced

    return copy_reproduced(reproduced[0], tmp_path_factory.mktemp("verify") / "p")


def verify(root: Path, *args: str):
    _, _, run = _project()
    return run([sys.executable, "-m", "sparse_cbm_app.cli", "verify", *args], root, check=False)


def set_epochs(params: Path, epochs: int) -> None:
    text = params.read_text()
    params.write_text(text.replace("\n  epochs: 20\n", f"\n  epochs: {epochs}\n"))
    assert params.read_text() != text


def changed_clone(committed: Path, dest: Path, edit) -> Path:
    """A clone of the committed project with one more commit made by ``edit(root)``, not rerun."""
    _, _, run = _project()
    run(["git", "clone", "-q", str(committed), str(dest)], committed.parent)
    run(["git", "config", "user.name", "test"], dest)
    run(["git", "config", "user.email", "test@example.invalid"], dest)
    edit(dest)
    run(["git", "commit", "-qam", "changed without rerunning"], dest)
    return dest


CACHES = {("embed_images", "data/image_cache"), ("embed_text", "data/text_cache"),
          ("embed_prompted", "data/spatial/prompted"), ("embed_features", "data/spatial/features"),
          ("embed_prompt_text", "data/spatial/prompt_concepts"), ("concepts", "data/concepts"),
          ("filter", "data/filtered")}


def test_a_lock_made_on_one_kernel_set_verifies_on_another(committed, monkeypatch):
    """The committed lock was made with this CPU's best kernels; verify reruns both branches with PyTorch's
    scalar kernels, as another CPU would compute: the fp64 caches keep their bytes, and the rest lands within
    the measured spread. (Not compare: the quick profile's 320 test images move its control accuracies in
    steps of 1/320, coarser than the default world's measured spread; the default world's full DAG is what
    `sparse-cbm spread` measures on other kernel sets.)"""
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")
    proc = verify(committed, "evaluate", "evaluate_spatial")
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    skipped = {"compare", "report"}
    outs = [(s, o["path"]) for s, v in yaml.safe_load((committed / "dvc.lock").read_text())["stages"].items()
            for o in v["outs"] if s not in skipped]
    assert {s for s, _ in outs} | skipped == set(yaml.safe_load((committed / "dvc.yaml").read_text())["stages"])
    assert CACHES <= set(outs)
    for stage, path in outs:
        result = "reproduced$" if (stage, path) in CACHES else r"(reproduced|within tolerance \(compared by .*\))$"
        assert re.search(rf"^{stage}\s+{re.escape(path)}\s+{result}", out, re.M), out
        assert f"  running {stage}\n" in out
    assert not any(f"  running {stage}\n" in out for stage in skipped)
    assert re.search(rf"^{len(outs)} outputs reproduced exactly, 0 within tolerance, 0 failed$|"
                     rf"^\d+ outputs reproduced exactly, \d+ within tolerance \(.*\), 0 failed$", out, re.M), out
    assert f"verify: tolerances from {SPREAD_FILE}, measured on " in out
    assert "warning" not in proc.stderr
    _, _, run = _project()
    assert run(["git", "status", "--porcelain"], committed).stdout == ""  # it ran in a clone


def test_a_change_in_training_recorded_without_rerunning_fails_naming_train(committed, tmp_path):
    """A bug seeded in training (labels off by one class), recorded in dvc.lock as `dvc commit` records code
    without running it: the lock matches the code, so only the rerun's metrics can catch it."""
    def edit(root):
        stage = root / "stages/train.py"
        text = stage.read_text()
        seeded = text.replace("(train.rows(), train.labels), (val.rows()",
                              "(train.rows(), (train.labels + 1) % len(classes)), (val.rows()")
        assert seeded != text
        stage.write_text(seeded)
        lock_path = root / "dvc.lock"
        lock_data = yaml.safe_load(lock_path.read_text())
        for dep in lock_data["stages"]["train"]["deps"]:
            if dep["path"] == "stages/train.py":
                dep.update(md5=hashlib.md5(stage.read_bytes()).hexdigest(), size=stage.stat().st_size)
        lock_path.write_text(yaml.safe_dump(lock_data, sort_keys=False))

    root = changed_clone(committed, tmp_path / "t", edit)
    proc = verify(root, "evaluate")              # evaluate and what it depends on: train and the caches
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    assert "dvc.lock matches the committed code, params and results (7 stages); running `dvc repro --force " \
           "evaluate`" in out                                                          # the lock is not stale
    assert "running compare" not in out and not re.search(r"^compare ", out, re.M)
    assert re.search(r"^train\s+data/model\s+FAILED \(hash differs and metrics moved beyond their measured "
                     r"spread: .*metrics/(train|evaluate)\.json: [a-z_.\[\]0-9]*top1: [0-9.]+ committed, [0-9.]+ now "
                     r"\(tolerance [0-9.e-]+\)", out, re.M), out
    for stage, path in CACHES:
        if not stage.startswith(("embed_prompt", "embed_features")):
            assert re.search(rf"^{stage}\s+{re.escape(path)}\s+reproduced$", out, re.M), out
    assert re.search(r"\d+ failed: .*data/model \(train\)", out), out


def test_a_param_changed_without_rerunning_fails_before_running(committed, tmp_path):
    def edit(root):
        params = root / "params.yaml"
        set_epochs(params, 3)

    root = changed_clone(committed, tmp_path / "p", edit)
    proc = verify(root)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert re.search(r"^train\s+param train\.epochs\s+FAILED \(changed since the committed dvc\.lock: "
                     r"20 in dvc\.lock, 3 now\)$", proc.stdout, re.M), proc.stdout
    assert "the pipeline was not run" in proc.stdout and "running" not in proc.stdout


def test_a_stale_lock_fails_before_running_naming_every_stage_whose_code_changed(committed, tmp_path):
    def edit(root):
        code = root / "sparse_cbm/bottleneck/objectives/l1.py"
        code.write_text(code.read_text() + "\n# changed, and dvc.lock not regenerated\n")

    root = changed_clone(committed, tmp_path / "s", edit)
    proc = verify(root)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    for stage in ("train", "compare", "evaluate", "train_spatial", "evaluate_spatial"):
        assert re.search(rf"^{stage}\s+sparse_cbm/bottleneck\s+FAILED \(dependency modified since the committed "
                         rf"dvc\.lock\)$", proc.stdout, re.M), proc.stdout
    assert "the pipeline was not run" in proc.stdout and "running" not in proc.stdout


def test_an_edited_committed_result_fails_naming_its_stage(committed, tmp_path):
    def edit(root):
        path = root / "metrics/evaluate.json"
        text = path.read_text()
        top1 = json.loads(text)["test"]["cbm"]["top1"]
        path.write_text(text.replace(f'"top1": {top1},', f'"top1": {round(1 - top1 / 2, 4)},', 1))
        assert path.read_text() != text

    root = changed_clone(committed, tmp_path / "m", edit)
    proc = verify(root)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert re.search(r"^evaluate\s+metrics/evaluate\.json\s+FAILED \(committed output modified", proc.stdout, re.M)
    assert "1 problem in 1 stage (evaluate)" in proc.stdout and "running" not in proc.stdout


def test_in_place_refuses_a_dirty_checkout_and_a_clone_warns(committed, tmp_path):
    _, _, run = _project()
    root = tmp_path / "d"
    run(["git", "clone", "-q", str(committed), str(root)], tmp_path)
    (root / "stages/concepts.py").write_text((root / "stages/concepts.py").read_text() + "\n# uncommitted\n")
    proc = verify(root, "--in-place")
    assert proc.returncode == 2 and "--in-place needs a clean checkout" in proc.stderr
    params = root / "params.yaml"
    set_epochs(params, 3)  # uncommitted: not seen
    (root / "metrics/evaluate.json").write_text("{}")
    run(["git", "add", "metrics"], root)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"], root)
    proc = verify(root)
    assert "has uncommitted changes; they are not verified" in proc.stderr
    assert proc.returncode == 1 and "param train.epochs" not in proc.stdout
    assert re.search(r"^evaluate\s+metrics/evaluate\.json\s+FAILED", proc.stdout, re.M)


def test_an_unknown_target_stage_is_a_named_error(committed):
    proc = verify(committed, "trian")
    assert proc.returncode == 2 and "no stage trian in dvc.yaml; its stages: check_params, concepts, " in proc.stderr
    assert "running" not in proc.stdout
