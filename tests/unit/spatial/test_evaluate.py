"""The spatial evaluation's heatmap scoring (``score_heatmaps``) and panels (``heatmap_panels``) on a
constructed test split whose every heatmap is known: SALF-CBM's maps and one Grad-CAM lie on the class
object, the raw P and the other Grad-CAM on everything but it."""

import numpy as np
import torch
from PIL import Image

from sparse_cbm.bottleneck.final_layer import StandardizedLinear
from sparse_cbm.datasets.base import ImageSource, ObjectMap
from sparse_cbm.spatial.evaluate import SpatialEvaluation, heatmap_panels, score_heatmaps
from sparse_cbm.spatial.names import HEATMAP_METHODS
from sparse_cbm.spatial.heatmaps import upsample
from sparse_cbm.spatial.model import SpatialBottleneck

SIZE, GRID, M = 16, 4, 2  # images 16 x 16 px, concept maps 4 x 4, one concept per class
QUADRANTS = [(0, 0), (0, 8), (8, 0), (8, 8)]


def object_labels(i):
    """Image i's class object: one 8 x 8 quadrant (whole cells of the 4 x 4 grid)."""
    y, x = QUADRANTS[i % 4]
    labels = np.zeros((SIZE, SIZE), np.uint8)
    labels[y:y + 8, x:x + 8] = 1
    return labels


class Split(ImageSource):
    """Eight test images; image i has class i % 2 and its object in quadrant i % 4; its pixels are white on
    the object (so a fake Grad-CAM can read the mask off the input). Image 4 is not decided by its object."""

    def __init__(self):
        self.labels = np.arange(8, dtype=np.int64) % 2
        self.ids = [f"t/{i}" for i in range(8)]
        self.loaded = []

    def load(self, i):
        self.loaded.append(i)
        return Image.fromarray(np.repeat(object_labels(i)[:, :, None] * 255, 3, axis=2))

    def object_map(self, i):
        return ObjectMap(object_labels(i), [np.array([True, False])], 1, decided_by_object=i != 4)

    def fingerprint_parts(self):
        return ["constructed"]


def preprocess(image):
    return torch.from_numpy(np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255)


class Cam:
    """A Grad-CAM stand-in: the input's first channel (the mask), or its complement; records the classes."""

    def __init__(self, invert=False):
        self.invert, self.calls = invert, []

    def __call__(self, images, classes):
        self.calls.append((len(images), list(classes)))
        x = images[:, 0].numpy()
        return 1 - x if self.invert else x


def cell_mask(i):
    """The object on the 4 x 4 grid."""
    return object_labels(i).reshape(GRID, 4, GRID, 4).mean((1, 3))


def features(n=8):
    """(n, M * 4 * 4): channel = concept = class; image i's own class's channel is its object (1 on it),
    except image 4, whose map is the complement (it is not scored, so it must not count)."""
    out = np.zeros((n, M, GRID, GRID), np.float32)
    for i in range(n):
        cells = cell_mask(i)
        out[i, i % 2] = 1 - cells if i == 4 else cells
    return out.reshape(n, -1)


def prompted(rows):
    """Cache order (position j = image rows[j]): grid^2 copies each, embedded as [a_0, a_1, 1] with a_c the
    complement of the object for the image's own class c: P lies off the object."""
    out = []
    for i in rows:
        a = np.zeros((GRID * GRID, M + 1), np.float32)
        a[:, i % 2] = (1 - cell_mask(i)).reshape(-1)
        a[:, M] = 0.05
        out.append(a)
    return np.concatenate(out)


def evaluation(gradcam):
    model = SpatialBottleneck(M, M, 2, grid=GRID)
    with torch.no_grad():
        model.conv.weight.copy_(torch.eye(M)[:, :, None, None])
    model.fc = StandardizedLinear(torch.eye(2) * 2, torch.zeros(2), torch.full((M,), 0.1), torch.ones(M))
    return SpatialEvaluation(model=model.eval(), feature_shape=(M, GRID, GRID), grid=GRID, p_mean=torch.zeros(M),
                             p_std=torch.ones(M), concept_embeddings=torch.eye(M, M + 1), attribute_of={},
                             source=Split(), preprocess=preprocess, features=None, gradcam=gradcam)


