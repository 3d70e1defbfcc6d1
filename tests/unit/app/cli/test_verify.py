"""`sparse-cbm verify`: the comparison on synthetic locks, the spread model, and how CI calls it
(the command on a real project is in tests/pipeline/test_verify.py)."""

import hashlib
import json
import re

import pytest
import yaml

from sparse_cbm_app.cli.tolerances import (MACHINE, SEED, SPREAD_FILE, Spread, Tolerances, dumps, is_number, leaves,
                                       measure)
from sparse_cbm_app.cli.lockcheck import (FAILED, REPRODUCED, WITHIN, Tolerance, VerifyError, check_status,
                                      compare_locks, compare_metrics, summary, table, tolerances)
from tests.conftest import REPO

METRICS = {"test": {"cbm": {"top1": 0.9375, "top5": 1.0}}, "loss": "l1", "concepts": 28}


def lock(**stages):
    """{stage: {path: md5}} -> a dvc.lock dict."""
    return {"schema": "2.0", "stages": {
        name: {"cmd": f"python -m stages.{name}",
               "outs": [{"path": p, "hash": "md5", "md5": m, "size": 1} for p, m in sorted(outs.items())]}
        for name, outs in stages.items()}}


def reader(files):
    return lambda path: None if files.get(path) is None else json.dumps(files[path])


def metrics_with(top1):
    m = json.loads(json.dumps(METRICS))
    m["test"]["cbm"]["top1"] = top1
    return m


COMMITTED = lock(concepts={"data/concepts": "a.dir"}, train={"data/model": "b.dir", "metrics/train.json": "c"})
TOL = {"train": Tolerance(("metrics/train.json",), 0.01)}


def compare(new, committed=COMMITTED, tol=TOL, old_metrics=METRICS, new_metrics=METRICS):
    return compare_locks(committed, new, tol, reader({"metrics/train.json": old_metrics}),
                         reader({"metrics/train.json": new_metrics}))


def by_output(rows):
    return {r.output: r for r in rows}


def test_equal_hashes_reproduce():
    rows = compare(COMMITTED)
    assert [(r.stage, r.output, r.status) for r in rows] == [
        ("concepts", "data/concepts", REPRODUCED), ("train", "data/model", REPRODUCED),
        ("train", "metrics/train.json", REPRODUCED)]
    assert summary(rows) == "3 outputs reproduced exactly, 0 within tolerance, 0 failed"


def test_a_differing_output_without_tolerance_fails_naming_the_stage():
    rows = compare(lock(concepts={"data/concepts": "x.dir"}, train={"data/model": "b.dir", "metrics/train.json": "c"}))
    row = by_output(rows)["data/concepts"]
    assert row.failed and row.stage == "concepts" and "no meta.reproduce tolerance" in row.detail
    assert summary(rows).endswith("1 failed: data/concepts (concepts)")
    assert re.search(r"^concepts\s+data/concepts\s+FAILED \(hash differs", table(rows), re.M)


def test_a_differing_output_with_tolerance_is_judged_by_its_metrics():
    new = lock(concepts={"data/concepts": "a.dir"}, train={"data/model": "other.dir", "metrics/train.json": "other"})
    within = by_output(compare(new, new_metrics=metrics_with(0.9400)))
    assert within["data/model"].status == within["metrics/train.json"].status == WITHIN
    assert within["data/model"].detail == ("compared by metrics/train.json, within atol 0.01, "
                                           "largest difference 0.0025")
    rows = compare(new, new_metrics=metrics_with(0.9))
    beyond = by_output(rows)["data/model"]
    assert beyond.failed and beyond.stage == "train"
    assert "metrics/train.json: test.cbm.top1: 0.9375 committed, 0.9 now" in beyond.detail
    assert "2 failed: data/model (train), metrics/train.json (train)" in summary(rows)


MEASURED = Tolerances({"metrics/train.json": {"test.cbm.top1": Spread(machine=0.001, seed=0.004),
                                              "test.cbm.top5": Spread(machine=0.0, seed=0.0)}}, {})


