"""What stage check_params writes: each stage's declared params with their validated values."""

from __future__ import annotations

import pytest
import yaml

from sparse_cbm.errors import ParamsError
from sparse_cbm_app.declared_params import stage_param_values
from sparse_cbm_app.params import load_params, validate_params
from tests.conftest import REPO


def dvc_stages() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def test_every_stage_gets_the_validated_values_of_what_it_declares():
    stages = {k: v for k, v in dvc_stages().items() if k != "check_params"}
    values = stage_param_values(load_params(REPO / "params.yaml"), stages)
    assert set(values) == set(stages)
    assert values["train"]["train"]["cbl"]["lr"] == 0.001 and values["train"]["loss"] == "l1"
    assert "evaluate" not in values["train"] and "train" not in values["evaluate"]
    assert set(values["embed_images"]) == {"threads", "seed", "dataset", "backbone.model", "backbone.pretrained",
                                           "backbone.device", "backbone.batch_size", "backbone.precision"}
    assert values["report"] == {}   # no params: its file still orders it after the check


def test_dvc_floats_given_as_text_are_cast_like_the_stages_cast_them():
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["train"]["cbl"]["lr"] = "1e-04"   # what `dvc exp run -S train.cbl.lr=0.0001` writes
    values = stage_param_values(validate_params(raw), {"train": {"params": ["train.cbl.lr"]}})
    assert values == {"train": {"train.cbl.lr": 0.0001}}


def test_a_bad_value_is_one_clear_error():
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["train"]["cbl"]["lr"] = "abc"
    with pytest.raises(ParamsError, match=r"'train\.cbl\.lr' .*'abc'"):
        validate_params(raw)


def test_a_key_dvc_yaml_declares_but_the_schema_lacks_is_named():
    params = load_params(REPO / "params.yaml")
    with pytest.raises(ParamsError, match=r"stage train declares param 'train\.cbl\.lrr'.*fix the stage's `params:`"):
        stage_param_values(params, {"train": {"params": ["train.cbl.lrr"]}})
    with pytest.raises(ParamsError, match=r"stage train reads params from other\.yaml"):
        stage_param_values(params, {"train": {"params": [{"other.yaml": ["x"]}]}})


def test_every_stage_but_the_check_depends_on_its_own_file():
    paths = "${paths.checked_params}"
    for name, stage in dvc_stages().items():
        if name != "check_params":
            assert f"{paths}/{name}.json" in stage["deps"], name
