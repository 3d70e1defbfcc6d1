"""The heads Grad-CAM explains, with their parts on different devices (a backbone on a GPU, the
trained bottleneck or probe where it was loaded): the tensors follow the parts. PyTorch's ``meta``
device stands in for the second device, so this runs on a CPU-only machine."""

import torch
from torch import nn

from sparse_cbm.bottleneck.final_layer import StandardizedLinear
from sparse_cbm.spatial.features import FeatureBackbone
from sparse_cbm.spatial.model import EmbeddingHead, SpatialBottleneck, SpatialClassifier


def features(device="cpu") -> FeatureBackbone:
    conv = nn.Conv2d(3, 4, 3, padding=1).to(device)
    return FeatureBackbone(conv, conv, None, {}, conv, torch.device(device)).eval()


def test_the_spatial_classifier_moves_the_maps_to_its_bottleneck():
    bottleneck = SpatialBottleneck(4, 3, 2, grid=4)
    bottleneck.fc = StandardizedLinear(torch.ones(2, 3), torch.zeros(2), torch.zeros(3), torch.ones(3))
    logits = SpatialClassifier(features(), bottleneck.to("meta").eval())(torch.rand(2, 3, 8, 8))
    assert logits.shape == (2, 2) and logits.device.type == "meta"


def test_the_features_take_their_input_to_their_own_device():
    maps = features("meta")(torch.rand(1, 3, 8, 8))  # a CPU batch in, computed where the weights are
    assert maps.device.type == "meta" and maps.shape == (1, 4, 8, 8)


def test_the_black_box_head_scores_on_its_probes_device():
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5))
    head = EmbeddingHead(encoder, torch.ones(2, 5), torch.zeros(2), encoder)
    head.weight, head.bias = head.weight.to("meta"), head.bias.to("meta")  # the probe elsewhere than the encoder
    assert head(torch.rand(3, 3, 4, 4)).device.type == "meta"