ROWS = np.array([1, 2, 4, 5, 7])  # the test images with prompted copies, in cache order (image 4 is not scored)


def test_heatmaps_on_the_object_score_perfectly_and_those_off_it_score_nothing():
    cams = {"gradcam_salf_cbm": Cam(), "gradcam_probe": Cam(invert=True)}
    ev = evaluation(cams)
    scores = score_heatmaps(ev, ROWS, features(), prompted(ROWS), threshold=0.5, batch_size=3)
    assert list(scores) == [m for m in HEATMAP_METHODS if m in ("salf_cbm", "raw_p", *cams)]  # in that order
    assert scores["gradcam_salf_cbm"] == {"pixel_accuracy": 1.0, "miou": 1.0, "map": 1.0, "map_foreground": 1.0}
    probe = scores["gradcam_probe"]
    assert probe["pixel_accuracy"] == 0.0 and probe["miou"] == 0.0 and 0 < probe["map_foreground"] < 0.3
    assert probe["map"] == 0.5  # Chefer's: foreground and background ranked jointly, both exactly inverted
    # the 4 x 4 maps, upsampled bilinearly, rank every object pixel first (AP 1); binarised at half their range
    # they miss one pixel of 256 per image, the object's inner corner (0.625^2 of the range), and P only hits it
    ours, raw = scores["salf_cbm"], scores["raw_p"]
    assert ours["map_foreground"] == 1.0 and ours["map"] > 0.999
    assert ours["pixel_accuracy"] == round(1 - 1 / 256, 4) and ours["miou"] > 0.98
    assert raw["pixel_accuracy"] == round(1 / 256, 4) and raw["miou"] < 0.01 and 0 < raw["map_foreground"] < 0.3
    assert raw["map"] < 0.4
    # the Grad-CAMs saw the four scored images of the true classes, in batches of at most 3, and never image 4
    assert cams["gradcam_salf_cbm"].calls == [(3, [1, 0, 1]), (1, [1])]
    assert 4 not in ev.source.loaded


def test_the_mean_threshold_still_ranks_the_object_heatmaps_first():
    ev = evaluation({"gradcam_salf_cbm": Cam(), "gradcam_probe": Cam(invert=True)})
    scores = score_heatmaps(ev, ROWS, features(), prompted(ROWS), threshold="mean")
    for key in ("pixel_accuracy", "miou", "map"):
        assert scores["salf_cbm"][key] > scores["raw_p"][key] and scores["salf_cbm"][key] > 0.8
        assert all(0 <= s[key] <= 1 for s in scores.values())
        assert all(round(s[key], 4) == s[key] for s in scores.values())  # reported to four places


def test_scoring_without_the_black_box_grad_cam():
    """spatial.features.backbone other than clip: evaluate_spatial builds no gradcam_probe."""
    ev = evaluation({"gradcam_salf_cbm": Cam()})
    scores = score_heatmaps(ev, ROWS, features(), prompted(ROWS), threshold=0.5)
    assert set(scores) == {"salf_cbm", "gradcam_salf_cbm", "raw_p"}
    assert scores["gradcam_salf_cbm"]["miou"] == 1.0


