"""A small trained model built in seconds, saved with ``save_pretrained``: the tiny CLIP (its random weights
written as a local checkpoint), a CBM on six concepts with a sparse final layer, and a SALF-CBM whose
decision between its first two classes rests on concept 0 alone, so that an edit of it must flip them."""

from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np
import torch
from PIL import Image, ImageDraw

CONCEPTS = ["red", "green", "blue", "circle", "square", "striped"]
CLASSES = ["apple", "leaf", "sky"]


class ListGallery:
    def __init__(self, images: List[Image.Image], labels: List[str]):
        self.images, self.labels_, self.name = images, labels, "test images"

    def __len__(self) -> int:
        return len(self.images)

    def image(self, i: int) -> Image.Image:
        return self.images[i]

    def label(self, i: int) -> str:
        return self.labels_[i]


def picture(seed: int, size: int = 64) -> Image.Image:
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 80, (size, size, 3), dtype=np.uint8))
    draw = ImageDraw.Draw(img)
    colour = [(220, 30, 30), (30, 200, 30), (30, 30, 220)][seed % 3]
    x, y = rng.integers(4, size // 2, 2)
    (draw.ellipse if seed % 2 else draw.rectangle)((int(x), int(y), int(x) + size // 3, int(y) + size // 3), fill=colour)
    return img


def build_tiny_model(tmp: Path, gallery: int = 12) -> Path:
    from sparse_cbm.bottleneck.final_layer import StandardizedLinear
    from sparse_cbm.bottleneck.model import ConceptBottleneck
    from sparse_cbm.clip.backbone import TINY_MODEL, load_backbone
    from sparse_cbm.classifiers.batched import unit_rows
    from sparse_cbm.spatial.features import feature_backbone
    from sparse_cbm.spatial.model import SpatialBottleneck
    from sparse_cbm.storage.text_cache import concept_list_sha256
    from sparse_cbm.trained import SparseCBM

    tmp.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    checkpoint = tmp / "tiny-clip.pt"
    torch.save(load_backbone(TINY_MODEL, "none").model.state_dict(), checkpoint)
    backbone = load_backbone(TINY_MODEL, str(checkpoint))
    g = torch.Generator().manual_seed(1)
    images = [picture(i) for i in range(gallery)]
    labels = [CLASSES[i % 3] for i in range(gallery)]
    bottleneck = ConceptBottleneck(torch.randn(len(CONCEPTS), 64, generator=g), len(CLASSES), backbone.logit_scale,
                                   final_layer="sparse")
    bottleneck.init_identity()
    x = torch.stack([backbone.preprocess(im) for im in images])
    S = bottleneck(unit_rows(backbone.encode_images(x).numpy().astype(np.float16))).activations
    weight = torch.zeros(len(CLASSES), len(CONCEPTS))
    weight[0, 0], weight[1, 1], weight[2, 2], weight[0, 3] = 2.0, 2.0, 2.0, 1.0
    bottleneck.fc = StandardizedLinear(weight, torch.zeros(len(CLASSES)), S.mean(0), S.std(0).clamp_min(1e-6))
    config = {"classes": CLASSES, "concept_list_sha256": concept_list_sha256(CONCEPTS), "backbone": backbone.identity,
              "logit_scale": backbone.logit_scale, "loss": "l1", "train": {"final_layer": "sparse", "form": "faithful"}}
    features = feature_backbone("clip", None, "auto", backbone)
    maps = features.encode(x).half().float()
    spatial = SpatialBottleneck(maps.shape[1], len(CONCEPTS), len(CLASSES), grid=4)
    torch.nn.init.normal_(spatial.conv.weight, generator=g)
    with torch.no_grad():
        pooled = spatial.pool(spatial.concept_maps(maps))
    w = torch.zeros(len(CLASSES), len(CONCEPTS))
    w[0, 0], w[1, 0] = 4.0, -4.0  # apple when concept 0 is high, leaf when low; sky never wins
    spatial.fc = StandardizedLinear(w, torch.tensor([0.0, 0.0, -10.0]), pooled.mean(0), pooled.std(0).clamp_min(1e-6))
    spatial_config = {"classes": CLASSES, "concepts": CONCEPTS, "concept_list_sha256": concept_list_sha256(CONCEPTS),
                      "features": features.identity, "grid": 4, "pooling": "mean", "feature_shape": list(maps.shape[1:])}
    source = {"backbone": {"model": TINY_MODEL, "pretrained": str(checkpoint), "precision": "auto", "device": "cpu",
                           "seed": 0},
              "spatial_features": {"backbone": "clip", "weights": None, "layer": "auto"}}
    model = SparseCBM(backbone, bottleneck, config, CONCEPTS, source, spatial.eval(), spatial_config, features,
                      ListGallery(images, labels))
    return model.save_pretrained(tmp / "model", gallery=gallery)
