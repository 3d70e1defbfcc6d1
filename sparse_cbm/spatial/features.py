"""The backbone whose feature maps SALF-CBM explains: the CLIP image tower, or a torchvision model.

``FeatureBackbone`` maps a preprocessed batch of images to feature maps (B, C, h, w) without
pooling: for a CNN the output of a named stage (``layer``: the CLIP ResNet's ``layer3`` is the
default here, the last stage with more than 2 x 2 cells at 64 px; the paper takes the last
stage of a ResNet-50 at 224 px), for a ViT its patch tokens reshaped to their grid.
``target_layer`` is the module that produces them (what Grad-CAM hooks).

Kinds (``spatial.features.backbone``): ``clip`` (the pipeline's own CLIP, the one that embeds
the images) or a torchvision model name (``resnet50``, ``vit_b_16``: the paper explains both),
whose weights (``spatial.features.weights``) are a torchvision weights name, which needs network
access the first time, or the path of a local checkpoint.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Optional

import torch
from PIL import Image
from torch import nn

from sparse_cbm.errors import BackboneError
from sparse_cbm.runtime.device import model_dtype


class FeatureBackbone(nn.Module):
    def __init__(self, trunk: Callable[[torch.Tensor], torch.Tensor], target_layer: nn.Module,
                 preprocess: Callable, identity: dict, modules: nn.Module, device: torch.device):
        super().__init__()
        self.modules_ = modules  # registered, so .eval() and .to() reach them
        self._trunk, self.target_layer, self.preprocess, self.identity = trunk, target_layer, preprocess, identity
        self.device = torch.device(device)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self._trunk(images.to(model_dtype(self.modules_)))

    @torch.inference_mode()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Feature maps (B, C, h, w), float32 on the CPU, of a preprocessed batch."""
        return self(images.to(self.device)).float().cpu()

    def blank_input(self) -> torch.Tensor:
        """A zero tensor of the shape ``preprocess`` gives one image."""
        return torch.zeros_like(self.preprocess(Image.new("RGB", (8, 8))))


def _clip_trunk(visual: nn.Module, layer: str) -> Callable:
    if type(visual).__name__ == "ModifiedResNet":
        names = ["layer1", "layer2", "layer3", "layer4"]
        if layer not in names:
            raise BackboneError(f"spatial.features.layer {layer!r}: the CLIP ResNet's stages are {', '.join(names)}.")
        stages = names[:names.index(layer) + 1]

        def trunk(x):
            x = visual.stem(x)
            for name in stages:
                x = getattr(visual, name)(x)
            return x
        return trunk, getattr(visual, layer)
    if hasattr(visual, "transformer"):  # open_clip VisionTransformer: patch tokens on their grid
        def trunk(x):
            visual.output_tokens = True
            try:
                _, tokens = visual(x)
            finally:
                visual.output_tokens = False
            side = int(round(math.sqrt(tokens.shape[1])))
            return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], side, side)
        return trunk, visual.transformer.resblocks[-1]
    raise BackboneError(f"spatial.features.backbone clip: cannot take feature maps from a {type(visual).__name__}.")


def clip_features(backbone, layer: str) -> FeatureBackbone:
    """The feature maps of the pipeline's CLIP image tower (``backbone``: a ``clip.backbone.Backbone``)."""
    visual = backbone.model.visual
    trunk, target = _clip_trunk(visual, layer)
    identity = {"kind": "clip", "layer": layer, **backbone.identity}
    return FeatureBackbone(trunk, target, backbone.preprocess, identity, visual, backbone.device).eval()


def torchvision_features(name: str, weights: Optional[str], layer: str, device: str = "cpu") -> FeatureBackbone:
    """A torchvision model's feature maps at node ``layer`` (``torchvision.models.feature_extraction``)."""
    import torchvision
    from torchvision.models.feature_extraction import create_feature_extractor

    try:
        builder = torchvision.models.get_model_builder(name)
    except ValueError:
        raise BackboneError(f"spatial.features.backbone {name!r} is neither 'clip' nor a torchvision model "
                            f"(torchvision.models.list_models() lists them).") from None
    from torchvision.models import get_model_weights

    enum = get_model_weights(name)
    preprocess = enum.DEFAULT.transforms()  # the weights' own preprocessing (ImageNet's for a local file)
    if weights and Path(weights).is_file():
        model = builder(weights=None)
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    else:
        try:
            chosen = enum[weights] if weights else None
            model = builder(weights=chosen)
        except Exception as exc:  # a bad name, or a download that fails
            raise BackboneError(f"spatial.features.weights {weights!r} for {name}: {str(exc).splitlines()[0][:200]}. "
                                f"Weights: {', '.join(w.name for w in enum)}; without network access, download them "
                                f"elsewhere and give the checkpoint's path.") from None
        if chosen is not None:
            preprocess = chosen.transforms()
    try:
        extractor = create_feature_extractor(model, return_nodes={layer: "maps"})
    except Exception as exc:
        raise BackboneError(f"spatial.features.layer {layer!r} is not a node of {name} ({exc}).") from None
    target = dict(model.named_modules()).get(layer, model)

    def trunk(x):
        maps = extractor(x)["maps"]
        if maps.ndim == 3:  # a ViT's tokens (B, 1 + N, C): drop the class token, put the patches on their grid
            tokens = maps[:, 1:]
            side = int(round(math.sqrt(tokens.shape[1])))
            maps = tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], side, side)
        return maps
    identity = {"kind": "torchvision", "model": name, "weights": str(weights), "layer": layer}
    return FeatureBackbone(trunk, target, preprocess, identity, extractor.to(device), device).eval()


def feature_backbone(kind: str, weights: Optional[str], layer: str, clip_backbone=None) -> FeatureBackbone:
    """``spatial.features``: ``clip`` (``clip_backbone``, the pipeline's CLIP) or a torchvision model, on the
    CLIP backbone's device."""
    if kind == "clip":
        if clip_backbone is None:
            raise BackboneError("spatial.features.backbone clip needs the pipeline's CLIP backbone.")
        return clip_features(clip_backbone, layer)
    device = clip_backbone.device if clip_backbone is not None else "cpu"
    return torchvision_features(kind, weights, layer, device)
