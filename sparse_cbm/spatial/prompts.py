"""Visual prompts: a ring drawn around a location of an image, on the model's own input tensor.

SALF-CBM's local image-concept similarities come from copies of an image with a circle
around each location of a uniform grid of H~ x W~ points (strides floor(H / (H~ - 1)) and
floor(W / (W~ - 1))): CLIP, shown the copy, attends to the circled region (Shtedritski et
al., "What does CLIP know about a red circle?", ICCV 2023). The ring is drawn here on the
preprocessed tensor, at the input resolution the model sees (the paper's 224 px), with its
colour normalised the way the preprocessing normalises pixels; anti-aliased by 4x4
supersampling of each pixel's coverage. Drawing a batch of copies is one blend per copy,
cheap beside the forward pass.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
import torch

SUPERSAMPLE = 4


def grid_centres(height: int, width: int, rows: int, cols: int) -> np.ndarray:
    """(rows * cols, 2) integer (y, x) pixel centres, row-major: (h * floor(H / (rows - 1)),
    w * floor(W / (cols - 1)))."""
    if rows < 2 or cols < 2:
        raise ValueError(f"the grid needs at least 2 x 2 points, got {rows} x {cols}")
    sy, sx = height // (rows - 1), width // (cols - 1)
    return np.array([(h * sy, w * sx) for h in range(rows) for w in range(cols)], dtype=np.int64)


def ring_masks(height: int, width: int, centres: np.ndarray, radius: float, line_width: float) -> torch.Tensor:
    """(K, H, W) float32 coverage in [0, 1] of a ring of ``radius`` and ``line_width`` pixels around
    each centre (y, x)."""
    offsets = (torch.arange(SUPERSAMPLE, dtype=torch.float32) + 0.5) / SUPERSAMPLE - 0.5
    ys = (torch.arange(height, dtype=torch.float32)[:, None] + offsets[None, :]).reshape(-1)  # (H * S,)
    xs = (torch.arange(width, dtype=torch.float32)[:, None] + offsets[None, :]).reshape(-1)
    out = torch.empty(len(centres), height, width)
    for k, (cy, cx) in enumerate(np.asarray(centres, dtype=np.float32)):
        distance = torch.sqrt((ys[:, None] - cy) ** 2 + (xs[None, :] - cx) ** 2)
        inside = ((distance - radius).abs() <= line_width / 2).float()
        out[k] = inside.reshape(height, SUPERSAMPLE, width, SUPERSAMPLE).mean(dim=(1, 3))
    return out


def normalised_colour(rgb: Sequence[int], mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(3, 1, 1): an RGB colour (0-255) in the preprocessed tensor's units."""
    rgb = torch.tensor([float(c) / 255 for c in rgb])
    return ((rgb - torch.tensor(mean)) / torch.tensor(std)).reshape(3, 1, 1)


class Rings:
    """K rings ready to draw: each copy is ``paint + image * keep``, one fused pass over the batch."""

    def __init__(self, masks: torch.Tensor, colour: torch.Tensor):
        self.keep = (1 - masks)[:, None]  # (K, 1, H, W)
        self.paint = colour[None] * masks[:, None]  # (K, 3, H, W)

    def to(self, device) -> "Rings":
        self.keep, self.paint = self.keep.to(device), self.paint.to(device)
        return self

    def __len__(self) -> int:
        return len(self.keep)

    def draw(self, images: torch.Tensor) -> torch.Tensor:
        """(B * K, 3, H, W): every image (B, 3, H, W) with each of the K rings drawn, image-major."""
        copies = torch.addcmul(self.paint.to(images.dtype)[None], images[:, None], self.keep.to(images.dtype)[None])
        return copies.reshape(-1, *images.shape[1:])



def preprocess_normalisation(preprocess) -> Tuple[Sequence[float], Sequence[float]]:
    """The mean and std of the ``Normalize`` step of a torchvision preprocessing pipeline."""
    for t in getattr(preprocess, "transforms", []):
        if type(t).__name__ == "Normalize":
            return list(t.mean), list(t.std)
    raise ValueError(f"no Normalize step in the preprocessing {preprocess!r}")


class PromptedCopies:
    """A preprocessed batch (B, 3, H, W) -> the embeddings (B, K, d) of its K = grid^2 ringed copies,
    through ``backbone`` (a ``clip.backbone.Backbone``), ``chunk`` copies a forward pass at most.

    The rings are drawn on the backbone's device, so on a GPU drawing costs no transfer."""

    def __init__(self, backbone, grid: int, radius: float, line_width: float, colour: Sequence[int],
                 chunk: int = 1024):
        self.backbone, self.grid, self.chunk = backbone, int(grid), int(chunk)
        _, height, width = backbone.blank_input.shape
        self.centres = grid_centres(height, width, self.grid, self.grid)
        masks = ring_masks(height, width, self.centres, radius, line_width)
        self.rings = Rings(masks, normalised_colour(colour, *preprocess_normalisation(backbone.preprocess)))
        self.rings.to(backbone.device)

    @property
    def per_image(self) -> int:
        return self.grid * self.grid

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        copies = self.rings.draw(images.to(self.backbone.device, dtype=self.backbone.dtype))  # drawn at the model's precision
        out = torch.cat([self.backbone.encode_images(copies[lo:lo + self.chunk])
                         for lo in range(0, len(copies), self.chunk)])
        return out.reshape(len(images), self.per_image, -1)
