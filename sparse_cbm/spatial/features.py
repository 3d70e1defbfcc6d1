"""The backbone whose feature maps SALF-CBM explains: the CLIP image tower, or a torchvision model.

``FeatureBackbone`` maps a preprocessed batch of images to feature maps (B, C, h, w) without
pooling: for a CNN the output of a named stage (``layer``: ``layer1``-``layer4`` of a CLIP ResNet,
``auto``: ``layer3``; the paper takes the last stage of a ResNet-50 at 224 px), for a CLIP ViT
(``layer: tokens`` or ``auto``) its last block's patch tokens reshaped to their grid. ``dense``
(a CLIP ResNet): the stage keeps its input's grid, twice its own (``DenseStage``).
``target_layer`` is the module that produces them (what Grad-CAM hooks).

Kinds (``spatial.features.backbone``): ``clip`` (the pipeline's own CLIP, the one that embeds
the images) or a torchvision model name (``resnet50``, ``vit_b_16``: the paper explains both),
whose weights (``spatial.features.weights``) are a torchvision weights name, which needs network
access the first time, or the path of a local checkpoint.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, List, Optional

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from sparse_cbm.errors import BackboneError
from sparse_cbm.runtime.device import model_dtype


def tokens_to_maps(tokens: torch.Tensor) -> torch.Tensor:
    """A ViT block's tokens (B, [1 +] N, C), N a square, as maps (B, C, sqrt N, sqrt N): the class
    token, when there is one, dropped."""
    count = tokens.shape[1]
    side = int(round(math.sqrt(count)))
    if side * side != count:
        tokens, side = tokens[:, 1:], int(round(math.sqrt(count - 1)))
        if side * side != count - 1:
            raise BackboneError(f"cannot put {count} tokens on a square grid, with or without a class token.")
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], side, side)


class FeatureBackbone(nn.Module):
    """``target_layer`` is what Grad-CAM hooks; ``reshape_transform`` turns its output into maps when
    it is a ViT block's tokens (pytorch-grad-cam's argument of that name), None for a CNN's maps."""

    def __init__(self, trunk: Callable[[torch.Tensor], torch.Tensor], target_layer: nn.Module,
                 preprocess: Callable, identity: dict, modules: nn.Module, device: torch.device,
                 reshape_transform: Optional[Callable[[torch.Tensor], torch.Tensor]] = None):
        super().__init__()
        self.modules_ = modules  # registered, so .eval() and .to() reach them
        self._trunk, self.target_layer, self.preprocess, self.identity = trunk, target_layer, preprocess, identity
        self.device = torch.device(device)
        self.reshape_transform = reshape_transform

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self._trunk(images.to(self.device, model_dtype(self.modules_)))

    @property
    def network_layer(self) -> nn.Module:
        """The module of the backbone's own forward that ``target_layer`` stands for: what Grad-CAM of
        a black box running that forward (the CLIP's pooled embedding) hooks. A ``DenseStage``
        stands for its stage, which the black box runs at its own grid."""
        return self.target_layer.stage if isinstance(self.target_layer, DenseStage) else self.target_layer

    @torch.inference_mode()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Feature maps (B, C, h, w), float32 on the CPU, of a preprocessed batch."""
        return self(images.to(self.device)).float().cpu()

    def blank_input(self) -> torch.Tensor:
        """A zero tensor of the shape ``preprocess`` gives one image."""
        return torch.zeros_like(self.preprocess(Image.new("RGB", (8, 8))))


VIT_TOKENS = "tokens"  # spatial.features.layer of a CLIP ViT: the last block's patch tokens on their grid
AUTO_LAYER = "auto"  # a CLIP ViT's tokens; a CLIP ResNet's layer3 (the last stage with more than 2 x 2 cells at 64 px)


def _resolved_layer(visual: nn.Module, layer: str) -> str:
    if layer != AUTO_LAYER:
        return layer
    return "layer3" if type(visual).__name__ == "ModifiedResNet" else VIT_TOKENS


class DenseStage(nn.Module):
    """A stage of open_clip's ``ModifiedResNet`` that keeps its input's grid, with the stage's own
    weights and without changing its modules (so calls from several threads, and the CLIP's pooled
    embedding, are unaffected). The blocks downsample with 2 x 2 average pools (after the 3 x 3
    convolution, and before the shortcut's 1 x 1), not with strided convolutions; here these pools
    are skipped, and the 3 x 3 convolutions of the blocks after the first are dilated by the stride,
    so that their receptive field is the one they were trained with (torchvision's
    ``replace_stride_with_dilation``, DeepLab's output stride). In a one-block stage everything after
    the pools is per-cell and linear up to the last ReLU, so the 2 x 2 means of these maps before
    that ReLU are exactly the stage's own maps before it (tested). Grad-CAM hooks this module."""

    def __init__(self, stage: nn.Sequential):
        super().__init__()
        self.stage = stage
        self.stride = int(getattr(stage[0], "stride", 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.stage):  # open_clip's Bottleneck.forward, its pools skipped
            dilation = 1 if i == 0 else self.stride
            out = block.act1(block.bn1(block.conv1(x)))
            conv = block.conv2
            out = F.conv2d(out, conv.weight, conv.bias, 1, dilation * conv.padding[0], dilation)
            out = block.bn3(block.conv3(block.act2(block.bn2(out))))
            identity = x
            if block.downsample is not None:
                for name, module in block.downsample.named_children():
                    if name != "-1":  # the shortcut's average pool
                        identity = module(identity)
            x = block.act3(out + identity)
        return x


DENSE_AUTO = "auto"  # spatial.features.dense: a CLIP ResNet's stage whose own grid is coarser than spatial.grid


def _resnet_stages(visual: nn.Module, layer: str) -> List[str]:
    names = ["layer1", "layer2", "layer3", "layer4"]
    if layer not in names:
        raise BackboneError(f"spatial.features.layer {layer!r}: the CLIP ResNet's stages are {', '.join(names)}.")
    return names[:names.index(layer) + 1]


@torch.no_grad()
def _resolved_dense(visual: nn.Module, layer: str, dense, grid: int, blank: torch.Tensor) -> bool:
    """``dense`` as a bool: ``auto`` is true for a CLIP ResNet's downsampling stage whose own maps are
    coarser than ``grid`` (the shapes CLIP's ``layer3``, 4 x 4 at 64 px), false otherwise (a ViT's
    tokens; ResNet-50's stages at 224 px, 7 x 7 and finer)."""
    resnet = type(visual).__name__ == "ModifiedResNet"
    if dense is True and not resnet:
        raise BackboneError(f"spatial.features.dense: only a CLIP ResNet's stage can keep its input's grid, not a "
                            f"{type(visual).__name__}'s; set spatial.features.dense: {DENSE_AUTO} or false.")
    if not resnet or dense is False:
        return False
    stages = _resnet_stages(visual, layer)
    if int(getattr(getattr(visual, stages[-1])[0], "stride", 1)) == 1:
        return False  # a stage that does not downsample is already on its input's grid
    if dense is True:
        return True
    param = next(visual.parameters())
    x = visual.stem(blank[None].to(param.device, param.dtype))
    for name in stages:
        x = getattr(visual, name)(x)
    return int(x.shape[-1]) < int(grid)


def _clip_trunk(visual: nn.Module, layer: str, dense: bool = False) -> Callable:
    if type(visual).__name__ == "ModifiedResNet":
        stages = _resnet_stages(visual, layer)
        explained = DenseStage(getattr(visual, layer)) if dense else getattr(visual, layer)

        def trunk(x):
            x = visual.stem(x)
            for name in stages[:-1]:
                x = getattr(visual, name)(x)
            return explained(x)
        return trunk, explained
    if hasattr(visual, "transformer"):  # open_clip VisionTransformer: patch tokens on their grid
        if layer != VIT_TOKENS:
            raise BackboneError(f"spatial.features.layer {layer!r}: a CLIP ViT's feature maps are its last block's "
                                f"patch tokens; set spatial.features.layer: {VIT_TOKENS}.")

        def trunk(x):
            visual.output_tokens = True
            try:
                _, tokens = visual(x)
            finally:
                visual.output_tokens = False
            return tokens_to_maps(tokens)
        # Grad-CAM hooks the last block's first norm, as pytorch-grad-cam does for a ViT: the block's output
        # patch tokens reach a class-token head by no path, so their gradient is zero
        return trunk, visual.transformer.resblocks[-1].ln_1
    raise BackboneError(f"spatial.features.backbone clip: cannot take feature maps from a {type(visual).__name__}.")


def clip_features(backbone, layer: str, dense=DENSE_AUTO, grid: int = 7) -> FeatureBackbone:
    """The feature maps of the pipeline's CLIP image tower (``backbone``: a ``clip.backbone.Backbone``);
    ``dense``: true, false or ``auto`` (``_resolved_dense``, against the concept maps' ``grid``)."""
    visual = backbone.model.visual
    layer = _resolved_layer(visual, layer)  # the identity names what is explained, however it was asked for
    dense = _resolved_dense(visual, layer, dense, grid, backbone.blank_input)
    trunk, target = _clip_trunk(visual, layer, dense)
    reshape = None
    if hasattr(visual, "transformer"):  # its blocks' outputs are (B, 1 + N, C) with batch_first, else (1 + N, B, C)
        reshape = tokens_to_maps if getattr(visual.transformer, "batch_first", True) \
            else (lambda t: tokens_to_maps(t.transpose(0, 1)))
    identity = {"kind": "clip", "layer": layer, **({"dense": True} if dense else {}), **backbone.identity}
    return FeatureBackbone(trunk, target, backbone.preprocess, identity, visual, backbone.device, reshape).eval()


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
        return tokens_to_maps(maps) if maps.ndim == 3 else maps  # a ViT's tokens (B, 1 + N, C)
    identity = {"kind": "torchvision", "model": name, "weights": str(weights), "layer": layer}
    if weights and Path(weights).is_file():  # a local file is its name and content, wherever it lies
        from sparse_cbm.storage.manifest import file_sha256

        identity.update(weights=f"file:{Path(weights).name}", weights_sha256=file_sha256(weights))
    return FeatureBackbone(trunk, target, preprocess, identity, extractor.to(device), device,
                           lambda t: tokens_to_maps(t) if t.ndim == 3 else t).eval()


def feature_backbone(kind: str, weights: Optional[str], layer: str, clip_backbone=None,
                     dense=False, grid: int = 7) -> FeatureBackbone:
    """``spatial.features``: ``clip`` (``clip_backbone``, the pipeline's CLIP) or a torchvision model, on the
    CLIP backbone's device; ``dense`` (true, false, ``auto``) and ``grid``: ``clip_features``."""
    if kind == "clip":
        if clip_backbone is None:
            raise BackboneError("spatial.features.backbone clip needs the pipeline's CLIP backbone.")
        return clip_features(clip_backbone, layer, dense, grid)
    if dense is True:
        raise BackboneError(f"spatial.features.dense: only a CLIP ResNet's stage can keep its input's grid, not "
                            f"torchvision's {kind}; set spatial.features.dense: auto or false.")
    device = clip_backbone.device if clip_backbone is not None else "cpu"
    return torchvision_features(kind, weights, layer, device)
