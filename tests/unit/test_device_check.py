"""``bench/device.py``'s parts that its CPU smoke run (tests/unit/test_bench.py, one stage with no
metrics) does not reach: the judgement of a rerun's metrics, the bare forward, the stage log line it
reads the embedding rate from, the copy of a given stage's outputs and the clone's device profile."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

import pytest

from bench.device import RATE, bare_forward, copy_given, judge, on_device

REPO = Path(__file__).resolve().parents[2]


def project(tmp_path: Path, spread: dict) -> Path:
    """A git repo with one stage that declares metrics/m.json, committed, and a measured spread."""
    work = tmp_path / "work"
    (work / "metrics").mkdir(parents=True)
    (work / "reproduce").mkdir()
    (work / "dvc.yaml").write_text(yaml.safe_dump(
        {"stages": {"score": {"cmd": "true", "meta": {"reproduce": {"metrics": ["metrics/m.json"]}}}}}))
    (work / "metrics/m.json").write_text(json.dumps({"top1": 0.9, "nec": 4.5}))
    (work / "reproduce/spread.json").write_text(json.dumps({"measured": {}, "metrics": {"metrics/m.json": {
        key: {"machine": m, "seed": s, "chaotic": m > s, "tolerance": 1.5 * max(m, s)}
        for key, (m, s) in spread.items()}}}))
    for cmd in (["init", "-q"], ["add", "-A"],
                ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "committed run"]):
        subprocess.run(["git", *cmd], cwd=work, check=True)
    return work


def test_a_rerun_within_the_measured_spread_passes_and_one_beyond_it_fails(tmp_path, capsys):
    work = project(tmp_path, {"top1": (0.0, 0.02), "nec": (0.0, 0.2)})
    (work / "metrics/m.json").write_text(json.dumps({"top1": 0.91, "nec": 4.6}))  # a GPU's rerun, within spread
    assert judge(work, ["score"], {"metrics/m.json"}) is False
    assert "score              within spread: compared by metrics/m.json" in capsys.readouterr().out
    (work / "metrics/m.json").write_text(json.dumps({"top1": 0.8, "nec": 4.6}))  # 0.1 off, tolerance 0.03
    assert judge(work, ["score"], {"metrics/m.json"}) is True
    out = capsys.readouterr().out
    assert "MOVED" in out and "top1: 0.9 committed, 0.8 now (tolerance 0.03)" in out
    # a run that did not rewrite the file (its stage downstream, not run) judges nothing rather than passing
    assert judge(work, ["score"], set()) is False
    assert "score              not judged: metrics/m.json not rewritten by the stages run" in capsys.readouterr().out


def test_the_bare_forward_runs_the_params_backbone():
    assert bare_forward(REPO, "cpu", 1) > 0


def test_the_rate_is_read_from_the_line_embed_images_logs():
    # the format of sparse_cbm/storage/image_cache.py's log line, with its workers' description
    line = "train (%s): %d images in %.1f s (%.1f img/s), %d skipped" % ("worker 1 of 2", 1200, 33.1, 36.3, 0)
    found = RATE.search(f"00:04:18 INFO sparse_cbm.storage.image_cache: {line}")
    assert found and found.group(1) == "1200" and float(found.group(2)) == 36.3


def test_a_given_stage_has_its_locked_outputs_copied_and_a_missing_one_is_named(tmp_path):
    source, work = tmp_path / "checkout", tmp_path / "clone"
    (source / "data/filtered").mkdir(parents=True)
    (source / "data/filtered/concepts.txt").write_text("blue\nstar\n")
    (source / "metrics").mkdir()
    (source / "metrics/filter.json").write_text('{"kept": 2}')
    (work / "data/filtered").mkdir(parents=True)  # a destination already there (an out tracked by git) is replaced
    (work / "data/filtered/stale.txt").write_text("old")
    (work / "metrics").mkdir()
    (work / "metrics/filter.json").write_text('{"kept": 9}')
    lock = {"filter": {"cmd": "true", "outs": [{"path": "data/filtered", "nfiles": 1}, {"path": "metrics/filter.json"}]},
            "report": {"cmd": "true"}}
    (work / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": lock}))
    copy_given(source, work, ["filter"])
    assert sorted(p.name for p in (work / "data/filtered").iterdir()) == ["concepts.txt"]
    assert (work / "data/filtered/concepts.txt").read_text() == "blue\nstar\n"
    assert (work / "metrics/filter.json").read_text() == '{"kept": 2}'
    with pytest.raises(SystemExit, match="--given embed: no such stage in dvc.lock"):
        copy_given(source, work, ["embed"])
    lock["filter"]["outs"][0]["nfiles"] = 3  # the checkout's outputs are not the lock's
    (work / "dvc.lock").write_text(yaml.safe_dump({"stages": lock}))
    with pytest.raises(SystemExit, match="data/filtered holds 1 files, the lock 3: run `dvc repro filter` here first"):
        copy_given(source, work, ["filter"])
    (work / "dvc.lock").write_text(yaml.safe_dump({"stages": {"filter": {"outs": [{"path": "data/other"}]}}}))
    with pytest.raises(SystemExit, match="data/other is not in this checkout: run `dvc repro filter` here first"):
        copy_given(source, work, ["filter"])


def test_the_device_profile_sets_the_devices_and_the_loader_workers_only_when_asked(tmp_path, monkeypatch):
    applied = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: applied.append(yaml.safe_load(Path(cmd[-1]).read_text())))
    on_device(tmp_path, "cuda", {})
    on_device(tmp_path, "cuda:1", {}, num_workers=15)
    assert applied == [{"backbone": {"device": "cuda"}, "train": {"device": "cuda"}},
                       {"backbone": {"device": "cuda:1", "num_workers": 15}, "train": {"device": "cuda:1"}}]
