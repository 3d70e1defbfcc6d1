"""Stage train_spatial on the constructed world of tests/unit/spatial/test_train.py, its caches stood in for
by their readers: what it writes (the model folder, the step and path tables, the metrics), the same bytes
from the same params, and the caches it refuses."""

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from sparse_cbm.errors import CacheMismatchError
from sparse_cbm_app.params import deep_merge, default_params, validate_params
from sparse_cbm.spatial.checkpoint import load_spatial
from sparse_cbm.storage.text_cache import concept_list_sha256
from tests.unit.spatial.test_train import C, GRID, M, N_TRAIN, held_out, world
from tests.unit.stages import stage_argv

CONCEPTS, CLASSES = ["red", "round", "striped"], ["apple", "ball"]
FEATURES_BACKBONE, PROMPTS_BACKBONE = {"kind": "clip", "layer": "layer3"}, {"model": "tiny"}
PARAMS = validate_params(deep_merge(default_params(), {"seed": 3, "spatial": {
    "grid": GRID, "epochs": 4, "train_batch_size": 8, "lr": 0.05,
    "sparse": {"path_points": 4, "max_epochs": 10, "target_nec": 3.0}}}))
OUTPUTS = ("data/spatial/model/config.json", "data/spatial/model/weights.safetensors", "plots/spatial/steps.csv",
           "plots/spatial/sparse_path.csv", "metrics/spatial_train.json",
           "data/spatial/model/class_concepts/config.json", "data/spatial/model/class_concepts/weights.safetensors")


def fake_caches(monkeypatch, grid=GRID, val_images=None, params=PARAMS):
    import sparse_cbm.storage.inputs as inputs
    from stages import train_spatial as stage

    features, labels, (val, val_labels), prompted, prompted_rows, concepts = world()
    cache = {"train": (features, labels), "val": (val, val_labels)}
    seen = {}

    def read_image_split(folder, split, expect_backbone=None):
        return SimpleNamespace(labels=cache[split][1], manifest={"dataset": {"classes": CLASSES}, "backbone": {}})

    def read_features(folder, split):
        images = len(cache[split][0]) if split == "train" or val_images is None else val_images
        return SimpleNamespace(outputs=cache[split][0], manifest={"images": images, "shape": [C, GRID, GRID],
                                                                  "backbone": FEATURES_BACKBONE})

    def read_prompted(folder, split):
        if split == "val":  # every val image ringed, as tests/unit/spatial/test_train.py's held_out makes them
            copies = held_out()
            return SimpleNamespace(outputs=copies.prompted, rows=copies.rows, manifest={
                "shape": [grid, grid], "backbone": PROMPTS_BACKBONE, "images": len(copies.rows)})
        return SimpleNamespace(outputs=prompted, rows=prompted_rows, manifest={
            "shape": [grid, grid], "backbone": PROMPTS_BACKBONE, "images": len(prompted_rows)})

    def read_prompt_concepts(folder, sha, backbone):
        seen["prompt_concepts"] = (sha, backbone)
        return concepts

    def read_class_prompts(folder, prompts, backbone):  # "red" for apples, "round" for balls
        seen["class_prompts"] = (prompts, backbone)
        return concepts[:len(prompts)]

    monkeypatch.setattr(inputs, "read_image_split", read_image_split)
    for name, fake in (("read_features", read_features),
                       ("read_prompted", read_prompted), ("read_prompt_concepts", read_prompt_concepts),
                       ("read_class_prompts", read_class_prompts),
                       ("stage_params", lambda: params)):
        monkeypatch.setattr(stage, name, fake)
    return stage, seen


def run_stage(root, monkeypatch, **kw):
    (root / "data/filtered").mkdir(parents=True)
    (root / "data/filtered/concepts.txt").write_text("\n".join(CONCEPTS) + "\n", encoding="utf-8")
    monkeypatch.chdir(root)
    stage, seen = fake_caches(monkeypatch, **kw)
    stage.main(stage_argv("train_spatial"))
    return seen


def test_the_stage_writes_the_model_its_tables_and_metrics_and_the_same_bytes_twice(tmp_path, monkeypatch):
    seen = run_stage(tmp_path / "a", monkeypatch)
    assert seen["prompt_concepts"] == (concept_list_sha256(CONCEPTS), PROMPTS_BACKBONE)
    model, config = load_spatial("data/spatial/model", expect_concepts_sha256=concept_list_sha256(CONCEPTS))
    assert (config["grid"], config["pooling"], config["feature_shape"], config["seed"]) == (
        GRID, "mean", [C, GRID, GRID], 3)
    assert config["features"] == FEATURES_BACKBONE and config["concepts"] == CONCEPTS and config["classes"] == CLASSES
    assert len(config["p_mean"]) == len(config["p_std"]) == M and all(s > 0 for s in config["p_std"])
    # rounded to 6 places in float32 (the JSON holds float32's nearest value, not the short decimal)
    assert all(abs(round(v, 6) - v) < 1e-7 for v in config["p_mean"] + config["p_std"])
    steps = pd.read_csv("plots/spatial/steps.csv")
    assert list(steps.columns) == ["step", "epoch", "cos3"] and len(steps) == 4 * 2
    path = pd.read_csv("plots/spatial/sparse_path.csv")
    assert "seconds" not in path and {"lambda", "nec", "train_top1", "val_top1"} <= set(path) and len(path) >= 2
    metrics = json.loads(open("metrics/spatial_train.json").read())
    nec = float((model.fc.weight != 0).sum()) / len(CLASSES)
    assert metrics == {"cos3": metrics["cos3"], "nec": round(nec, 2), "epochs": 4,
                       "class_concepts": metrics["class_concepts"]} and 0 < metrics["cos3"] <= 1
    # the paper's Table 2 model beside it: one concept a class, from spatial.class_concepts
    prompts = ["an image of a apple.", "an image of a ball."]
    assert seen["class_prompts"] == (prompts, PROMPTS_BACKBONE)
    class_model, class_config = load_spatial("data/spatial/model/class_concepts",
                                             expect_concepts_sha256=concept_list_sha256(prompts))
    assert class_config["concepts"] == prompts and class_config["classes"] == CLASSES
    assert class_model.conv.weight.shape[:2] == (2, C) and 0 < metrics["class_concepts"]["cos3"] <= 1
    assert metrics["cos3"] == round(metrics["cos3"], 4) and abs(metrics["cos3"] - steps["cos3"].iloc[-2:].mean()) < 1e-4
    x = torch.from_numpy(world()[0]).reshape(N_TRAIN, C, GRID, GRID)
    with torch.no_grad():
        assert (model(x).logits.argmax(1).numpy() == world()[1]).mean() >= 0.9
    first = {name: (tmp_path / "a" / name).read_bytes() for name in OUTPUTS}

    run_stage(tmp_path / "b", monkeypatch)
    assert {name: (tmp_path / "b" / name).read_bytes() for name in OUTPUTS} == first