def test_measured_spreads_set_each_metrics_tolerance():
    new = lock(concepts={"data/concepts": "a.dir"}, train={"data/model": "other.dir", "metrics/train.json": "other"})
    tol = {"train": Tolerance(("metrics/train.json",))}   # no atol: unmeasured metrics must match exactly

    def judged(metrics):
        return by_output(compare_locks(COMMITTED, new, tol, reader({"metrics/train.json": METRICS}),
                                       reader({"metrics/train.json": metrics}), MEASURED))["data/model"]

    assert judged(metrics_with(0.9375 + 0.0059)).status == WITHIN        # tolerance 1.5 x 0.004 = 0.006
    assert judged(metrics_with(0.9375 + 0.0059)).detail == (
        "compared by metrics/train.json, within their measured spread, largest difference 0.0059")
    row = judged(metrics_with(0.9375 - 0.0061))
    assert row.failed and "test.cbm.top1: 0.9375 committed, 0.9314 now (tolerance 0.006)" in row.detail
    m = metrics_with(0.9375)
    m["test"]["cbm"]["top5"] = 0.9999                                     # moved in no rerun: exact
    assert "test.cbm.top5: 1.0 committed, 0.9999 now (tolerance 0)" in judged(m).detail
    m = metrics_with(0.9375)
    m["concepts"] = 29                                                    # never measured: exact, and says so
    assert ("concepts: 28 committed, 29 now (no measured spread, so tolerance 0: `sparse-cbm spread` measures it)"
            in judged(m).detail)


def test_spread_is_the_largest_machine_move_and_the_seed_range():
    committed = {"m.json": {"a": 0.50, "b": 10, "c": "text", "d": [1.0, 2.0], "e": 0.3}}
    runs = {"kernels": {"m.json": {"a": 0.52, "b": 10, "c": "text", "d": [1.0, 2.5], "e": 0.3}},
            "threads": {"m.json": {"a": 0.49, "b": 10, "c": "text", "d": [1.0, 2.0]}},
            "seed-1": {"m.json": {"a": 0.45, "b": 12, "c": "text", "d": [1.0, 2.0], "e": 0.3}},
            "seed-2": {"m.json": {"a": 0.505, "b": 9, "c": "text", "d": [1.0, 2.0], "e": 0.4}}}
    kinds = {"kernels": MACHINE, "threads": MACHINE, "seed-1": SEED, "seed-2": SEED}
    spreads = measure(committed, runs, kinds)["m.json"]
    assert set(spreads) == {"a", "b", "d[0]", "d[1]", "e"}               # numbers only
    assert spreads["a"] == Spread(machine=pytest.approx(0.02), seed=pytest.approx(0.055))
    assert not spreads["a"].chaotic and spreads["a"].tolerance == pytest.approx(0.0825)
    assert spreads["b"] == Spread(0.0, 3.0) and spreads["b"].tolerance == 4.5
    assert spreads["d[1]"].chaotic and spreads["d[1]"].tolerance == 0.75   # the machine moves it, no seed does
    assert spreads["d[0]"].tolerance == 0.0                                # moved in no rerun: exact
    assert spreads["e"].machine == float("inf") and spreads["e"].tolerance == 0.0   # lost in a rerun: exact


def test_the_committed_spread_file_round_trips_and_covers_every_committed_metric():
    spreads = {"m.json": {"a": Spread(0.02, 0.055), "e": Spread(float("inf"), 0.1)}}
    text = dumps(spreads, {"cpu": "x"}, {"train:data/model": {"kernels": True}})
    back = Tolerances.parse(text)
    assert back.spreads == spreads and back.about == {"cpu": "x"}
    assert json.loads(text)["metrics"]["m.json"]["a"] == {"machine": 0.02, "seed": 0.055, "chaotic": False,
                                                          "tolerance": 0.0825}
    committed = Tolerances.parse((REPO / SPREAD_FILE).read_text())
    for path in ("metrics/train.json", "metrics/evaluate.json", "metrics/compare.json", "metrics/spatial.json"):
        numbers = {k for k, v in leaves(json.loads((REPO / path).read_text())) if is_number(v)}
        assert numbers == set(committed.spreads[path]), path


