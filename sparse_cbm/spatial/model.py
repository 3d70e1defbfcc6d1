"""The spatially-aware concept bottleneck (SALF-CBM): concept maps c(x) = Conv1x1(resize(F(x))) from
feature maps, pooled to c*, then the sparse final layer (``StandardizedLinear``); with mean pooling a
class's logit is the mean of its heatmap. See docs/salf-cbm.md#the-method.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from sparse_cbm.bottleneck.final_layer import StandardizedLinear
from sparse_cbm.runtime.device import model_dtype

POOLINGS = ("mean", "max", "softmax")   # softmax: the authors' release (SoftmaxPooling2D over the whole map)


class SpatialOutput(NamedTuple):
    maps: torch.Tensor  # c(x): (B, |D|, H~, W~)
    pooled: torch.Tensor  # c*: (B, |D|)
    logits: torch.Tensor  # (B, |C|)


class SpatialBottleneck(nn.Module):
    def __init__(self, channels: int, num_concepts: int, num_classes: int, grid: int, pooling: str = "mean"):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; use one of: {', '.join(POOLINGS)}")
        self.grid, self.pooling = int(grid), pooling
        self.conv = nn.Conv2d(channels, num_concepts, kernel_size=1, bias=False)
        self.fc = StandardizedLinear.empty(num_concepts, num_classes)

    @property
    def num_classes(self) -> int:
        return self.fc.weight.shape[0]

    def concept_maps(self, features: torch.Tensor, size: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        """(B, |D|, H~, W~) from feature maps (B, C, h, w); ``size`` overrides the grid (a 2 x 2 mosaic of
        images is explained on a grid twice as fine)."""
        size = size or (self.grid, self.grid)
        resized = F.interpolate(features.float(), size=size, mode="bilinear", align_corners=False)
        return self.conv(resized)

    def pool(self, maps: torch.Tensor) -> torch.Tensor:
        """c* from the maps (B, |D|, H~, W~): their mean, their max, or (``softmax``, as the authors' release
        pools: ``SoftmaxPooling2D`` with the whole map as its kernel) each location weighted by the softmax
        of the map over locations, temperature 1, on raw map values."""
        if self.pooling == "mean":
            return maps.mean(dim=(2, 3))
        if self.pooling == "max":
            return maps.amax(dim=(2, 3))
        flat = maps.flatten(2)
        return (flat.softmax(dim=-1) * flat).sum(dim=-1)

    def forward(self, features: torch.Tensor) -> SpatialOutput:
        maps = self.concept_maps(features)
        pooled = self.pool(maps)
        return SpatialOutput(maps, pooled, self.fc(pooled))

    def decide(self, maps: torch.Tensor) -> torch.Tensor:
        """Logits from (possibly edited) concept maps."""
        return self.fc(self.pool(maps))

    def standardised(self, maps: torch.Tensor) -> torch.Tensor:
        """Every concept map in units of its pooled value's spread on train: comparable across concepts."""
        return (maps - self.fc.mean[None, :, None, None]) / self.fc.std[None, :, None, None]


class SpatialClassifier(nn.Module):
    """Images -> logits through the feature backbone and the spatial bottleneck (what Grad-CAM explains).
    The maps move to the bottleneck's device (a backbone on a GPU, the trained bottleneck loaded on the
    CPU); the move keeps the gradient Grad-CAM reads."""

    def __init__(self, features: nn.Module, bottleneck: SpatialBottleneck):
        super().__init__()
        self.features, self.bottleneck = features, bottleneck

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        maps = self.features(images)
        return self.bottleneck(maps.to(next(self.bottleneck.parameters()).device)).logits


class EmbeddingHead(nn.Module):
    """Images -> logits of a linear classifier on the backbone's unit-normalised image embedding: the
    black box whose Grad-CAM SALF-CBM's heatmaps are set beside (a linear probe on CLIP)."""

    def __init__(self, encode_image, weight: torch.Tensor, bias: torch.Tensor, modules: nn.Module):
        super().__init__()
        self.modules_ = modules
        self._encode = encode_image
        self.register_buffer("weight", torch.as_tensor(weight, dtype=torch.float32))
        self.register_buffer("bias", torch.as_tensor(bias, dtype=torch.float32))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        device = next(self.modules_.parameters()).device
        embedding = F.normalize(self._encode(images.to(device, model_dtype(self.modules_))).float(), dim=1)
        return embedding.to(self.weight.device) @ self.weight.T + self.bias  # the probe stays where it was fitted