def test_heatmap_panels_hold_each_images_maps_at_its_size():
    cams = {"gradcam_salf_cbm": Cam(), "gradcam_probe": Cam(invert=True)}
    ev = evaluation(cams)
    panels = heatmap_panels(ev, ROWS, features(), count=3, k=2)
    n = 3
    assert panels["rows"].tolist() == [1, 2, 4]
    assert panels["images"].shape == (n, SIZE, SIZE, 3) and panels["images"].dtype == np.uint8
    assert panels["masks"].shape == (n, SIZE, SIZE) and panels["masks"].dtype == bool
    assert panels["concept_maps"].shape == (n, 2, SIZE, SIZE) and panels["concept_maps"].dtype == np.float16
    assert panels["class_heatmaps"].shape == panels["gradcam"].shape == (n, SIZE, SIZE)
    assert panels["class_heatmaps"].dtype == panels["gradcam"].dtype == np.float16
    assert panels["labels"].tolist() == [1, 0, 0]
    for j, i in enumerate([1, 2, 4]):
        mask = object_labels(i) == 1
        np.testing.assert_array_equal(panels["masks"][j], mask)
        np.testing.assert_array_equal(panels["images"][j][..., 0], mask * 255)
    # images 1 and 2 are classified by their object's concept, which contributes most and is drawn first
    assert panels["predictions"][:2].tolist() == [1, 0] and panels["concepts"][:2, 0].tolist() == [1, 0]
    with torch.no_grad():
        z = ev.model.standardised(ev.model.concept_maps(torch.from_numpy(features()[[1]]).reshape(1, M, GRID, GRID)))
    np.testing.assert_allclose(panels["concept_maps"][0, 0], upsample(z[:, 1], (SIZE, SIZE))[0].numpy(), atol=2e-3)
    for j in (0, 1):
        heat = panels["class_heatmaps"][j].astype(np.float32)
        assert heat[panels["masks"][j]].min() > heat[~panels["masks"][j]].max()  # the class heatmap is on the object
    # the black box's Grad-CAM is drawn when there is one (here the complement of the object), once an image
    np.testing.assert_array_equal(panels["gradcam"].astype(bool), ~panels["masks"])
    assert len(cams["gradcam_probe"].calls) == 3 and not cams["gradcam_salf_cbm"].calls
    assert heatmap_panels(ev, ROWS, features(), count=0, k=2) == {}


def test_heatmap_panels_fall_back_to_the_salf_cbm_grad_cam_or_to_none():
    panels = heatmap_panels(evaluation({"gradcam_salf_cbm": Cam()}), ROWS, features(), count=2, k=1)
    np.testing.assert_array_equal(panels["gradcam"].astype(bool), panels["masks"])
    assert panels["concepts"].shape == (2, 1)
    assert "gradcam" not in heatmap_panels(evaluation({}), ROWS, features(), count=2, k=1)


def edit_evaluation(std=1.0):
    """Three concepts, three classes, class c listening to concept c alone. Every image: concept 0 on its
    object (a quarter of the cells: pooled 0.25), concept 1 at 0.2 everywhere, concept 2 at 0.1: predicted
    0, runner-up 1, and 2 the only other class."""
    model = SpatialBottleneck(3, 3, 3, grid=GRID)
    with torch.no_grad():
        model.conv.weight.copy_(torch.eye(3)[:, :, None, None])
    model.fc = StandardizedLinear(torch.eye(3), torch.zeros(3), torch.zeros(3), torch.full((3,), std))
    ev = SpatialEvaluation(model=model.eval(), feature_shape=(3, GRID, GRID), grid=GRID, p_mean=torch.zeros(3),
                           p_std=torch.ones(3), concept_embeddings=torch.eye(3), attribute_of={}, source=Split(),
                           preprocess=preprocess, features=None, gradcam={})
    maps = np.zeros((8, 3, GRID, GRID), np.float32)
    for i in range(8):
        maps[i, 0], maps[i, 1], maps[i, 2] = cell_mask(i), 0.2, 0.1
    return ev, maps.reshape(8, -1)