@pytest.mark.parametrize("new_metrics, expected", [
    ({**METRICS, "loss": "gumbel"}, "loss: 'l1' committed, 'gumbel' now"),
    ({**METRICS, "extra": 1}, "extra not in the committed file"),
    ({k: v for k, v in METRICS.items() if k != "concepts"}, "concepts missing from the new run"),
    (None, "metrics/train.json: no new version"),
    ({**METRICS, "concepts": float("nan")}, "concepts: 28 committed, nan now"),
])
def test_tolerance_needs_equal_keys_and_non_numeric_values(new_metrics, expected):
    new = lock(concepts={"data/concepts": "a.dir"}, train={"data/model": "other.dir", "metrics/train.json": "c"})
    row = by_output(compare(new, new_metrics=new_metrics))["data/model"]
    assert row.failed and expected in row.detail


def test_compare_metrics_nan_equals_nan_and_reports_the_largest_difference():
    assert compare_metrics({"a": float("nan"), "b": [1, 2.0]}, {"a": float("nan"), "b": [1, 2.5]}, 1.0) == (0.5, [])
    assert compare_metrics({"a": True}, {"a": 1}, 1.0)[1] == ["a: True committed, 1 now"]


def test_stages_missing_from_either_lock_fail():
    new = lock(concepts={"data/concepts": "a.dir"}, train={"data/model": "b.dir", "metrics/train.json": "c"},
               extra={"extra.txt": "d"})
    rows = compare(new)
    assert [(r.stage, r.status) for r in rows if r.failed] == [("extra", FAILED)]
    assert "missing from the committed dvc.lock" in rows[-1].detail
    rows = compare(lock(concepts={"data/concepts": "a.dir"}))
    assert [(r.stage, r.failed) for r in rows] == [("concepts", False), ("train", True)]


def test_tolerances_are_read_from_the_meta_of_dvc_yaml():
    declared = tolerances(yaml.safe_load((REPO / "dvc.yaml").read_text()))
    assert "concepts" not in declared                                  # must reproduce exactly
    assert declared["train"] == Tolerance(("metrics/train.json", "metrics/evaluate.json"))
    assert declared["compare"] == Tolerance(("metrics/compare.json",))
    spatial = ("embed_prompted", "embed_prompt_text", "embed_features", "train_spatial", "evaluate_spatial")
    assert {s: declared[s] for s in spatial} == {s: Tolerance(("metrics/spatial.json",)) for s in spatial}
    assert {s: t.metrics for s, t in declared.items() if s not in ("train", "compare", *spatial)} == {
        s: ("metrics/evaluate.json",) for s in ("embed_images", "filter", "embed_text", "evaluate", "report")}
    assert all(t.atol is None for t in declared.values())              # measured, not guessed
    assert tolerances({"stages": {"s": {"do": {"meta": {"reproduce": {"metrics": "m.json", "atol": 0}}}}}}) == {
        "s": Tolerance(("m.json",), 0.0)}
    for bad in ({"metrics": [], "atol": 0.1}, {"metrics": ["m.json"], "atol": -1}, {"atol": 0.1},
                {"metrics": ["m.json"], "atol": 0.1, "rtol": 0.1}):
        with pytest.raises(VerifyError, match="stage s: meta.reproduce"):
            tolerances({"stages": {"s": {"meta": {"reproduce": bad}}}})


