import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sparse_cbm.errors import ParamsError
from sparse_cbm_app.params import (apply_overrides, apply_profiles, deep_merge, default_params, load_params,
                                   profile_chain, profile_path, validate_params)
from tests.conftest import REPO


def test_params_yaml_holds_exactly_the_schema_defaults():
    on_disk = yaml.safe_load((REPO / "params.yaml").read_text())
    assert on_disk == default_params()


PROFILES = sorted((REPO / "params").glob("*.yaml"))


def test_the_paper_profiles_are_there():
    assert {p.stem for p in PROFILES} >= {"cifar10", "cifar100", "cub", "places365", "imagenet", "released"}


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.stem)
def test_profiles_are_valid_and_only_change_existing_keys(profile):
    overrides = yaml.safe_load(profile.read_text())
    defaults = default_params()
    for parent in overrides.pop("extends", []):
        assert (REPO / "params" / f"{parent}.yaml").is_file(), f"{profile.name} extends missing profile {parent}"
        defaults = deep_merge(defaults, yaml.safe_load((REPO / "params" / f"{parent}.yaml").read_text()))

    def walk(over, base, path=""):
        for key, value in over.items():
            assert key in base, f"{profile.name} has key {path}{key} that params.yaml lacks"
            if isinstance(value, dict):
                walk(value, base[key], f"{path}{key}.")

    walk(overrides, defaults)
    validate_params(deep_merge(defaults, overrides))


def test_released_profile_is_the_authors_training_setup():
    merged = default_params()
    for path in profile_chain(REPO / "params/released.yaml"):
        merged = deep_merge(merged, {k: v for k, v in yaml.safe_load(path.read_text()).items() if k != "extends"})
    p = validate_params(merged)
    assert (p.train.form, p.train.final_layer) == ("paper", "dense")
    t = p.train
    assert (p.loss, t.gumbel.objective, t.ce_to_cbl, t.log_alpha, t.keep) == ("gumbel", "released", True, 0.0, "final")
    assert (t.gumbel.tau_start, t.gumbel.tau_end, t.gumbel.schedule) == (1.0, 1.0, "constant")
    assert (t.cbl.optimizer, t.cbl.lr, t.fc.optimizer, t.fc.lr) == ("adam", 3e-4, "adam", 3e-4)
    assert (t.batch_size, t.epochs, t.early_stopping.patience) == (128, 10, None)


