"""`dvc repro` of the offline pipeline in a temporary copy of the project."""

import json
import os
import secrets
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from sparse_cbm_app.cli.pipeline import stage_command
from sparse_cbm_app.params import deep_merge
from tests.project import copy_project, copy_quick_project, copy_reproduced, dvc, run
from sparse_cbm.report.trust import grid_records

pytestmark = pytest.mark.pipeline

CACHE = Path("data/image_cache")


def npy_bytes(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted((root / CACHE).rglob("*.npy"))}


def ran(proc) -> list[str]:
    text = proc.stdout + proc.stderr
    return [line for line in text.splitlines() if line.startswith("Running stage")]


@pytest.fixture(scope="module")
def project(reproduced, tmp_path_factory):
    """This module's own copy of the session's reproduced project (its tests change it)."""
    source, first = reproduced
    return copy_reproduced(source, tmp_path_factory.mktemp("proj") / "p"), first


STAGES = ["check_params", "concepts", "embed_images", "filter", "embed_text", "train", "evaluate", "compare",
          "embed_prompted", "embed_prompt_text", "embed_features", "train_spatial", "evaluate_spatial", "report"]


def test_repro_runs_every_stage_and_writes_the_caches(project):
    root, first = project
    assert sorted(ran(first)) == sorted(f"Running stage '{s}':" for s in STAGES)
    text = json.loads((root / "data/text_cache/manifest.json").read_text())
    kept = (root / "data/filtered/concepts.txt").read_text().splitlines()
    assert text["counts"]["concepts"] == len(kept) > 0 and text["classes"] == json.loads(
        (root / CACHE / "classes.json").read_text())["classes"]
    assert text["backbone"] == json.loads((root / CACHE / "test" / "manifest.json").read_text())["backbone"]
    metrics = json.loads((root / "metrics/train.json").read_text())
    assert metrics["loss"] == "l1" and 0 <= metrics["val_top1"] <= 1
    epochs = pd.read_csv(root / "plots/train/epochs.csv")
    assert list(epochs["epoch"]) == list(range(1, len(epochs) + 1))
    shown = dvc(["metrics", "show", "--json"], root).stdout
    assert "val_top1" in shown
    for split in ("train", "val", "test"):
        m = json.loads((root / CACHE / split / "manifest.json").read_text())
        assert m["backbone"]["random_weights"] is False and m["backbone"]["pretrained"] == "file:shapes-clip-minilm.pt"
        assert m["count"] > 0 and m["dim"] == 64
    assert not (root / "data/.scratch/embed_images").exists()
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    assert lock["stages"]["embed_images"]["params"]["params.yaml"]["dataset"]["name"] == "shapes"


def test_second_repro_runs_nothing_and_status_is_clean(project):
    root, _ = project
    again = dvc(["repro"], root)
    assert ran(again) == []
    assert "didn't change, skipping" in again.stdout + again.stderr
    status = dvc(["status"], root)
    assert "up to date" in status.stdout


def test_deleting_an_output_reruns_only_its_stage(project):
    root, _ = project
    before = npy_bytes(root)
    (root / CACHE / "test" / "labels.npy").unlink()
    assert "embed_images" in dvc(["status"], root).stdout
    # DVC restores the known output from its cache without running anything...
    restored = dvc(["repro"], root)
    assert ran(restored) == [] and "'embed_images' is cached" in restored.stdout + restored.stderr
    assert npy_bytes(root) == before
    # ...and with the cache gone the stage really runs again, and only it
    (root / CACHE / "test" / "labels.npy").unlink()
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    md5 = lock["stages"]["embed_images"]["outs"][0]["md5"]  # the cache's record of the folder: without it,
    (root / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]).unlink()  # DVC cannot restore it
    rerun = dvc(["repro"], root)
    assert ran(rerun) == ["Running stage 'embed_images':"]
    assert npy_bytes(root) == before
    assert "up to date" in dvc(["status"], root).stdout