# `dvc status --json` of a fresh clone (DVC 3.67): every cached output "not in cache", every
# dependency made by another stage "deleted"
FRESH = {
    "concepts": [{"changed outs": {"data/concepts": "not in cache"}}],
    "train": [{"changed deps": {"data/filtered/concepts.txt": "deleted"}},
              {"changed outs": {"data/model": "not in cache"}}],
    "evaluate": [{"changed deps": {"data/model": "deleted"}}, {"changed outs": {"data/evaluation": "not in cache"}}],
}
STATUS_LOCK = {"stages": {
    "concepts": {"outs": [{"path": "data/concepts", "md5": "a"}]},
    "filter": {"outs": [{"path": "data/filtered", "md5": "f"}]},
    "train": {"outs": [{"path": "data/model", "md5": "b"}, {"path": "metrics/train.json", "md5": "c"}],
              "params": {"params.yaml": {"seed": 0, "train": {"epochs": 20, "fc": {"lr": 0.01}}}}},
    "evaluate": {"outs": [{"path": "data/evaluation", "md5": "e"}, {"path": "metrics/evaluate.json", "md5": "m"}]},
    "report": {"outs": [{"path": "reports", "md5": "r"}]},
}}
STAGES = ["concepts", "filter", "train", "evaluate", "report"]
PARAMS_NOW = {"seed": 0, "train": {"epochs": 3, "fc": {"lr": 0.01}}}


def status_rows(status, stages=STAGES):
    return check_status(status, stages, STATUS_LOCK, lambda p: p.startswith("metrics/"), lambda f: PARAMS_NOW)


def test_a_fresh_clone_of_a_current_lock_passes_the_status_check():
    assert status_rows(FRESH) == []
    assert status_rows({"concepts": ["always changed"]}) == []


def test_a_param_changed_without_rerunning_names_the_stage_and_the_param():
    status = {**FRESH, "train": [{"changed deps": {"data/model": "deleted", "params.yaml": {"train": "modified"}}}],
              "report": [{"changed deps": {"params.yaml": "modified", "metrics/evaluate.json": "modified"}}]}
    rows = status_rows(status)
    assert [(r.stage, r.output) for r in rows] == [("train", "param train.epochs"), ("report", "params.yaml")]
    assert rows[0].detail == "changed since the committed dvc.lock: 20 in dvc.lock, 3 now"
    assert rows[1].detail == "dependency modified since the committed dvc.lock"


def test_a_new_or_removed_param_is_named_with_its_values():
    status = {"train": [{"changed deps": {"params.yaml": {"train": "modified", "loss": "new"}}}]}
    now = {"seed": 0, "loss": "l1", "train": {"epochs": 20, "fc": {}, "keep": "best"}}
    rows = check_status(status, ["train"], STATUS_LOCK, lambda p: False, lambda f: now)
    assert [(r.output, r.detail.split(": ", 1)[1]) for r in rows] == [
        ("param train.fc.lr", "0.01 in dvc.lock, absent now"), ("param train.keep", "absent in dvc.lock, \"best\" now"),
        ("param loss", "absent in dvc.lock, \"l1\" now")]


def test_an_edited_committed_output_a_changed_command_and_a_missing_stage_fail():
    status = {**FRESH, "evaluate": [{"changed outs": {"data/evaluation": "not in cache",
                                                      "metrics/evaluate.json": "modified"}}],
              "concepts": [{"changed deps": {"stages/concepts.py": "modified"}}, "changed command"]}
    rows = status_rows(status, STAGES + ["extra"])
    assert [(r.stage, r.output) for r in rows] == [
        ("concepts", "stages/concepts.py"), ("concepts", "cmd"), ("evaluate", "metrics/evaluate.json"),
        ("extra", "(all)")]
    assert "committed output modified" in rows[2].detail and "missing from the committed dvc.lock" in rows[3].detail


def test_ci_runs_verify_after_the_readme_test_command():
    lines = (REPO / ".ci/run").read_text().splitlines()
    test = 'python3 -m venv .venv && . .venv/bin/activate && pip install -e ".[test]" && DVC_NO_ANALYTICS=1 pytest'
    assert lines[0] == "#!/usr/bin/env bash" and "set -euo pipefail" in lines
    assert lines.index(test) < lines.index("DVC_NO_ANALYTICS=1 pytest -m pipeline") < lines.index("python -m sparse_cbm_app.cli verify")