def test_dataset_profiles_run_the_papers_bottleneck_and_the_default_does_not(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    target = tmp_path / "params.yaml"
    target.write_text((REPO / "params.yaml").read_text())
    default = load_params(target).train
    assert (default.form, default.final_layer) == ("faithful", "sparse")
    assert profile_chain("cifar10") == [Path("params/paper.yaml"), Path("params/cifar10.yaml")]
    before = target.read_text()
    assert apply_profiles(["released", "cifar10"], target) == [Path("params/paper.yaml"), Path("params/released.yaml"),
                                                               Path("params/cifar10.yaml")]  # paper once, first
    params = load_params(target)
    assert (params.loss, params.train.form, params.train.final_layer) == ("gumbel", "paper", "dense")
    assert params.dataset.name == "cifar10" and params.train.gumbel.objective == "released"

    target.write_text(before)
    bad = tmp_path / "bad.yaml"
    bad.write_text("extends: [paper]\nbackbone:\n  batch_sise: 3\n")
    with pytest.raises(ParamsError, match="backbone.batch_sise"):
        apply_profiles(["cifar10", bad], target)
    assert target.read_text() == before  # nothing of cifar10 or paper was written either


def test_a_profile_that_extends_itself_is_named(tmp_path):
    loop = tmp_path / "loop.yaml"
    loop.write_text(f"extends: [{loop}]\n")
    with pytest.raises(ParamsError, match="extends itself"):
        profile_chain(loop)


def test_profile_names_resolve_under_params_and_misspellings_are_named(monkeypatch):
    monkeypatch.chdir(REPO)
    assert profile_path("cifar10") == Path("params/cifar10.yaml")
    with pytest.raises(ParamsError, match="no profile named 'cifar1'. Did you mean 'cifar10'"):
        profile_path("cifar1")


def test_misspelt_key_is_named_with_a_suggestion():
    with pytest.raises(ParamsError) as err:
        validate_params({"dataset": {"nmae": "shapes"}})
    msg = str(err.value)
    assert "unknown key 'dataset.nmae'" in msg
    assert "Did you mean 'dataset.name'?" in msg


def test_misspelt_top_level_key():
    with pytest.raises(ParamsError, match=r"unknown key 'sed'.*Did you mean 'seed'"):
        validate_params({"sed": 1})


def test_wrong_type_names_the_key_and_the_value():
    with pytest.raises(ParamsError) as err:
        validate_params({"backbone": {"batch_size": "lots"}})
    msg = str(err.value)
    assert "'backbone.batch_size'" in msg and "integer" in msg and "'lots'" in msg


def test_unknown_dataset_lists_the_valid_names():
    with pytest.raises(ParamsError) as err:
        validate_params({"dataset": {"name": "imagenet"}})
    msg = str(err.value)
    for name in ("cifar10", "cifar100", "places365", "imagefolder", "shapes"):
        assert name in msg


def test_dvc_style_float_text_is_cast():
    # `dvc exp run -S dataset.val_fraction=0.000001` writes 1e-06, which PyYAML reads as a string
    raw = yaml.safe_load("dataset:\n  val_fraction: 1e-06\n")
    assert raw["dataset"]["val_fraction"] == "1e-06"
    params = validate_params(raw)
    assert params.dataset.val_fraction == pytest.approx(1e-6)
    assert isinstance(params.dataset.val_fraction, float)


def test_out_of_range_value():
    with pytest.raises(ParamsError, match="dataset.val_fraction"):
        validate_params({"dataset": {"val_fraction": 1.5}})


def test_bad_device_and_class_attributes():
    with pytest.raises(ParamsError, match="backbone.device"):
        validate_params({"backbone": {"device": "gpu"}})
    with pytest.raises(ParamsError, match="dataset.shapes.class_attributes"):
        validate_params({"dataset": {"shapes": {"class_attributes": ["shape", "shape"]}}})


def test_every_error_is_reported_at_once():
    with pytest.raises(ParamsError) as err:
        validate_params({"seed": "x", "backbone": {"num_workers": -1}})
    assert "'seed'" in str(err.value) and "'backbone.num_workers'" in str(err.value)


def test_apply_keeps_comments_and_validates(tmp_path):
    target = tmp_path / "params.yaml"
    target.write_text((REPO / "params.yaml").read_text())
    apply_overrides(REPO / "params/cifar10.yaml", target)
    text = target.read_text()
    assert "# shapes | cifar10 | cifar100" in text
    params = load_params(target)
    assert params.dataset.name == "cifar10" and params.backbone.model == "ViT-L-14"
    assert yaml.safe_load(text)["dataset"]["class_names_file"] is None and params.concepts.file is None

    bad = tmp_path / "bad.yaml"
    bad.write_text("backbone:\n  batch_sise: 3\n")
    before = target.read_text()
    with pytest.raises(ParamsError, match="backbone.batch_sise"):
        apply_overrides(bad, target)
    assert target.read_text() == before


def test_cli_check_reports_one_clear_line(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("dataset:\n  nmae: shapes\n")
    proc = subprocess.run([sys.executable, "-m", "sparse_cbm_app.cli", "params", "check", str(bad)],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("sparse-cbm params: error:")
    assert "unknown key 'dataset.nmae'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_params_file(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "nope.yaml")


def test_the_corrupted_test_split_can_be_turned_off_and_bad_kinds_or_policies_are_named():
    assert validate_params({"dataset": {"corrupted_test": None}}).dataset.corrupted_test is None
    default = validate_params({}).dataset.corrupted_test
    assert default.kinds == ["occlusion", "noise", "blur", "colour"] and default.severity == 0.5
    with pytest.raises(ParamsError, match=r"dataset.corrupted_test.kinds.*'fog'"):
        validate_params({"dataset": {"corrupted_test": {"kinds": ["fog"]}}})
    with pytest.raises(ParamsError, match="dataset.corrupted_test.severity"):
        validate_params({"dataset": {"corrupted_test": {"severity": 2}}})
    with pytest.raises(ParamsError, match="evaluate.concept_quality.intervention_policies"):
        validate_params({"evaluate": {"concept_quality": {"intervention_policies": ["oracle"]}}})
    with pytest.raises(ParamsError, match=r"evaluate.concept_quality.intervention_policies.*must name each choice once"):
        validate_params({"evaluate": {"concept_quality": {"intervention_policies": ["random", "random"]}}})
    with pytest.raises(ParamsError, match=r"dataset.corrupted_test.kinds.*must name each choice once"):
        validate_params({"dataset": {"corrupted_test": {"kinds": ["blur", "blur"]}}})