@pytest.mark.parametrize("kw, message", [({"grid": GRID + 1}, f"spatial.grid is {GRID}"),
                                        ({"val_images": 5}, "holds 5 images")])
def test_caches_from_another_grid_or_dataset_are_refused_before_training(tmp_path, monkeypatch, kw, message):
    with pytest.raises(CacheMismatchError, match=message):
        run_stage(tmp_path, monkeypatch, **kw)
    assert not (tmp_path / "data/spatial/model").exists() and not (tmp_path / "metrics").exists()
    assert np.all([not (tmp_path / name).exists() for name in OUTPUTS])


def test_label_free_stop_keeps_the_concepts_above_the_cutoff_and_says_so(tmp_path, monkeypatch):
    from sparse_cbm.spatial.train import train_spatial

    features, labels, val, prompted, prompted_rows, concepts = world()
    s = PARAMS.spatial
    whole = train_spatial(features, (C, GRID, GRID), prompted, prompted_rows, concepts, labels, val, 2, grid=GRID,
                          pooling="mean", epochs=s.epochs, batch_size=s.train_batch_size, lr=s.lr, sparse=s.sparse,
                          seed=3, held_out=held_out(early_stop=True))
    lowest = np.sort(whole.val_similarity)[:2]
    params = validate_params(deep_merge(PARAMS.model_dump(), {"spatial": {
        "val_images": 12, "early_stop": True, "cutoff": float(lowest.mean())}}))
    run_stage(tmp_path, monkeypatch, params=params)
    model, config = load_spatial("data/spatial/model", expect_concepts_sha256=concept_list_sha256(CONCEPTS))
    dropped = int(np.argmin(whole.val_similarity))
    assert config["kept"] == [i for i in range(M) if i != dropped]
    assert config["concepts"] == [CONCEPTS[i] for i in config["kept"]] and len(config["p_mean"]) == M - 1
    similarity = config["val_cos3_every_concept"]  # every concept's, before the cut, by name
    assert list(similarity) == CONCEPTS and min(similarity, key=similarity.get) == CONCEPTS[dropped]
    assert model.conv.weight.shape[0] == model.fc.weight.shape[1] == M - 1
    class_model, class_config = load_spatial("data/spatial/model/class_concepts")  # the cutoff never reaches it
    assert class_model.conv.weight.shape[0] == len(class_config["concepts"]) == len(CLASSES)
    assert "kept" not in class_config and list(class_config["val_cos3_every_concept"]) == class_config["concepts"]
    metrics = json.loads(open("metrics/spatial_train.json").read())
    assert metrics["concepts_kept"] == M - 1 and 1 <= metrics["kept_epoch"] <= s.epochs
    assert -1 <= metrics["val_cos3"] <= 1


def test_without_class_concepts_no_class_model_is_trained_or_measured(tmp_path, monkeypatch):
    params = validate_params(deep_merge(PARAMS.model_dump(), {"spatial": {"class_concepts": None}}))
    seen = run_stage(tmp_path, monkeypatch, params=params)
    assert "class_prompts" not in seen and not (tmp_path / "data/spatial/model/class_concepts").exists()
    assert "class_concepts" not in json.loads((tmp_path / "metrics/spatial_train.json").read_text())


def test_a_class_model_that_cannot_fit_says_so_and_how_to_turn_it_off(tmp_path, monkeypatch):
    from sparse_cbm.errors import TrainingError

    params = validate_params(deep_merge(PARAMS.model_dump(), {"spatial": {"sparse": {"lam": 100.0}}}))
    stage, _ = fake_caches(monkeypatch, params=params)
    fit = lambda embeddings, cutoff=True: (_ for _ in ()).throw(TrainingError("spatial: NEC 0 at spatial.sparse.lam 100"))
    with pytest.raises(TrainingError, match=r"class-concept SALF-CBM \(spatial.class_concepts\): spatial: NEC 0.*"
                                            r"set spatial.class_concepts: null"):
        stage.train_class_concepts(params, fit, CLASSES, SimpleNamespace(manifest={"backbone": PROMPTS_BACKBONE}),
                                   "data/spatial/prompt_concepts")