def test_the_example_workflow_runs_sparse_cbm_verify():
    workflow = yaml.safe_load((REPO / ".github/workflows/reproduce.yml").read_text())
    steps = workflow["jobs"]["verify"]["steps"]
    assert workflow[True] == {"push": None, "pull_request": None, "workflow_dispatch": None}  # YAML 1.1 reads `on` as True
    assert steps[0]["uses"].startswith("actions/checkout@") and steps[0]["with"]["fetch-depth"] == 0
    assert steps[1]["with"]["python-version"] == "3.11"
    # what .ci/run does: the README's test command (unit tier), the pipeline tier, then verify
    assert [s.get("run") for s in steps[2:]] == ['pip install -e ".[test]" && pytest', "pytest -m pipeline",
                                                 "sparse-cbm verify"]
    ci = (REPO / ".ci/run").read_text()
    assert 'pip install -e ".[test]" && DVC_NO_ANALYTICS=1 pytest' in ci and "sparse_cbm_app.cli verify" in ci
    assert workflow["jobs"]["verify"]["env"]["DVC_NO_ANALYTICS"] == "1"


def test_without_a_spread_or_an_atol_metrics_must_match_exactly():
    new = lock(concepts={"data/concepts": "a.dir"}, train={"data/model": "other.dir", "metrics/train.json": "c"})
    rows = compare(new, tol={"train": Tolerance(("metrics/train.json",))}, new_metrics=metrics_with(0.9376))
    row = by_output(rows)["data/model"]
    assert row.failed and row.detail.startswith("hash differs and metrics moved beyond exact equality")
    same = by_output(compare(new, tol={"train": Tolerance(("metrics/train.json",))}))["data/model"]
    assert same.status == WITHIN and "within exact equality" in same.detail


def test_the_outputs_digest_ignores_deps_and_params_but_not_an_output():
    from sparse_cbm_app.cli.lockcheck import outputs_sha256

    moved = json.loads(json.dumps(COMMITTED))
    moved["stages"]["train"]["deps"] = [{"path": "sparse_cbm/bottleneck", "md5": "new.dir"}]
    moved["stages"]["train"]["params"] = {"params.yaml": {"threads": "auto"}}
    assert outputs_sha256(moved) == outputs_sha256(COMMITTED)
    changed = lock(concepts={"data/concepts": "a.dir"}, train={"data/model": "other.dir", "metrics/train.json": "c"})
    assert outputs_sha256(changed) != outputs_sha256(COMMITTED)


def test_verify_says_what_the_committed_spread_was_measured_for(capsys):
    from sparse_cbm_app.cli.lockcheck import outputs_sha256
    from sparse_cbm_app.cli.verify import _measured

    def spread_for(lock_data):
        text = yaml.safe_dump(lock_data)
        about = {"cpu": "x", "dvc_lock_sha256": hashlib.sha256(text.encode()).hexdigest(),
                 "dvc_lock_outputs_sha256": outputs_sha256(lock_data), "configurations": ["seed-1"]}
        return text, dumps({}, about, {})

    lock_text, spread = spread_for(COMMITTED)
    moved = json.loads(json.dumps(COMMITTED))
    moved["stages"]["train"]["deps"] = [{"path": "sparse_cbm/bottleneck", "md5": "new.dir"}]
    other = lock(concepts={"data/concepts": "a.dir"}, train={"data/model": "other.dir", "metrics/train.json": "c"})
    notes = []
    for committed in (lock_text, yaml.safe_dump(moved), yaml.safe_dump(other)):
        _measured(lambda path: spread, committed)
        notes.append(capsys.readouterr().out)
    assert "measured on x over seed-1\n" in notes[0]
    assert "an earlier dvc.lock with the same outputs" in notes[1]
    assert "measured for another dvc.lock" in notes[2]
