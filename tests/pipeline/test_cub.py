"""A CUB-200-2011 folder in its exact format through `dvc repro evaluate`."""

import pytest

from tests.cub_fixture import CONCEPTS, make_cub_folder

pytestmark = pytest.mark.pipeline


def test_cub_folder_runs_through_evaluate_with_concept_metrics(tmp_path):
    """dataset.name: cub, concepts.source: attributes: the supervised-concept setting end to end."""
    import json

    import yaml

    from sparse_cbm_app.params import deep_merge
    from tests.project import copy_project, dvc

    root = copy_project(tmp_path / "proj")
    make_cub_folder(root / "data/datasets/CUB_200_2011")
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump(deep_merge(yaml.safe_load(params.read_text()), {
        "dataset": {"name": "cub", "root": "data/datasets/CUB_200_2011", "val_fraction": 0.2},
        "concepts": {"source": "attributes", "attributes": {"class_share": 0.9}}})))
    dvc(["repro", "evaluate"], root)
    metrics = json.loads((root / "metrics/evaluate.json").read_text())
    assert metrics["dataset"] == "cub" and metrics["num_classes"] == 3 and metrics["test_images"] == 15
    quality = metrics["concept_quality"]
    assert quality["cbm"]["annotated_concepts"] == len(CONCEPTS) == metrics["concepts"]
    for model in ("cbm", "clip_scores"):
        assert 0 <= quality[model]["auroc"] <= 1 and 0 <= quality[model]["precision_at_k"]["by_activation"] <= 1
    assert "gain_at_5" in quality["cbm"]["intervention"] and quality["cbm"]["deletion"]["steps"] == 12
    table = (root / "data/evaluation/concept_auroc.csv").read_text().splitlines()
    assert table[0] == "model,concept,positives,negatives,auroc" and len(table) == 1 + 2 * len(CONCEPTS)
    explanations = json.loads((root / "data/evaluation/explanations.json").read_text())
    assert all(set(r["true_concepts"]) <= set(CONCEPTS) for r in explanations)
    assert explanations[0]["rankings"]["by_contribution"].startswith("weight x activation")