def test_two_fresh_runs_are_byte_identical(project, tmp_path):
    root, _ = project
    other = copy_quick_project(tmp_path / "other")
    dvc(["repro", "embed_images"], other)  # a fresh run of the image cache and what it depends on
    assert npy_bytes(other) == npy_bytes(root)
    for split in ("train", "val", "test"):
        rel = CACHE / split / "index.parquet"
        assert (other / rel).read_bytes() == (root / rel).read_bytes()
        rel = CACHE / split / "manifest.json"
        assert (other / rel).read_text() == (root / rel).read_text()


def test_changing_a_param_that_does_not_matter_keeps_the_cache(project):
    root, _ = project
    params = root / "params.yaml"
    original = params.read_text()
    try:
        params.write_text(original.replace("num_workers: 0", "num_workers: 1"))
        status = dvc(["status"], root).stdout
        # only the params check and the report, which read params.yaml whole, are out of date
        changed = {line[:-1] for line in status.splitlines() if line.endswith(":") and line[0] not in "\t "}
        assert changed == {"check_params", "report"}, status
    finally:
        params.write_text(original)


def test_exp_run_set_param_casts_dvc_float_text(reproduced, tmp_path):
    root = copy_reproduced(reproduced[0], tmp_path / "exp")
    dvc(["exp", "run", "-S", "dataset.val_fraction=0.000001", "embed_images"], root)  # that stage is enough
    written = yaml.safe_load((root / "params.yaml").read_text())["dataset"]["val_fraction"]
    assert written == "1e-06"  # DVC's rendering, read back by PyYAML as text
    val = json.loads((root / CACHE / "val" / "manifest.json").read_text())
    assert val["val_fraction"] == 1e-06 and val["count"] == 20  # one image per class at least
    shown = dvc(["exp", "show", "--csv"], root).stdout
    assert "1e-06" in shown


def test_stage_errors_are_one_clear_line(tmp_path):
    root = copy_project(tmp_path / "p")
    params = root / "params.yaml"
    cases = {
        "dataset:\n  nmae: shapes\n": "unknown key 'dataset.nmae'",
        "dataset:\n  name: imagenet\n": "'cifar10', 'cifar100', 'places365', 'imagefolder', 'cub' or 'shapes'",
        "dataset:\n  name: imagefolder\n  root: missing_folder\n": "missing_folder/train not found",
        "backbone:\n  model: ViT-B-32\n  pretrained: openai\n  device: cpu\n": "could not load weights 'openai'",
    }
    offline = yaml.safe_load(params.read_text())
    for override, expected in cases.items():
        merged = deep_merge(offline, yaml.safe_load(override))
        if "nmae" in override:
            merged["dataset"].pop("name")
        params.write_text(yaml.safe_dump(merged))
        proc = run(stage_command("embed_images", root), root, check=False)
        assert proc.returncode == 2, proc.stderr
        assert expected in proc.stderr
        assert "Traceback" not in proc.stderr
        errors = [line for line in proc.stderr.splitlines() if line.startswith("embed_images: error:")]
        assert len(errors) == 1


def test_exp_run_switches_to_an_llm_without_writing_its_key(reproduced, tmp_path):
    from tests.fake_servers import FakeServer, chat_answer, json_reply

    key = f"sk-{secrets.token_hex(12)}"  # made here, so no file of the project holds it
    seen_keys = []

    def llm(method, path, body, headers):
        seen_keys.append(headers.get("Authorization"))
        label = body["messages"][0]["content"].split(" a ")[-1].split(".")[0]
        return json_reply(chat_answer(f"1. {label.split()[0]} colour\n2. sharp corners\n3. paper"))

    root = copy_reproduced(reproduced[0], tmp_path / "llm")
    os.environ["SPARSE_CBM_TEST_KEY"] = key
    try:
        with FakeServer(llm) as srv:
            proc = dvc(["exp", "run", "-S", "concepts.source=llm", "-S", f"concepts.llm.base_url={srv.url}/v1",
                        "-S", "concepts.llm.api_key_env=SPARSE_CBM_TEST_KEY"], root)
            asked = len(srv.requests)
            assert sorted(ran(proc)) == sorted(f"Running stage '{s}':" for s in (
                "check_params", "concepts", "filter", "embed_text", "train", "evaluate", "compare", "embed_prompt_text",
                "train_spatial", "evaluate_spatial", "report"))  # never the image caches, ringed copies included
            shutil.rmtree(root / "data" / "concepts")
            dvc(["repro", "-f", "-s", "concepts"], root)
            assert len(srv.requests) == asked  # every answer came from data/concept_cache
    finally:
        del os.environ["SPARSE_CBM_TEST_KEY"]
    assert asked == 20 * 3 and set(seen_keys) == {f"Bearer {key}"}
    table = pd.read_parquet(root / "data/concepts/concepts.parquet")
    assert set(table["source"]) == {"llm"} and "sharp corners" in set(table["concept"])
    assert len(list((root / "data/concept_cache/llm").glob("*.json"))) == 60
    assert key not in proc.stdout + proc.stderr
    for path in root.rglob("*"):
        if path.is_file() and ".git" not in path.parts:
            assert key.encode() not in path.read_bytes(), path


