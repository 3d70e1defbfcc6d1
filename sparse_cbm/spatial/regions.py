"""Explain Anything and local editing: a region of an image (a box, a point or a mask), its concepts
ranked by the standardised concept maps inside it, and an edit there in units of each concept's
spread on train. See docs/salf-cbm.md#the-method.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from sparse_cbm.spatial.heatmaps import upsample
from sparse_cbm.spatial.model import SpatialBottleneck


def box_region(size: Tuple[int, int], box: Sequence[float]) -> np.ndarray:
    """(H, W) float32: 1 inside the box (x0, y0, x1, y1) in pixels, x1 and y1 exclusive."""
    height, width = size
    x0, y0, x1, y1 = box
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise ValueError(f"the box {tuple(box)} is not inside the {width} x {height} image "
                         f"(give X0,Y0,X1,Y1 with 0 <= X0 < X1 <= {width} and 0 <= Y0 < Y1 <= {height})")
    out = np.zeros((height, width), dtype=np.float32)
    out[int(y0):int(np.ceil(y1)), int(x0):int(np.ceil(x1))] = 1
    return out


def point_region(size: Tuple[int, int], point: Sequence[float], radius: float) -> np.ndarray:
    """(H, W) float32: a disc of ``radius`` pixels around the point (x, y)."""
    height, width = size
    x, y = point
    if not (0 <= x < width and 0 <= y < height):
        raise ValueError(f"the point {tuple(point)} is outside the {width} x {height} image")
    yy, xx = np.mgrid[0:height, 0:width]
    return (((yy + 0.5 - y) ** 2 + (xx + 0.5 - x) ** 2) <= radius ** 2).astype(np.float32)


def mask_region(size: Tuple[int, int], path: str | Path) -> np.ndarray:
    """(H, W) float32 in [0, 1] from a mask image (any mode; white is in), resized to the image."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no mask image at {path}: give a PNG whose white pixels are the region")
    mask = Image.open(path).convert("L").resize((size[1], size[0]), Image.BILINEAR)
    out = np.asarray(mask, dtype=np.float32) / 255
    if out.sum() == 0:
        raise ValueError(f"the mask {path} is empty (all black): its white pixels are the region")
    return out


def bounding_box(mask: np.ndarray) -> Tuple[int, int, int, int]:
    """(x0, y0, x1, y1), ends exclusive, of a non-empty boolean mask."""
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def region_scores(standardised: torch.Tensor, region: np.ndarray) -> torch.Tensor:
    """(B, |D|): the region-weighted mean of every standardised concept map (B, |D|, h, w), the maps
    upsampled to the region's size (H, W)."""
    r = torch.as_tensor(region, dtype=torch.float32)
    up = upsample(standardised, r.shape)
    return torch.einsum("bmhw,hw->bm", up, r) / r.sum().clamp_min(1e-8)


def grid_region(region: np.ndarray, grid: Tuple[int, int]) -> torch.Tensor:
    """(h, w): the region's share of each cell of the concept maps' grid."""
    r = torch.as_tensor(region, dtype=torch.float32)[None, None]
    return F.adaptive_avg_pool2d(r, grid)[0, 0]


EDIT_UNITS = ("raw", "sd")  # an edit's beta: raw map units (the paper's), or standard deviations on train


def edit_maps(maps: torch.Tensor, std: torch.Tensor, region_grid: torch.Tensor, edits: Dict[int, float]) -> torch.Tensor:
    """A copy of the maps (B, |D|, h, w) with concept m raised by beta * std_m in the region, for each
    (m, beta) of ``edits``."""
    out = maps.clone()
    for m, beta in edits.items():
        out[:, m] += float(beta) * float(std[m]) * region_grid
    return out


@dataclass
class RegionExplanation:
    prediction: int
    probabilities: List[float]
    concepts: List[Tuple[int, float]]  # (concept index, region score), best first
    edited_prediction: Optional[int] = None
    edited_probabilities: Optional[List[float]] = None


@torch.no_grad()
def explain_region(model: SpatialBottleneck, features: torch.Tensor, region: np.ndarray, k: int = 3,
                   edits: Optional[Dict[int, float]] = None) -> RegionExplanation:
    """One image's features (1, C, h, w): its prediction, the region's k top concepts and, with
    ``edits``, the prediction after the local edit."""
    maps = model.concept_maps(features)
    probs = model.decide(maps).softmax(1)[0]
    scores = region_scores(model.standardised(maps), region)[0]
    top = scores.topk(min(k, len(scores)))
    out = RegionExplanation(int(probs.argmax()), probs.tolist(),
                            [(int(i), float(v)) for i, v in zip(top.indices, top.values)])
    if edits:
        edited = edit_maps(maps, model.fc.std, grid_region(region, maps.shape[-2:]), edits)
        eprobs = model.decide(edited).softmax(1)[0]
        out.edited_prediction, out.edited_probabilities = int(eprobs.argmax()), eprobs.tolist()
    return out
