"""Our heatmap metrics (``SegmentationScores``) against Chefer et al.'s evaluation, the protocol of
SALF-CBM's Table 2.

``CHEFER`` holds what Chefer's own code printed on ``inputs()``: the lines of ``eval_batch`` in
``baselines/ViT/imagenet_seg_eval.py`` from the min-max scaling to the AP (mean threshold, the
(background, foreground) channels) with ``batch_pix_accuracy``, ``batch_intersection_union`` and
``get_ap_scores`` of ``utils/metrices.py``, accumulated as its main loop does
(hila-chefer/Transformer-Explainability at c3e578f7, run on float64 tensors; not vendored here).
"""

import numpy as np
import pytest

from sparse_cbm.spatial.heatmaps import SegmentationScores, mask_scores

# pixAcc, mIoU, mAP and the per-image APs, as Chefer's code gives them on inputs()
CHEFER = {"pixel_accuracy": 0.7234700520833334, "miou": 0.5332532681098442, "map": 0.8361624792222572,
          "aps": [0.6710739635170143, 0.8550695134835764, 0.9788779434205666, 0.6054129743372695, 0.9215493574646142,
                  0.9849911231105011]}


def inputs():
    """Six 32 x 32 heatmaps, smooth and not all on their masks, with their masks (boxes of several sizes)."""
    y, x = np.mgrid[0:32, 0:32] / 31
    out = []
    for i in range(6):
        mask = np.zeros((32, 32), bool)
        mask[4 + i:16 + 2 * i, 6 + i:20 + i] = True
        heat = np.sin(3 * x + i) * np.cos(2 * y - i) + 0.8 * mask * (i % 3) + 0.1 * i * x
        out.append((heat, mask))
    return out


def test_the_metrics_are_chefers_on_the_same_inputs():
    scores = SegmentationScores()
    aps = []
    for heat, mask in inputs():
        scores.add(heat, mask)
        aps.append(scores.aps[-1])
    assert aps == pytest.approx(CHEFER["aps"], abs=1e-9)
    result = scores.result()
    assert {k: result[k] for k in ("pixel_accuracy", "miou", "map")} == {k: round(CHEFER[k], 4)
                                                                        for k in ("pixel_accuracy", "miou", "map")}
    assert 0 < result["map_foreground"] < result["map"]  # ours beside it: the foreground alone is harder


def test_iou_is_pooled_over_the_dataset_not_averaged_over_images():
    small, large = np.zeros((8, 8), bool), np.zeros((8, 8), bool)
    small[0, 0] = True
    large[:, :4] = True
    perfect_small = small.astype(float)  # the one-pixel object found exactly
    half_large = np.zeros((8, 8))
    half_large[:, :2] = 1  # half of the large object found
    pooled = SegmentationScores()
    pooled.add(perfect_small, small)
    pooled.add(half_large, large)
    # foreground: (1 + 16) / (1 + 32); background: (63 + 32) / (63 + 48)
    assert pooled.result()["miou"] == round(((1 + 16) / 33 + 95 / 111) / 2, 4)
    per_image = np.mean([mask_scores(perfect_small, small)["miou"], mask_scores(half_large, large)["miou"]])
    assert pooled.result()["miou"] != round(per_image, 4)


def test_a_flat_heatmap_finds_no_foreground_and_ranks_nothing():
    mask = np.zeros((4, 4), bool)
    mask[:1] = True  # a quarter of the image: a flat map's ranking would differ from none at all
    flat = mask_scores(np.ones((4, 4)), mask)
    assert flat["pixel_accuracy"] == 0.75 and flat["miou"] == round((0 + 0.75) / 2, 4)
    # Chefer's code: 0/0 scaling, NaN set to 0 in both channels, so every one of the 2 x 16 entries ties and the AP
    # is the share of positives, 16 of 32 (scoring the background 1 - 0 would give 0.75^2 + 0.25 / 2 = 0.6875)
    assert flat["map"] == 0.5 and flat["map_foreground"] == 0.25
    assert SegmentationScores().result() == {}


def test_the_black_box_baselines_are_pytorch_grad_cams_own_methods():
    import pytest
    import torch
    from pytorch_grad_cam import GradCAMPlusPlus, LayerCAM

    from sparse_cbm.spatial.heatmaps import GradCamHeatmaps

    conv = torch.nn.Conv2d(3, 4, 3, padding=1)
    model = torch.nn.Sequential(conv, torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(4, 2)).eval()
    assert isinstance(GradCamHeatmaps(model, conv, method="gradcam++").cam, GradCAMPlusPlus)
    layer_cam = GradCamHeatmaps(model, conv, method="layercam")
    assert isinstance(layer_cam.cam, LayerCAM)
    heat = layer_cam(torch.rand(2, 3, 8, 8), [0, 1])
    assert heat.shape == (2, 8, 8) and float(heat.max()) > 0
    with pytest.raises(ValueError, match="CAM method must be one of gradcam, gradcam\\+\\+, layercam"):
        GradCamHeatmaps(model, conv, method="scorecam")