def test_concept_stage_errors_are_one_clear_line(tmp_path):
    root = copy_project(tmp_path / "c")
    params = root / "params.yaml"
    offline = yaml.safe_load(params.read_text())
    cases = {
        "concepts:\n  file: data/concept_files/missing.csv\n": "concepts.file: data/concept_files/missing.csv not found",
        "concepts:\n  source: file\n  file: null\n": "concepts.file is null",
        "concepts:\n  source: conceptnet\n  conceptnet:\n    dump: nowhere.csv.gz\n": "dump: nowhere.csv.gz not found",
        "concepts:\n  source: llm\n  llm:\n    prompts:\n      a: no placeholder\n": "lack the placeholder {label}",
    }
    for override, expected in cases.items():
        params.write_text(yaml.safe_dump(deep_merge(offline, yaml.safe_load(override))))
        proc = run(stage_command("concepts", root), root, check=False)
        assert proc.returncode == 2, proc.stderr
        assert expected in proc.stderr and "Traceback" not in proc.stderr
        assert len([ln for ln in proc.stderr.splitlines() if ln.startswith("concepts: error:")]) == 1


def test_exp_run_set_loss_reruns_train_only(reproduced, tmp_path):
    root = copy_reproduced(reproduced[0], tmp_path / "loss")
    proc = dvc(["exp", "run", "--set-param", "loss=gumbel"], root)
    assert ran(proc) == [f"Running stage '{s}':" for s in ("check_params", "train", "evaluate", "report")]
    assert json.loads((root / "metrics/train.json").read_text())["loss"] == "gumbel"
    diff = json.loads(dvc(["metrics", "diff", "--json"], root).stdout)
    assert diff["metrics/train.json"]["loss"] == {"old": "l1", "new": "gumbel"}
    moved = [k for f in diff.values() for k, v in f.items() if isinstance(v.get("diff"), (int, float)) and v["diff"]]
    assert moved, diff  # another objective, other numbers (which ones depends on the world: both may reach 1.0)
    proc = dvc(["exp", "run", "-S", "loss=cos3", "-S", "train.final_layer=sparse"], root)
    assert ran(proc) == [f"Running stage '{s}':" for s in ("check_params", "train", "evaluate", "report")]
    trained = json.loads((root / "metrics/train.json").read_text())
    assert (trained["loss"], trained["final_layer"]) == ("cos3", "sparse") and trained["nec"] <= 5
    path = pd.read_csv(root / "plots/train/sparse_path.csv")
    assert len(path) > 1 and path["nec"].iloc[-1] > path["nec"].iloc[0]
    # docs/usage.md's `dvc exp show` fits 120 columns: names, changed params, headline metrics
    from sparse_cbm_app.cli.exp_show import exp_show_command

    names = dvc(["exp", "list", "--name-only"], root).stdout.split()
    assert len(names) == 2
    import subprocess

    from sparse_cbm_app.cli.repo import env_for_children

    shown = subprocess.run([sys.executable, "-m", *exp_show_command(), "--no-pager"], cwd=root, check=True,
                           env={**env_for_children(), "COLUMNS": "120"}, capture_output=True, text=True).stdout
    lines = shown.splitlines()
    assert max(len(line) for line in lines) <= 120 and "…" not in shown, shown
    header = next(line for line in lines if "Experiment" in line).split()
    assert header[:2] == ["Experiment", "Created"], shown
    # loss is also a metric's name, so DVC names the param's column by its file
    assert {"headline.top1", "headline.precision_at_k", "headline.nec", "params.yaml:loss"} <= set(header), shown
    assert all(any(name in line for line in lines) for name in names), shown
    assert "train.epochs" not in header and "test.cbm.top1" not in header   # unchanged params, other metrics


