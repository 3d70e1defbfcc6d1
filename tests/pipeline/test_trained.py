"""The trained pipeline through the Python API and the explorer: the exported model predicts the test split
with exactly ``evaluate``'s top-1, and a browser sees a real edit change SALF-CBM's prediction."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sparse_cbm.trained import SparseCBM

pytestmark = pytest.mark.pipeline


@pytest.fixture(scope="module")
def exported(reproduced, tmp_path_factory):
    root, _ = reproduced
    folder = SparseCBM.from_pretrained(root).save_pretrained(tmp_path_factory.mktemp("export") / "model", gallery=20)
    return root, folder


def test_the_exported_model_reproduces_evaluates_test_top1_exactly(exported):
    root, folder = exported
    project = SparseCBM.from_pretrained(root)
    model = SparseCBM.from_pretrained(folder)
    gallery = project.gallery  # the project's test split, as the dataset builds it
    images = [gallery.image(i) for i in range(len(gallery))]
    truth = [gallery.label(i) for i in range(len(gallery))]
    predicted = model.predict(images)
    top1 = round(float(np.mean([p == t for p, t in zip(predicted, truth)])), 6)
    evaluate = json.loads((root / "metrics/evaluate.json").read_text())
    assert top1 == evaluate["test"]["cbm"]["top1"]
    cache = np.load(root / "data/image_cache/test/embeddings.npy", mmap_mode="r")
    np.testing.assert_array_equal(model.embed(images[:64]), cache[:64])  # the image cache's bytes, from the images
    assert predicted == project.predict(images)


def test_a_browser_edits_a_trained_salf_cbm_and_sees_the_prediction_change(exported):
    from sparse_cbm_app.explorer.server import create_app
    from tests.browser import browser_page, draw_box, running, set_slider

    _, folder = exported
    model = SparseCBM.from_pretrained(folder)
    flip = None
    for row in range(len(model.gallery)):  # an image whose prediction a whole-box edit of one concept changes
        image = model.square(model.gallery.image(row))
        side = image.width
        box = np.zeros((side, side), np.float32)
        box[int(side * .1):int(side * .9), int(side * .1):int(side * .9)] = 1
        base = model.explain_region(image, box, heatmaps=False)
        c = model.classes.index(base.prediction)
        concept = model.spatial_concepts[int(np.argmax(model.spatial.fc.weight[c].detach().numpy()))]
        after = model.explain_region(image, box, edits={concept: -10.0}, heatmaps=False)
        if after.edited_prediction != base.prediction:
            flip = row, concept, base.prediction, after.edited_prediction
            break
    assert flip is not None, "no gallery image's prediction changes when its class's top concept is lowered by 10 sd"
    row, concept, before, expected = flip
    with running(create_app(model)) as url, browser_page() as page:
        page.goto(url)
        page.locator(f".thumb[data-id=g{row}]").click()
        page.wait_for_function("document.getElementById('cbm-prediction').textContent !== '–'")
        draw_box(page, 0.1, 0.1, 0.9, 0.9)
        page.wait_for_function("document.getElementById('salf-region').textContent === 'box'")
        assert page.locator("#region-concepts li").count() == 3
        assert page.inner_text("#salf-prediction") == before
        x0, y0, x1, y1 = (int(v) for v in page.inner_text("#region-label").split("box ")[1].split(", "))
        drawn = np.zeros((side, side), np.float32)
        drawn[y0:y1, x0:x1] = 1  # the box the page drew, edited through the API: what the page must show
        expected = model.explain_region(model.square(model.gallery.image(row)), drawn, edits={concept: -10.0},
                                        heatmaps=False).edited_prediction
        assert expected != before  # the box the page drew flips too, so the page must show a change
        page.select_option("#edit-concept", concept)
        set_slider(page, -10)
        page.wait_for_function("document.getElementById('edit-beta').textContent === '-10 sd'")
        page.wait_for_function(f"document.getElementById('edited-prediction').textContent === {json.dumps(expected)}",
                               timeout=20000)