def test_local_edits_move_the_prediction_to_the_class_each_edit_is_meant_to_give():
    from sparse_cbm.spatial.evaluate import EDITS, local_edits

    ev, maps = edit_evaluation()
    rows = np.arange(8)
    # beta 0.4 raw in the object's box moves a pooled score by 0.1: enough to swap 0 and 1, not to reach 2
    small = local_edits(ev, rows, maps, 0.4, "raw")
    assert small["images"] == 8 and small["units"] == "raw" and small["beta"] == 0.4
    for name in ("lower_top_concept", "lower_class_concepts", "raise_runner_up"):
        assert small[name] == {"to_intended": 1.0, "changed": 1.0}, name
    assert small["raise_other_class"] == {"to_intended": 0.0, "changed": 0.0}
    large = local_edits(ev, rows, maps, 1.0, "raw")  # + 0.25: class 2's 0.35 beats 0.25
    assert large["raise_other_class"] == {"to_intended": 1.0, "changed": 1.0}
    assert set(EDITS) <= set(large)
    # in standard deviations (0.25 each), beta 0.4 is 0.1 raw: 0.025 pooled, too little to move anything
    ev, maps = edit_evaluation(std=0.25)
    sd = local_edits(ev, rows, maps, 0.4, "sd")
    assert all(sd[name] == {"to_intended": 0.0, "changed": 0.0} for name in EDITS)
    assert local_edits(ev, rows, maps, 0.4, "raw")["lower_top_concept"]["to_intended"] == 1.0


def test_local_edits_name_units_they_do_not_know():
    import pytest

    from sparse_cbm.spatial.evaluate import local_edits

    ev, maps = edit_evaluation()
    with pytest.raises(ValueError, match="edit units must be one of raw, sd"):
        local_edits(ev, np.arange(2), maps, 1.0, "percent")