def test_report_references_existing_figures_and_the_metrics_numbers(project):
    import base64
    import re
    from html.parser import HTMLParser

    root, _ = project
    metrics = json.loads((root / "metrics/evaluate.json").read_text())
    md = (root / "reports/report.md").read_text()
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(linked) >= 6 and all((root / "reports" / f).is_file() for f in linked)

    class Page(HTMLParser):
        def __init__(self):
            super().__init__()
            self.images, self.tables, self.cell, self.banner = [], [], None, False

        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            if tag == "img":
                self.images.append(attrs)
            elif tag == "table":
                self.tables.append([])
            elif tag == "tr":
                self.tables[-1].append([])
            elif tag in ("td", "th"):
                self.cell = ""
            elif tag == "div" and attrs.get("class") == "banner":
                self.banner = True

        def handle_data(self, data):
            if self.cell is not None:
                self.cell += data

        def handle_endtag(self, tag):
            if tag in ("td", "th"):
                self.tables[-1][-1].append(self.cell)
                self.cell = None

    page = Page()
    page.feed((root / "reports/index.html").read_text())
    assert not page.banner and metrics["random_weights"] is False  # real weights: no warning banner
    assert {img["data-file"] for img in page.images} == set(linked)
    for img in page.images:
        data = base64.b64decode(img["src"].split(",", 1)[1])
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and data == (root / "reports" / img["data-file"]).read_bytes()
    rows = {r[0]: r[1:] for r in page.tables[0][1:]}
    labels = metrics["methods"]
    assert list(rows) == [labels[m] for m in metrics["test"]] and len(rows) == 6
    for method, label in labels.items():
        m = metrics["test"][method]
        assert rows[label] == [f"{m[k]:.4f}" for k in ("top1", "top5", "macro_f1")]  # the metrics, to 4 places
    assert "CBM (l1)" in rows
    trust = next(t for t in page.tables if t[0][0] == "model" and "concept AUROC" in t[0])
    cbm_row = next(r for r in trust if r[0] == "CBM (l1)")
    assert cbm_row[1] == f'{metrics["concept_quality"]["cbm"]["auroc"]:.4f}'


def test_the_metrics_and_plots_are_what_dvc_shows(project):
    """What `dvc repro` writes is DVC's metrics and plots; the committed default run's values are checked in
    tests/unit/test_committed_results.py."""
    root, _ = project
    metrics = json.loads((root / "metrics/evaluate.json").read_text())
    assert metrics["test_images"] == 320 and metrics["num_classes"] == 20      # the quick profile
    quality = metrics["concept_quality"]
    for key in ("auroc", "precision_at_k", "intervention", "deletion"):
        assert quality["cbm"][key] is not None
    compare = json.loads((root / "metrics/compare.json").read_text())
    grid = yaml.safe_load((root / "params.yaml").read_text())["compare"]
    assert [(c["loss"], c["form"], c["final_layer"]) for c in grid_records(compare)] == [
        (loss, form, layer) for loss in grid["losses"] for form in grid["forms"] for layer in grid["final_layers"]]
    intervention = pd.read_csv(root / "plots/evaluate/intervention.csv")
    assert list(intervention["k"]) == list(range(11))
    shown = dvc(["plots", "show", "--json", "plots/evaluate/intervention.csv"], root).stdout
    assert "cbm" in shown
    shown = json.loads(dvc(["metrics", "show", "--json"], root).stdout)  # DVC reads every metrics file
    files = next(iter(shown.values()))["data"]
    assert {"metrics/train.json", "metrics/evaluate.json", "metrics/compare.json", "metrics/spatial.json",
            "metrics/spatial_train.json"} <= set(files)
    grid_shown = files["metrics/compare.json"]["data"]["configs"]   # the grid, keyed so a change names its row
    assert set(grid_shown) == set(compare["grid"]) and all("top1" in r for r in grid_shown.values())
    assert files["metrics/evaluate.json"]["data"]["headline"]["top1"] == metrics["test"]["cbm"]["top1"]


