"""The report's SALF-CBM sections: their tables from a synthetic metrics file, and the heatmap panels drawn
from a synthetic ``panels.npz`` (the evaluate_spatial stage's keys)."""

import numpy as np
from PIL import Image

from sparse_cbm.report.spatial import (EA_LABELS, EDIT_LABELS, HEATMAP_LABELS, accuracy_table, heatmap_table,
                                       panels_figure, spatial_sections)
from sparse_cbm.spatial.evaluate import EDITS

SPATIAL = {"test_top1": 0.7125, "test_images": 40, "nec": 4.25, "heatmap_images": 9, "prompted_test_images": 12,
           "heatmaps": {"salf_cbm": {"pixel_accuracy": 0.712, "miou": 0.5344, "map": 0.70951, "map_foreground": 0.61},
                        "raw_p": {"pixel_accuracy": 0.5569, "miou": 0.3864, "map": 0.4327}},
           "pointing_game": {"salf_cbm": 0.5061},
           "explain_anything": {"precision_at_3": {"salf_cbm": 0.2467, "random": 0.0217}, "regions": 20,
                                "salf_cbm_by_object": {"class_object": 0.25, "other_object": 0.1}},
           "local_edit": {"beta": 1.0, "units": "raw", "images": 16,
                          "lower_top_concept": {"to_intended": 0.4417, "changed": 0.4875},
                          "lower_class_concepts": {"to_intended": 0.5, "changed": 0.775},
                          "raise_runner_up": {"to_intended": 0.5458, "changed": 0.5542},
                          "raise_other_class": {"to_intended": 0.1583, "changed": 0.225}}}
EVALUATE = {"methods": {"cbm": "CBM (l1)", "linear_probe": "linear probe"},
            "test": {"cbm": {"top1": 0.9975}, "linear_probe": {"top1": 0.99}, "zero_shot": {"top1": 0.1}}}


def panels(n=3, k=2, size=24, gradcam=True):
    rng = np.random.default_rng(0)
    masks = np.zeros((n, size, size), bool)
    masks[:, 4:14, 6:18] = True
    out = {"rows": np.arange(n), "images": rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), "masks": masks,
           "predictions": np.arange(n) % 2, "labels": np.zeros(n, np.int64), "concepts": np.tile(np.arange(k), (n, 1)),
           "concept_maps": rng.standard_normal((n, k, size, size)).astype(np.float16),
           "class_heatmaps": rng.standard_normal((n, size, size)).astype(np.float16),
           "concept_names": np.array(["red", "round", "striped"]), "class_names": np.array(["apple", "ball"])}
    if gradcam:
        out["gradcam"] = rng.random((n, size, size)).astype(np.float16)
    return out


def test_tables_carry_the_metrics_as_written():
    assert accuracy_table(SPATIAL, EVALUATE, {"nec": 5.0}) == [
        ["model", "test top-1", "NEC"], ["SALF-CBM (concept maps, sparse final layer)", 0.7125, 4.25],
        ["CBM (l1)", 0.9975, 5.0], ["linear probe", 0.99, None]]
    assert heatmap_table(SPATIAL) == [
        ["heatmap", "pixel accuracy", "mIoU", "mAP", "AP of the object alone", "pointing game (chance 0.25)"],
        [HEATMAP_LABELS["salf_cbm"], 0.712, 0.5344, 0.70951, 0.61, 0.5061],
        [HEATMAP_LABELS["raw_p"], 0.5569, 0.3864, 0.4327, None, None]]  # a metrics file from before map_foreground
    with_class_model = {**SPATIAL, "class_concept_model": {"test_top1": 0.8375, "nec": 3.92}}
    assert accuracy_table(with_class_model, EVALUATE, {"nec": 5.0})[2] == [
        "SALF-CBM with class concepts (the paper's Table 2 model)", 0.8375, 3.92]
    scored = {**with_class_model, "concept_quality": {"precision_at_k": {"k": 3, "by_contribution": 0.1792}}}
    evaluated = {**EVALUATE, "concept_quality": {"cbm": {"precision_at_k": {"k": 3, "by_contribution": 0.7925}}}}
    table = accuracy_table(scored, evaluated, {"nec": 5.0})
    assert table[0][-1] == "its top 3 concepts by contribution, true of the image"
    assert [row[-1] for row in table[1:]] == [0.1792, None, 0.7925, None]  # SALF-CBM, class model, CBM, probe
    other_k = {**evaluated, "concept_quality": {"cbm": {"precision_at_k": {"k": 5, "by_contribution": 0.9}}}}
    assert [row[-1] for row in accuracy_table(scored, other_k, {"nec": 5.0})[1:]] == [0.1792, None, None, None]


