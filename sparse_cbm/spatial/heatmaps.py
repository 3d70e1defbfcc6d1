"""Heatmaps scored against true object masks as in SALF-CBM's Table 2 (pixel accuracy, mIoU, mAP),
for SALF-CBM's maps, Grad-CAM and the raw local similarities P. See docs/salf-cbm.md#the-method.
"""

from __future__ import annotations

from typing import Dict, Iterable, Sequence, Union

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


def mask_scores(heat: np.ndarray, mask: np.ndarray, threshold: Threshold = "mean") -> Dict[str, float]:
    """One heatmap (H, W) against one mask (H, W) bool."""
    binary = binarise(heat, threshold)
    ious = []
    for fg in (True, False):
        pred, true = binary == fg, mask == fg
        union = np.logical_or(pred, true).sum()
        ious.append(np.logical_and(pred, true).sum() / union if union else 1.0)
    ap = average_precision_score(mask.ravel(), heat.ravel()) if 0 < mask.sum() < mask.size else float("nan")
    return {"pixel_accuracy": float((binary == mask).mean()), "miou": float(np.mean(ious)), "map": float(ap)}


def mean_scores(rows: Iterable[Dict[str, float]]) -> Dict[str, float]:
    rows = list(rows)
    return {k: round(float(np.nanmean([r[k] for r in rows])), 4) for k in rows[0]} if rows else {}


def pointing_share(heat: np.ndarray, cell: tuple) -> float:
    """Rao et al.'s grid pointing game for one class: the share of the heatmap's positive mass (H, W)
    that lies inside the class's own cell (y0, y1, x0, x1)."""
    positive = np.clip(heat, 0, None)
    total = positive.sum()
    if total <= 0:
        return 0.0
    y0, y1, x0, x1 = cell
    return float(positive[y0:y1, x0:x1].sum() / total)


class GradCamHeatmaps:
    """Grad-CAM (pytorch-grad-cam) of a classifier ``model`` (images -> logits) at ``layer``;
    ``reshape_transform`` puts a ViT block's tokens on their grid (``FeatureBackbone.reshape_transform``)."""

    def __init__(self, model: torch.nn.Module, layer: torch.nn.Module, reshape_transform=None):
        from pytorch_grad_cam import GradCAM

        self.cam = GradCAM(model=model, target_layers=[layer], reshape_transform=reshape_transform)

    def __call__(self, images: torch.Tensor, classes: Sequence[int]) -> np.ndarray:
        """(B, H, W) in [0, 1] (pytorch-grad-cam rescales each map to its range)."""
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        with torch.enable_grad():
            x = images.detach().clone().requires_grad_(True)  # gradients reach the layer even from frozen weights
            return self.cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in classes])


def class_heatmaps(standardised: torch.Tensor, weight: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    """(B, h, w): sum_m weight[c_i, m] * standardised[i, m] for each image i and its class c_i."""
    return torch.einsum("bm,bmhw->bhw", weight[torch.as_tensor(list(classes), dtype=torch.long)], standardised)