def test_the_top_concept_lowered_is_one_that_raises_the_prediction():
    from sparse_cbm.spatial.evaluate import _edit_plan

    # class 0 weighs concept 0 at +1 and concept 2 at -3; concept 2 is absent (z -1), so it contributes +3, more
    # than concept 0 (+0.25), but lowering it would raise class 0 further: the top concept is concept 0
    weight = torch.tensor([[1.0, 0.0, -3.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    plan = _edit_plan(weight, torch.tensor([0.25, 0.2, -1.0]), pred=0, runner_up=1, other=2)
    assert plan["lower_top_concept"] == ({0: -1.0}, 1) and plan["lower_class_concepts"] == ({0: -1.0}, 1)
    assert plan["raise_runner_up"] == ({1: 1.0}, 1)
    assert plan["raise_other_class"] is None  # class 2 has no positive weight: nothing to raise, not a failure
    assert _edit_plan(weight, torch.zeros(3), pred=0, runner_up=1, other=None)["raise_other_class"] is None


def class_model(weight):
    """A class-concept SALF-CBM (one concept a class) whose class c's map is ``weight[c]`` of the channels."""
    model = SpatialBottleneck(M, 2, 2, grid=GRID)
    with torch.no_grad():
        model.conv.weight.copy_(torch.as_tensor(weight, dtype=torch.float32)[:, :, None, None])
    model.fc = StandardizedLinear(torch.eye(2), torch.zeros(2), torch.zeros(2), torch.ones(2))
    return model.eval()


def test_the_class_concept_model_is_scored_by_each_image_s_own_class_map():
    """The paper's Table 2 heatmap: the map of the image's own class concept. With class c's concept on
    channel c it ranks as SALF-CBM's class heatmap does; swapped, each class reads the other's (empty)
    channel: a flat map, background everywhere (Chefer's code), so 3/4 of the pixels are right."""
    ev = evaluation({})
    ev.class_model = class_model(np.eye(2))
    scores = score_heatmaps(ev, ROWS, features(), prompted(ROWS), threshold="mean")
    assert list(scores) == ["salf_cbm", "class_concept_maps", "raw_p"]
    assert scores["class_concept_maps"] == scores["salf_cbm"]
    ev.class_model = class_model(np.eye(2)[::-1].copy())
    swapped = score_heatmaps(ev, ROWS, features(), prompted(ROWS), threshold="mean")["class_concept_maps"]
    assert swapped["pixel_accuracy"] == 0.75 and swapped["miou"] == round((0.75 + 0) / 2, 4)


def test_explain_anything_scores_each_ranking_and_the_attribute_word_diagnostic():
    """Concept 1 names the one annotated attribute, true of every object; concept 0 names nothing. Each
    image's own class's map lies on its object, so a box around it ranks concept (class) i % 2 first: true
    on the odd images only. Restricted to the attribute words (the diagnostic) every ranking is right."""
    from sparse_cbm.spatial.evaluate import explain_anything

    ev = evaluation({})
    ev.attribute_of = {1: 0}
    rows = np.array([1, 2, 5, 7])
    out = explain_anything(ev, rows, features(), prompted(rows), regions=4, k=1, seed=0)
    assert out["regions"] == 4 and out["precision_at_1"]["salf_cbm"] == 0.75  # images 1, 5 and 7
    assert out["salf_cbm_by_object"] == {"class_object": 0.75}
    assert set(out["precision_at_1_attribute_words_only"]) == set(out["precision_at_1"])
    assert all(v == 1.0 for v in out["precision_at_1_attribute_words_only"].values())
    ev.attribute_of = {}
    assert "precision_at_1_attribute_words_only" not in explain_anything(ev, rows, features(), prompted(rows), 4, 1, 0)


def test_one_pass_predicts_for_every_model_and_scores_the_first_one_s_whole_image_explanations():
    from sparse_cbm.spatial.evaluate import split_pass

    rng = np.random.default_rng(0)
    n, shape = 10, (3, 2, 2)
    features = rng.random((n, 12)).astype(np.float32)
    first, second = SpatialBottleneck(3, 3, 2, 2), SpatialBottleneck(3, 3, 2, 2)
    with torch.no_grad():
        first.conv.weight.copy_(torch.eye(3)[:, :, None, None])  # map m is feature channel m
        second.conv.weight.copy_(torch.from_numpy(rng.normal(size=(3, 3, 1, 1)).astype(np.float32)))
    first.fc = StandardizedLinear(torch.tensor([[1.0, 0, 0], [0, 1, 0]]), torch.zeros(2), torch.zeros(3), torch.ones(3))
    second.fc = StandardizedLinear(torch.randn(2, 3), torch.zeros(2), torch.zeros(3), torch.ones(3))
    annotations = rng.random((n, 2)) < 0.5
    matched = SpatialEvaluation(first, shape, 2, None, None, None, {0: 0, 2: 1}, None, None, None, {}).annotated
    run = split_pass([first, second], features, shape, annotations, matched, k=1, batch_size=3)

    pooled = features.reshape(n, 3, 4).mean(2)  # c*: the mean of each channel's map
    pred = (pooled[:, 1] > pooled[:, 0]).astype(int)  # class 0 reads concept 0, class 1 concept 1
    with torch.no_grad():
        second_pred = second(torch.from_numpy(features).reshape(n, *shape)).logits.argmax(1).numpy()
    np.testing.assert_array_equal(run.predictions[0], pred)
    np.testing.assert_array_equal(run.predictions[1], second_pred)
    truth = np.stack([annotations[:, 0], np.zeros(n, bool), annotations[:, 1]], axis=1)  # concept 1 is unannotated
    top_contribution = pred  # class c's only contribution is concept c
    top_activation = pooled.argmax(1)
    assert run.precision == {"k": 1,
                             "by_contribution": round(float(truth[np.arange(n), top_contribution].mean()), 4),
                             "by_activation": round(float(truth[np.arange(n), top_activation].mean()), 4),
                             "random_ranking": round(float(truth.mean()), 4)}
    assert run.precision["by_contribution"] != run.precision["by_activation"]  # the two rankings differ here
    assert split_pass([first], features, shape).precision is None  # no annotations: nothing to score