def test_shuffled_labels_in_the_cache_make_the_cbm_collapse(project, tmp_path):
    """The class of bug where labels and embeddings fall out of step must not pass silently: a cache changed
    after it was written is refused by its checksums, and one written so by a buggy producer (its manifest
    agreeing) makes the CBM collapse."""
    from sparse_cbm.storage.manifest import file_sha256

    root = copy_quick_project(tmp_path / "shuffled")
    shutil.copytree(project[0] / "data", root / "data", dirs_exist_ok=True)
    for split in ("train", "val", "test"):
        path = root / CACHE / split / "labels.npy"
        labels = np.load(path)
        np.save(path, np.random.default_rng(0).permutation(labels))
    refused = run(stage_command("train", root), root, check=False)
    assert refused.returncode == 2 and "labels.npy" in refused.stderr and "dvc checkout" in refused.stderr
    for split in ("train", "val", "test"):  # as a producer that shuffled its labels would have written them
        manifest_path = root / CACHE / split / "manifest.json"
        manifest = json.loads(manifest_path.read_text())
        manifest["sha256"]["labels.npy"] = file_sha256(root / CACHE / split / "labels.npy")
        manifest_path.write_text(json.dumps(manifest))
    for stage in ("train", "evaluate"):
        run(stage_command(stage, root), root)
    collapsed = json.loads((root / "metrics/evaluate.json").read_text())["test"]["cbm"]["top1"]
    healthy = json.loads((project[0] / "metrics/evaluate.json").read_text())["test"]["cbm"]["top1"]
    # the quick profile's sparse CBM (NEC <= 5, 800 images): 0.73 with the MiniLM world CLIP, whose coarse 10-point
    # path keeps NEC 3.1 (the next point has 9.5); 0.89 with the first shapes CLIP
    assert healthy >= 0.6 and collapsed < 0.3


def test_spatial_branch_scores_heatmaps_regions_and_edits(project):
    """SALF-CBM beside the Sparse-CBM branch: every measure written and reported (the committed default run's
    values against chance are checked in tests/unit/test_committed_results.py)."""
    root, _ = project
    m = json.loads((root / "metrics/spatial.json").read_text())
    evaluate = json.loads((root / "metrics/evaluate.json").read_text())
    assert m["test_images"] == evaluate["test_images"] and 0 <= m["test_top1"] <= 1
    cams = {"gradcam_salf_cbm", "gradcam_probe", "gradcampp_probe", "layercam_probe"}  # Grad-CAM++, LayerCAM: issue 21
    # the class-concept model's own class maps (spatial.class_concepts: the paper's Table 2 heatmap)
    assert set(m["heatmaps"]) == {"salf_cbm", "class_concept_maps", "raw_p", *cams}
    assert 0 <= m["class_concept_model"]["test_top1"] <= 1 and m["class_concept_model"]["nec"] > 0
    for scores in m["heatmaps"].values():
        assert set(scores) == {"pixel_accuracy", "miou", "map", "map_foreground"}
        assert all(v is None or 0 <= v <= 1 for v in scores.values())  # None: no image with object and background
    assert set(m["pointing_game"]) == {"salf_cbm", "class_concept_maps", *cams}
    assert set(m["explain_anything"]["precision_at_3"]) >= {"salf_cbm", "random", "raw_p", "whole_image"}
    edit = m["local_edit"]
    shares = [edit[name][key] for name in ("lower_top_concept", "lower_class_concepts", "raise_runner_up",
                                           "raise_other_class") for key in ("to_intended", "changed")]
    # None: an edit with nothing to move on any image (a class it would raise has no positive weight)
    assert edit["images"] > 0 and all(v is None or 0 <= v <= 1 for v in shares)
    assert edit["lower_top_concept"]["to_intended"] is not None  # every counted image has a concept to lower
    report = (root / "reports/report.md").read_text()
    assert "SALF-CBM: heatmaps against the true class object's mask" in report
    assert (root / "reports/figures/spatial_panels.png").is_file()