def test_without_masks_only_the_accuracy_section(tmp_path):
    bare = {k: SPATIAL[k] for k in ("test_top1", "test_images", "nec")}
    (section,) = spatial_sections(bare, {"cos3": 0.4746}, EVALUATE, {"nec": 5.0}, tmp_path / "none.npz", tmp_path)
    assert "cubic cosine 0.4746 on train" in section.text and section.table[1][1:] == [0.7125, 4.25]


def test_every_section_and_the_panels_figure(tmp_path):
    np.savez_compressed(tmp_path / "panels.npz", **panels(1, k=1))
    sections = spatial_sections(SPATIAL, {"cos3": 0.4746}, EVALUATE, {"nec": 5.0}, tmp_path / "panels.npz", tmp_path)
    titles = [s.title for s in sections]
    assert titles == ["SALF-CBM: accuracy on the same test images", "SALF-CBM: heatmaps against the true class object's "
                      "mask", "SALF-CBM: Explain Anything", "SALF-CBM: local editing", "SALF-CBM: heatmap panels"]
    assert "On the 9 of 12 test images" in sections[1].text
    ea = sections[2]
    assert ea.table == [["ranking", "precision at 3"], [EA_LABELS["salf_cbm"], 0.2467], [EA_LABELS["random"], 0.0217]]
    assert "20 boxes" in ea.text and "class objects: 0.25." in ea.text and "other objects: 0.1." in ea.text
    edit = sections[3]
    assert "β = 1.0 raw map units" in edit.text and "on 16 test images" in edit.text
    assert edit.table[0] == ["edit", "meant to give", "prediction became it", "prediction changed"]
    assert [row[0] for row in edit.table[1:]] == [EDIT_LABELS[name][0] for name in EDITS]  # one row per edit, in order
    assert edit.table[1][2:] == [0.4417, 0.4875] and edit.table[4][1:] == ["that class", 0.1583, 0.225]
    assert sections[4].figures == ["figures/spatial_panels.png"] and (tmp_path / "figures/spatial_panels.png").is_file()


def _png(path):
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def test_the_panels_figure_has_a_row_per_image_and_a_column_per_map(tmp_path):
    two = _png(panels_figure(panels(2, k=1), tmp_path / "two.png"))
    capped = _png(panels_figure(panels(2, k=1), tmp_path / "capped.png", limit=1))
    narrow = _png(panels_figure(panels(2, k=1, gradcam=False), tmp_path / "narrow.png"))
    # a row of 3 + k + 1 panels (image, mask, k maps, class heatmap, Grad-CAM), each 1.45 x 1.55 inches at 110 dpi
    height, width, _ = two.shape
    assert 5 * 1.45 * 110 * 0.7 <= width <= 5 * 1.45 * 110 and 2 * 1.55 * 110 * 0.7 <= height <= 2 * 1.55 * 110
    assert abs(capped.shape[1] - width) <= 4 and 0.4 * height < capped.shape[0] < 0.6 * height  # the limit caps the rows
    assert abs(narrow.shape[0] - height) <= 2 and 0.7 * width < narrow.shape[1] < 0.9 * width  # no Grad-CAM: a column fewer
    # not blank: the images and maps are drawn, in many colours, over most of the figure
    assert len(np.unique(two.reshape(-1, 3), axis=0)) > 1000
    assert (two != 255).any(axis=2).mean() > 0.4
    # the same panels draw the same bytes
    panels_figure(panels(2, k=1), tmp_path / "again.png")
    assert (tmp_path / "again.png").read_bytes() == (tmp_path / "two.png").read_bytes()


def test_the_explain_anything_table_shows_the_attribute_word_diagnostic_when_measured():
    from sparse_cbm.report.spatial import EA_LABELS, ea_table

    before = {"precision_at_3": {"salf_cbm": 0.2, "random": 0.02}, "regions": 200}
    assert ea_table(before) == [["ranking", "precision at 3"], [EA_LABELS["salf_cbm"], 0.2],
                                [EA_LABELS["random"], 0.02]]
    after = {**before, "precision_at_3_attribute_words_only": {"salf_cbm": 0.43, "random": 0.2}}
    table = ea_table(after)
    assert len(table[0]) == 3 and table[1] == [EA_LABELS["salf_cbm"], 0.2, 0.43] and table[2][2] == 0.2


def test_the_heatmap_table_lists_methods_in_the_evaluation_s_order():
    from sparse_cbm.spatial.names import HEATMAP_METHODS

    scores = {"pixel_accuracy": 0.5, "miou": 0.4, "map": 0.3}
    spatial = {"heatmaps": {m: scores for m in sorted([*HEATMAP_METHODS, "new_method"])}}  # as metrics files sort them
    assert [row[0] for row in heatmap_table(spatial)[1:]] == [*(HEATMAP_LABELS[m] for m in HEATMAP_METHODS),
                                                                "new_method"]
