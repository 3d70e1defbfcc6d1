"""The committed default run (metrics/, plots/: what `dvc repro` wrote on the embedded world, and what
`sparse-cbm verify` reruns in CI) measures something real. The pipeline tier runs the quick profile, whose
numbers are smaller; these are the acceptance checks of the default world itself."""

import json

import pandas as pd
import yaml

from tests.conftest import REPO
from sparse_cbm.report.trust import grid_records


def committed(name: str) -> dict:
    return json.loads((REPO / "metrics" / name).read_text())


def test_the_attributes_world_names_tell_clip_nothing_and_concepts_everything():
    metrics = committed("evaluate.json")
    test, chance = metrics["test"], 1 / metrics["num_classes"]
    assert metrics["num_classes"] >= 20 and metrics["test_images"] >= 2000 and metrics["concepts"] >= 100
    assert test["zero_shot"]["top1"] <= 2 * chance
    assert test["descriptions"]["top1"] > 5 * test["zero_shot"]["top1"]
    assert test["cms_descriptions"]["top1"] > 5 * test["zero_shot"]["top1"]
    assert test["linear_probe"]["top1"] >= 0.9 and test["cbm"]["top1"] >= 0.9
    quality = metrics["concept_quality"]
    assert quality["clip_scores"]["auroc"] >= 0.9 and quality["clip_scores"]["annotated_concepts"] == 16
    for key in ("auroc", "precision_at_k", "intervention", "deletion"):
        assert quality["cbm"][key] is not None


def test_the_committed_compare_grid_is_the_params_grid():
    compare = committed("compare.json")
    grid = yaml.safe_load((REPO / "params.yaml").read_text())["compare"]
    assert [(c["loss"], c["form"], c["final_layer"]) for c in grid_records(compare)] == [
        (loss, form, layer) for loss in grid["losses"] for form in grid["forms"] for layer in grid["final_layers"]]
    assert all(0 <= c["random_concepts_top1"] <= 1 and "gain_at_5" in c["intervention"] for c in grid_records(compare))
    assert list(compare["configs"]) == sorted(compare["grid"])   # every record under its own name
    assert all(name == f"{c['loss']}-{c['form']}-{c['final_layer']}" for name, c in compare["configs"].items())
    intervention = pd.read_csv(REPO / "plots/evaluate/intervention.csv")
    assert list(intervention["k"]) == list(range(11))


def test_salf_cbm_beats_chance_on_every_measure():
    m, evaluate = committed("spatial.json"), committed("evaluate.json")
    assert m["test_images"] == evaluate["test_images"] and m["test_top1"] > 5 / evaluate["num_classes"]
    assert m["pointing_game"]["salf_cbm"] > 0.3  # chance: 0.25
    precision = m["explain_anything"]["precision_at_3"]
    assert precision["salf_cbm"] > 3 * precision["random"]
    edit = m["local_edit"]
    assert edit["units"] == "raw" and edit["images"] > 0
    # raising the runner-up's concepts in the object's box makes it the prediction about half the time (0.49 with
    # the MiniLM world CLIP, 0.55 with the first shapes CLIPs), a random other class's 0.27
    assert edit["raise_runner_up"]["to_intended"] > 0.45 and edit["lower_top_concept"]["to_intended"] > 0.3
    assert edit["raise_other_class"]["to_intended"] > 0.1