def test_explain_prints_a_regions_concepts_and_an_edit(project, tmp_path):
    from PIL import Image

    from sparse_cbm.spatial.regions import bounding_box

    root, _ = project
    with np.load(root / "data/spatial/evaluation/panels.npz") as panels:
        image, mask, names = panels["images"][0], panels["masks"][0], list(panels["concept_names"])
        classes = list(panels["class_names"])
    Image.fromarray(image).save(tmp_path / "scene.png")
    box = ",".join(map(str, bounding_box(mask)))
    cli = [sys.executable, "-m", "sparse_cbm_app.cli", "explain", str(tmp_path / "scene.png"), "--box", box,
           "--out", str(tmp_path / "heat.png")]
    out = json.loads(run([*cli, "--json", "--edit", f"{names[0]}=-3"], root).stdout)
    assert out["prediction"]["class"] in classes and 0 < out["prediction"]["probability"] <= 1
    assert len(out["concepts"]) == 3 and all(c["concept"] in names for c in out["concepts"])
    assert out["edit"]["concepts"] == {names[0]: -3.0} and out["edit"]["prediction"]["class"] in classes
    assert (tmp_path / "heat.png").stat().st_size > 0
    text = run(cli, root).stdout
    assert f"top concepts of the box {box}:" in text and out["concepts"][0]["concept"] in text
    bad = run([*cli, "--edit", "no such concept=1"], root, check=False)
    assert bad.returncode == 2 and "is not a concept of this SALF-CBM" in bad.stderr
    outside = run([*cli[:5], "--box", "0,0,999,999"], root, check=False)
    assert outside.returncode == 2 and "is not inside" in outside.stderr


def test_exp_run_label_free_stop_rings_val_and_evaluates_the_kept_concepts(reproduced, tmp_path):
    """spatial.val_images rings val images; Label-free CBM's stop scores eq. 1 there (issue 21, row 4), and
    its cutoff's kept concepts are what evaluate_spatial and the panels name."""
    root = copy_reproduced(reproduced[0], tmp_path / "stop")
    proc = dvc(["exp", "run", "-S", "spatial.val_images=40", "-S", "spatial.early_stop=true"], root)
    assert ran(proc) == [f"Running stage '{s}':" for s in ("check_params", "embed_prompted", "train_spatial",
                                                            "evaluate_spatial", "report")]
    assert json.loads((root / "data/spatial/prompted/val/manifest.json").read_text())["images"] == 40
    config = json.loads((root / "data/spatial/model/config.json").read_text())
    trained = json.loads((root / "metrics/spatial_train.json").read_text())
    assert 1 <= trained["kept_epoch"] <= trained["epochs"] and "kept" not in config
    similarity = config["val_cos3_every_concept"]  # by concept name (the JSON's keys are sorted)
    levels = np.unique(list(similarity.values()))  # a cutoff halfway between two recorded values, near the median
    cutoff = float(levels[len(levels) // 2 - 1] + levels[len(levels) // 2]) / 2
    proc = dvc(["exp", "run", "-S", "spatial.val_images=40", "-S", "spatial.early_stop=true",
                "-S", f"spatial.cutoff={cutoff}"], root)
    assert ran(proc) == [f"Running stage '{s}':" for s in ("check_params", "train_spatial", "evaluate_spatial",
                                                            "report")]
    config = json.loads((root / "data/spatial/model/config.json").read_text())
    above = {name for name, value in similarity.items() if value > cutoff}
    assert set(config["concepts"]) == above and len(config["kept"]) == len(above)
    concepts = (root / "data/filtered/concepts.txt").read_text().splitlines()
    assert [concepts[i] for i in config["kept"]] == config["concepts"]  # in the concept list's order
    assert json.loads((root / "metrics/spatial_train.json").read_text())["concepts_kept"] == len(config["kept"])
    with np.load(root / "data/spatial/evaluation/panels.npz") as panels:
        assert panels["concept_names"].tolist() == config["concepts"]
    m = json.loads((root / "metrics/spatial.json").read_text())
    assert 0 <= m["test_top1"] <= 1 and m["explain_anything"]["precision_at_3"]["salf_cbm"] is not None
