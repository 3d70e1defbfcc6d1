"""Heatmaps scored against true object masks by SALF-CBM's Table 2 protocol, Chefer et al.'s (pixel
accuracy, mIoU, mAP: ``SegmentationScores``), for SALF-CBM's maps, Grad-CAM and the raw local
similarities P. See docs/salf-cbm.md#the-method.
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score

Threshold = Union[str, float]


def upsample(maps: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """(B, h, w) or (B, K, h, w) -> the same at ``size`` (H, W), bilinear."""
    squeeze = maps.ndim == 3
    x = maps[:, None] if squeeze else maps
    out = F.interpolate(x.float(), size=tuple(size), mode="bilinear", align_corners=False)
    return out[:, 0] if squeeze else out


def minmax(heat: np.ndarray) -> np.ndarray:
    lo, hi = float(heat.min()), float(heat.max())
    return (heat - lo) / (hi - lo) if hi > lo else np.zeros_like(heat, dtype=np.float64)


def binarise(heat: np.ndarray, threshold: Threshold) -> np.ndarray:
    if threshold == "mean":
        return heat > heat.mean()
    return minmax(heat) > float(threshold)


class SegmentationScores:
    """Chefer et al.'s ImageNet-segmentation protocol (``baselines/ViT/imagenet_seg_eval.py`` of
    Transformer-Explainability; SALF-CBM's Table 2), accumulated one heatmap (H, W) and mask (H, W)
    bool at a time:

    * the heatmap is min-max scaled, and binarised above its mean (``threshold``; a float: above that
      share of its range);
    * **pixel accuracy**: correct pixels over all pixels, pooled over the dataset;
    * **mIoU**: for foreground and for background, the intersections summed over the dataset over the
      unions summed over the dataset; then the mean of the two;
    * **mAP**: per image, the average precision of foreground and background jointly (the scaled
      heatmap scoring each pixel as foreground, one minus it as background: one ranking of 2 H W
      entries, scikit-learn's ``average_precision_score``); then the mean over images. The background,
      most of an image, dominates it: a heatmap lying wholly beside its object still scores about 0.8;
    * **map_foreground** (ours, not the paper's): the average precision of the foreground alone, then
      the mean over the images with both foreground and background.

    ``tests/unit/spatial/test_segmentation_scores.py`` holds the numbers Chefer's own code gives on
    the same inputs."""

    def __init__(self, threshold: Threshold = "mean"):
        self.threshold = threshold
        self.correct = self.pixels = 0
        self.inter, self.union = np.zeros(2, np.int64), np.zeros(2, np.int64)  # background, foreground
        self.aps: List[float] = []
        self.foreground_aps: List[float] = []

    def add(self, heat: np.ndarray, mask: np.ndarray) -> None:
        heat = np.asarray(heat, dtype=np.float64)
        flat = not heat.max() > heat.min()
        scaled = minmax(heat)
        binary = binarise(scaled, self.threshold)  # a flat map: background everywhere, as in Chefer's code
        mask = np.asarray(mask, dtype=bool)
        self.correct += int((binary == mask).sum())
        self.pixels += mask.size
        for c, fg in enumerate((False, True)):
            pred, true = binary == fg, mask == fg
            self.inter[c] += int(np.logical_and(pred, true).sum())
            self.union[c] += int(np.logical_or(pred, true).sum())
        truth = np.concatenate([~mask.ravel(), mask.ravel()])
        # Chefer's scaling of a flat map is 0/0, and his NaN clean-up zeroes both channels: no ranking at all
        background = np.zeros_like(scaled) if flat else 1 - scaled
        self.aps.append(float(np.nan_to_num(average_precision_score(truth, np.concatenate([background.ravel(),
                                                                                            scaled.ravel()])))))
        if 0 < mask.sum() < mask.size:
            self.foreground_aps.append(float(average_precision_score(mask.ravel(), scaled.ravel())))

    def result(self) -> Dict[str, float]:
        if not self.pixels:
            return {}
        iou = self.inter / np.maximum(self.union, 1)
        return {"pixel_accuracy": round(self.correct / self.pixels, 4), "miou": round(float(iou.mean()), 4),
                "map": round(float(np.mean(self.aps)), 4),
                "map_foreground": round(float(np.mean(self.foreground_aps)), 4) if self.foreground_aps else None}


def mask_scores(heat: np.ndarray, mask: np.ndarray, threshold: Threshold = "mean") -> Dict[str, float]:
    """One heatmap (H, W) against one mask (H, W) bool, by ``SegmentationScores``."""
    scores = SegmentationScores(threshold)
    scores.add(heat, mask)
    return scores.result()


def pointing_share(heat: np.ndarray, cell: tuple) -> float:
    """Rao et al.'s grid pointing game for one class: the share of the heatmap's positive mass (H, W)
    that lies inside the class's own cell (y0, y1, x0, x1)."""
    positive = np.clip(heat, 0, None)
    total = positive.sum()
    if total <= 0:
        return 0.0
    y0, y1, x0, x1 = cell
    return float(positive[y0:y1, x0:x1].sum() / total)


CAM_METHODS = {"gradcam": "GradCAM", "gradcam++": "GradCAMPlusPlus", "layercam": "LayerCAM"}  # pytorch-grad-cam's


class GradCamHeatmaps:
    """Grad-CAM (pytorch-grad-cam) of a classifier ``model`` (images -> logits) at ``layer``, or another of
    its gradient methods (``CAM_METHODS``: Grad-CAM++, LayerCAM); ``reshape_transform`` puts a ViT block's
    tokens on their grid (``FeatureBackbone.reshape_transform``)."""

    def __init__(self, model: torch.nn.Module, layer: torch.nn.Module, reshape_transform=None,
                 method: str = "gradcam"):
        import pytorch_grad_cam

        if method not in CAM_METHODS:
            raise ValueError(f"CAM method must be one of {', '.join(CAM_METHODS)}, got {method!r}")
        self.cam = getattr(pytorch_grad_cam, CAM_METHODS[method])(model=model, target_layers=[layer],
                                                                  reshape_transform=reshape_transform)

    def __call__(self, images: torch.Tensor, classes: Sequence[int]) -> np.ndarray:
        """(B, H, W) in [0, 1] (pytorch-grad-cam rescales each map to its range)."""
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        with torch.enable_grad():
            x = images.detach().clone().requires_grad_(True)  # gradients reach the layer even from frozen weights
            return self.cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in classes])


def class_heatmaps(standardised: torch.Tensor, weight: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    """(B, h, w): sum_m weight[c_i, m] * standardised[i, m] for each image i and its class c_i."""
    return torch.einsum("bm,bmhw->bhw", weight[torch.as_tensor(list(classes), dtype=torch.long)], standardised)
