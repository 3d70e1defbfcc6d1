"""The Python API: save_pretrained / from_pretrained round trips exactly, checks what it loads, and refuses
bad input with a message that names the problem."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from sparse_cbm.trained import SparseCBM
from sparse_cbm.trained.images import ModelInputError
from tests.trained_fixture import CLASSES, CONCEPTS, build_tiny_model, picture


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("trained"))


@pytest.fixture(scope="module")
def model(saved):
    return SparseCBM.from_pretrained(saved)


def test_saved_folder_is_self_describing_and_holds_its_checkpoint(saved):
    manifest = json.loads((saved / "sparse_cbm.json").read_text())
    assert manifest["format"] == "sparse-cbm/1" and manifest["classes"] == CLASSES
    assert manifest["backbone"]["checkpoint"] == "backbone/tiny-clip.pt" and (saved / "backbone/tiny-clip.pt").is_file()
    assert (saved / "concepts.txt").read_text().splitlines() == CONCEPTS
    assert {"cbm", "spatial", "gallery"} <= {p.name for p in saved.iterdir()}
    assert "SparseCBM.from_pretrained" in (saved / "README.md").read_text()


def test_loaded_from_another_place_it_predicts_the_same(saved, model, tmp_path):
    moved = shutil.copytree(saved, tmp_path / "elsewhere")  # nothing outside the folder is needed
    again = SparseCBM.from_pretrained(moved)
    images = [picture(100 + i) for i in range(6)]
    np.testing.assert_array_equal(model.predict_proba(images), again.predict_proba(images))
    assert model.predict(images) == again.predict(images)
    assert model.predict(images) == [CLASSES[int(i)] for i in model.predict_proba(images).argmax(1)]


def test_an_explanation_ranks_by_contribution_which_sums_to_the_logit(model):
    image = picture(7)
    e = model.explain(image, top=len(CONCEPTS))
    assert e.ranking == "weight x activation, for the predicted class"
    values = [c.value for c in e.concepts]
    assert values == sorted(values, reverse=True) and set(c.concept for c in e.concepts) == set(CONCEPTS)
    from sparse_cbm.classifiers.batched import unit_rows

    c = CLASSES.index(e.prediction)
    with torch.no_grad():
        logits = model.cbm.class_scores(unit_rows(model.embed(image)))[0]
        bias = float(model.cbm.model.fc.bias[c])
    assert sum(values) + bias == pytest.approx(float(logits[c]), abs=1e-3)  # contributions are rounded to 4 places
    assert e.probabilities[e.prediction] == pytest.approx(float(logits.softmax(0)[c]))
    assert isinstance(model.explain([image, image]), list)


def test_an_edit_of_the_deciding_concept_flips_the_region_prediction(model):
    image = picture(3)
    base = model.explain_region(image, top=3)
    beta = -10.0 if base.prediction == "apple" else 10.0
    edited = model.explain_region(image, top=3, edits={"red": beta})
    assert base.prediction in ("apple", "leaf") and edited.edited_prediction == ("leaf" if beta < 0 else "apple")
    assert len(base.concepts) == 3 and set(base.heatmaps) == {c.concept for c in base.concepts}
    assert all(h.shape == (64, 64) for h in base.heatmaps.values())


def test_a_large_image_is_explained_on_a_bounded_grid(model):
    big = picture(9, size=64).resize((900, 700))
    r = model.explain_region(big, top=2)
    assert all(h.shape == (256, 256) for h in r.heatmaps.values())
    assert model.explain_region(model.square(big).resize((64, 64)), top=2).prediction in CLASSES


def test_a_damaged_saved_folder_is_named(saved, tmp_path):
    bad = shutil.copytree(saved, tmp_path / "bad")
    (bad / "cbm" / "weights.safetensors").unlink()
    with pytest.raises(ModelInputError, match="incomplete or damaged saved model"):
        SparseCBM.from_pretrained(bad)
    (bad / "sparse_cbm.json").write_text("{")
    with pytest.raises(ModelInputError, match="sparse_cbm.json is damaged"):
        SparseCBM.from_pretrained(bad)


def test_loading_leaves_the_callers_random_state_alone(saved):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    SparseCBM.from_pretrained(saved)
    assert torch.equal(torch.rand(3), expected)


def test_a_region_changes_what_is_ranked(model):
    image = picture(5)
    left = np.zeros((64, 64), np.float32); left[:, :32] = 1
    right = 1 - left
    a, b = model.explain_region(image, left, top=6), model.explain_region(image, right, top=6)
    assert [c.value for c in a.concepts] != [c.value for c in b.concepts]


def test_bad_input_is_named(model, saved, tmp_path, monkeypatch):
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(ModelInputError, match="is not an image this tool can read"):
        model.predict(str(tmp_path / "notes.txt"))
    with pytest.raises(ModelInputError, match="no image file"):
        model.predict(str(tmp_path / "missing.png"))
    with pytest.raises(ModelInputError, match="cannot read a dict"):
        model.predict({"a": 1})
    monkeypatch.setattr("sparse_cbm.trained.images.MAX_PIXELS", 1000)
    with pytest.raises(ModelInputError, match="the limit is"):
        model.predict(Image.new("RGB", (100, 100)))
    monkeypatch.undo()
    with pytest.raises(ModelInputError, match="did you mean 'red'"):
        model.explain_region(picture(1), edits={"redd": 1.0})
    with pytest.raises(ModelInputError, match="finite"):
        model.explain_region(picture(1), edits={"red": float("inf")})
    with pytest.raises(ModelInputError, match="top must be at least 1"):
        model.explain(picture(1), top=0)
    with pytest.raises(ModelInputError, match="region is 10 x 10"):
        model.explain_region(picture(1), np.ones((10, 10)))
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "keep.txt").write_text("mine")
    with pytest.raises(ModelInputError, match="is not a saved model"):
        model.save_pretrained(tmp_path / "project")
    assert (tmp_path / "project" / "keep.txt").read_text() == "mine"
    with pytest.raises(ModelInputError, match="neither a saved model"):
        SparseCBM.from_pretrained(tmp_path)


def test_a_tampered_folder_is_refused(saved, tmp_path):
    from sparse_cbm.errors import CacheMismatchError

    bad = shutil.copytree(saved, tmp_path / "concepts")
    (bad / "concepts.txt").write_text("".join(f"{c}\n" for c in reversed(CONCEPTS)))
    with pytest.raises(CacheMismatchError, match="another concept list"):
        SparseCBM.from_pretrained(bad)
    bad = shutil.copytree(saved, tmp_path / "checkpoint")
    state = torch.load(bad / "backbone/tiny-clip.pt")
    state["logit_scale"] = state["logit_scale"] + 1
    torch.save(state, bad / "backbone/tiny-clip.pt")
    with pytest.raises(CacheMismatchError, match="trained on embeddings of"):
        SparseCBM.from_pretrained(bad)


def test_explain_command_uses_the_saved_model(saved, tmp_path, capsys):
    from sparse_cbm_app.cli.main import main

    picture(2).save(tmp_path / "x.png")
    code = main(["explain", str(tmp_path / "x.png"), "--model", str(saved), "--box", "0,0,40,40", "--edit", "red=-10",
                 "--json", "--out", str(tmp_path / "heat.png")])
    out = json.loads(capsys.readouterr().out)
    before = out["prediction"]["class"]
    assert code == 0 and before in ("apple", "leaf")
    if before == "apple":  # SALF-CBM decides apple against leaf by "red" alone: lowering it must flip
        assert out["edit"]["prediction"]["class"] == "leaf" and out["edit"]["changed"] is True
    assert out["cbm"]["class"] in CLASSES and len(out["concepts"]) == 3 and (tmp_path / "heat.png").stat().st_size > 0
    for argv, message in ((["--top", "0"], "--top 0"), (["--edit", "red=1e309"], "finite"),
                          (["--mask", str(saved / "README.md")], "--mask"), (["--out", str(tmp_path / "no/x.png")], "does not exist")):
        assert main(["explain", str(tmp_path / "x.png"), "--model", str(saved), *argv]) == 2
        assert message in capsys.readouterr().err
