"""SALF-CBM's library: visual prompts, local similarities, the cubic-cosine training, heatmap
metrics, regions and local edits."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from sparse_cbm.bottleneck.final_layer import StandardizedLinear
from sparse_cbm.datasets.shapes import load_shapes
from sparse_cbm.spatial.heatmaps import mask_scores, pointing_share, upsample
from sparse_cbm.spatial.model import SpatialBottleneck
from sparse_cbm.spatial.prompts import Rings, grid_centres, ring_masks
from sparse_cbm.spatial.regions import (bounding_box, box_region, edit_maps, explain_region, grid_region,
                                        point_region, region_scores)
from sparse_cbm.spatial.train import local_similarities


def test_grid_centres_use_the_papers_strides():
    centres = grid_centres(64, 64, 7, 7)
    assert centres.shape == (49, 2)
    assert centres[0].tolist() == [0, 0] and centres[1].tolist() == [0, 10] and centres[7].tolist() == [10, 0]
    assert centres[-1].tolist() == [60, 60]  # floor(64 / 6) = 10
    with pytest.raises(ValueError, match="at least 2 x 2"):
        grid_centres(64, 64, 1, 7)


def test_a_ring_surrounds_its_centre_and_leaves_the_rest_of_the_image():
    masks = ring_masks(32, 32, np.array([[16, 16]]), radius=6, line_width=2)[0]
    assert masks[16, 16] == 0 and masks[16, 22] > 0.5 and masks[10, 16] > 0.5 and masks[0, 0] == 0
    images = torch.rand(2, 3, 32, 32)
    colour = torch.tensor([1.0, -1.0, 0.5]).reshape(3, 1, 1)
    copies = Rings(masks[None], colour).draw(images)
    assert copies.shape == (2, 3, 32, 32)
    assert torch.equal(copies[1, :, 0, 0], images[1, :, 0, 0])  # far from the ring: untouched
    full = masks == 1
    assert torch.allclose(copies[0][:, full], colour.reshape(3, 1).expand(3, int(full.sum())))


def test_local_similarities_are_cosines_laid_out_on_the_grid():
    prompted = torch.randn(2, 4, 8)
    concepts = torch.randn(3, 8)
    p = local_similarities(prompted, concepts, 2)
    assert p.shape == (2, 3, 2, 2)
    expected = torch.nn.functional.cosine_similarity(prompted[1, 2], concepts[0], dim=0)
    assert torch.isclose(p[1, 0, 1, 0], expected, atol=1e-6)  # copy 2 is row 1, column 0


def _model(weight, std=None) -> SpatialBottleneck:
    """Feature maps with as many channels as concepts, mapped one to one (identity 1x1 conv)."""
    m, c = weight.shape[1], weight.shape[0]
    model = SpatialBottleneck(m, m, c, grid=4)
    with torch.no_grad():
        model.conv.weight.copy_(torch.eye(m)[:, :, None, None])
    model.fc = StandardizedLinear(weight, torch.zeros(c), torch.zeros(m), torch.ones(m) if std is None else std)
    return model.eval()


def test_a_local_edit_flips_the_prediction_and_only_inside_its_region_counts():
    # two concepts, two classes: class 0 listens to concept 0, class 1 to concept 1
    model = _model(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    features = torch.zeros(1, 2, 4, 4)
    features[0, 0, :2, :2] = 1.0  # concept 0 in the top-left quarter
    features[0, 1] = 0.1  # a little of concept 1 everywhere
    region = box_region((16, 16), (0, 0, 8, 8))  # the top-left quarter of a 16 x 16 image
    before = explain_region(model, features, region, k=2)
    assert before.prediction == 0 and before.concepts[0][0] == 0
    after = explain_region(model, features, region, k=2, edits={0: -2.0})
    assert after.edited_prediction == 1, "lowering concept 0 where it is must flip the prediction to class 1"
    elsewhere = explain_region(model, features, box_region((16, 16), (8, 8, 16, 16)), k=2, edits={0: -0.5})
    assert elsewhere.edited_prediction == 0, "the same edit where concept 0 is absent is too weak to flip it"


def test_edits_are_in_units_of_each_concepts_spread():
    maps = torch.zeros(1, 2, 2, 2)
    region = grid_region(np.ones((4, 4), dtype=np.float32), (2, 2))
    edited = edit_maps(maps, torch.tensor([1.0, 3.0]), region, {1: 2.0})
    assert torch.allclose(edited[0, 1], torch.full((2, 2), 6.0)) and torch.equal(edited[0, 0], maps[0, 0])
    assert torch.equal(maps, torch.zeros(1, 2, 2, 2))  # the original is left alone


def test_region_scores_rank_the_concept_that_is_in_the_region():
    z = torch.zeros(1, 3, 4, 4)
    z[0, 2, 2:, 2:] = 5.0  # concept 2 only in the bottom-right
    z[0, 1] = 1.0  # concept 1 everywhere, weakly
    inside = region_scores(z, box_region((8, 8), (4, 4, 8, 8)))[0]
    outside = region_scores(z, box_region((8, 8), (0, 0, 4, 4)))[0]
    assert inside.argmax() == 2 and outside.argmax() == 1


def test_regions_from_points_boxes_and_bad_input():
    disc = point_region((20, 20), (10, 10), radius=3)
    assert disc[10, 10] == 1 and disc[0, 0] == 0 and 20 < disc.sum() < 40
    with pytest.raises(ValueError, match="not inside"):
        box_region((10, 10), (5, 5, 12, 8))
    with pytest.raises(ValueError, match="outside"):
        point_region((10, 10), (11, 3), radius=2)
    mask = np.zeros((6, 6), bool)
    mask[1:3, 2:5] = True
    assert bounding_box(mask) == (2, 1, 5, 3)


def test_mask_scores_reward_a_heatmap_on_the_mask_and_punish_one_beside_it():
    mask = np.zeros((16, 16), bool)
    mask[4:8, 4:8] = True
    on = mask.astype(float) + 0.01 * np.random.default_rng(0).random((16, 16))
    off = np.roll(mask, 8, axis=1).astype(float)
    good, bad = mask_scores(on, mask), mask_scores(off, mask)
    assert good["pixel_accuracy"] == 1.0 and good["miou"] == 1.0 and good["map"] == pytest.approx(1.0)
    assert bad["miou"] < 0.5 and bad["map_foreground"] < 0.2 and good["map_foreground"] == pytest.approx(1.0)
    assert bad["map"] > 0.8  # Chefer's mAP counts the background too, most of the image: beside the object is not 0
    assert mask_scores(on, mask, 0.5)["miou"] == 1.0


def test_pointing_share_is_the_positive_mass_in_the_cell():
    heat = np.zeros((4, 4))
    heat[:2, :2] = 3.0
    heat[2:, 2:] = 1.0
    heat[0, 3] = -5.0  # negative evidence does not count
    assert pointing_share(heat, (0, 2, 0, 2)) == pytest.approx(0.75)
    assert pointing_share(np.zeros((4, 4)), (0, 2, 0, 2)) == 0.0


def test_upsample_keeps_a_blob_where_it_was():
    maps = torch.zeros(1, 1, 4, 4)
    maps[0, 0, 0, 3] = 1.0
    up = upsample(maps, (16, 16))[0, 0]
    y, x = np.unravel_index(int(up.argmax()), up.shape)
    assert y < 4 and x >= 12


def test_scenes_have_object_maps_whose_class_object_decides_the_class():
    splits = load_shapes(40, 20, 64, ["shape", "colour"], val_fraction=0.1, seed=3, preset="scenes")
    test = splits.splits["test"]
    counts = []
    for i in range(len(test.labels)):
        objects = test.object_map(i)
        counts.append(len(objects.objects))
        assert objects.labels.shape == (64, 64) and 1 <= objects.class_object <= len(objects.objects)
        assert objects.mask(objects.class_object).any()
        assert set(np.unique(objects.labels)) <= set(range(len(objects.objects) + 1))
    assert min(counts) >= 2 and max(counts) <= 4
    single = load_shapes(20, 10, 64, ["shape", "colour"], val_fraction=0.1, seed=3, preset="attributes")
    one = single.splits["test"].object_map(0)
    assert len(one.objects) == 1 and one.class_object == 1 and one.mask(1).any()


def test_the_prompting_clip_is_named_whole_or_not_at_all():
    from sparse_cbm.errors import SparseCbmError
    from sparse_cbm_app.params import deep_merge, default_params, validate_params

    both_null = validate_params(deep_merge(default_params(), {"spatial": {"prompts": {"model": None, "pretrained": None}}}))
    assert both_null.spatial.prompts.pretrained is None
    with pytest.raises((SparseCbmError, ValueError), match="spatial.prompts.model and spatial.prompts.pretrained"):
        validate_params(deep_merge(default_params(), {"spatial": {"prompts": {"model": "sparse-cbm-shapes"}}}))


def test_prompt_concepts_refuse_another_concept_list_or_clip(tmp_path):
    from sparse_cbm.errors import CacheMismatchError
    from sparse_cbm.spatial.caches import read_prompt_concepts, write_prompt_concepts

    class Clip:
        identity = {"model": "m", "pretrained": "p"}

        def encode_texts(self, texts):
            return torch.arange(len(texts) * 4, dtype=torch.float32).reshape(len(texts), 4)

    write_prompt_concepts(tmp_path / "pc", Clip(), ["red", "round"], "sha-a")
    emb = read_prompt_concepts(tmp_path / "pc", "sha-a", Clip.identity)
    assert emb.shape == (2, 4) and emb.dtype == np.float32
    with pytest.raises(CacheMismatchError, match="another concept list"):
        read_prompt_concepts(tmp_path / "pc", "sha-b", Clip.identity)
    with pytest.raises(CacheMismatchError, match="dvc repro embed_prompt_text"):
        read_prompt_concepts(tmp_path / "pc", "sha-a", {"model": "other"})


def test_class_prompts_are_embedded_beside_the_concepts_and_refused_when_other(tmp_path):
    from sparse_cbm.errors import CacheMismatchError
    from sparse_cbm.spatial.caches import class_prompts, read_class_prompts, read_prompt_concepts, write_prompt_concepts

    class Clip:
        identity = {"model": "m", "pretrained": "p"}

        def encode_texts(self, texts):
            return torch.tensor([[float(len(t)), 1.0] for t in texts])

    assert class_prompts(None, ["red circle"]) == []
    prompts = class_prompts("an image of a {class}.", ["red circle", "blue star"])
    assert prompts == ["an image of a red circle.", "an image of a blue star."]
    write_prompt_concepts(tmp_path / "pc", Clip(), ["red"], "sha-a", prompts)
    emb = read_class_prompts(tmp_path / "pc", prompts, Clip.identity)
    assert emb.tolist() == [[25.0, 1.0], [24.0, 1.0]]  # in the classes' order, apart from the concepts
    assert read_prompt_concepts(tmp_path / "pc", "sha-a", Clip.identity).tolist() == [[3.0, 1.0]]
    with pytest.raises(CacheMismatchError, match="spatial.class_concepts"):
        read_class_prompts(tmp_path / "pc", class_prompts("a photo of a {class}.", ["red circle", "blue star"]),
                           Clip.identity)
    write_prompt_concepts(tmp_path / "none", Clip(), ["red"], "sha-a")  # spatial.class_concepts: null
    assert not (tmp_path / "none" / "class_prompts.npy").exists()
    with pytest.raises(CacheMismatchError, match="no class prompts .*null when it was made.*dvc repro embed_prompt_text"):
        read_class_prompts(tmp_path / "none", prompts, Clip.identity)


def test_the_class_concepts_param_needs_its_placeholder():
    from sparse_cbm.errors import SparseCbmError
    from sparse_cbm_app.params import deep_merge, default_params, validate_params

    assert validate_params(deep_merge(default_params(), {"spatial": {"class_concepts": None}})).spatial.class_concepts is None
    for template in ("an image of a thing", "an image of a {class} with {concept}"):
        with pytest.raises((SparseCbmError, ValueError), match="placeholder"):
            validate_params(deep_merge(default_params(), {"spatial": {"class_concepts": template}}))


def test_torchvision_feature_maps_from_a_local_checkpoint_and_named_errors(tmp_path):
    import torchvision

    from sparse_cbm.errors import BackboneError
    from sparse_cbm.spatial.features import feature_backbone

    torch.manual_seed(0)
    path = tmp_path / "resnet18.pt"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    features = feature_backbone("resnet18", str(path), "layer3")
    x = features.preprocess(Image.new("RGB", (96, 80)))[None]
    maps = features.encode(x)
    assert maps.shape == (1, 256, 14, 14)  # 224 px through the weights' own preprocessing, stride 16
    from sparse_cbm.storage.manifest import file_sha256

    assert features.identity == {"kind": "torchvision", "model": "resnet18", "weights": f"file:{path.name}",
                                 "weights_sha256": file_sha256(path), "layer": "layer3"}  # wherever the file lies
    with pytest.raises(BackboneError, match="not a node of resnet18"):
        feature_backbone("resnet18", str(path), "layer9")
    with pytest.raises(BackboneError, match="neither 'clip' nor a torchvision model"):
        feature_backbone("no_such_net", None, "layer3")


def test_grad_cam_on_a_clip_vit_puts_its_tokens_on_their_grid_and_sees_the_patches():
    """A CLIP ViT (sparse-cbm-tiny: 8 x 8 patches) as the explained backbone: its maps are its last
    block's patch tokens (`auto` and `tokens`), and Grad-CAM of a class-token head gives maps that are
    not all zero (hooked on the last block's output, the patch tokens' gradient would be zero)."""
    from sparse_cbm.clip.backbone import load_backbone
    from sparse_cbm.errors import BackboneError
    from sparse_cbm.spatial.features import feature_backbone, tokens_to_maps
    from sparse_cbm.spatial.heatmaps import GradCamHeatmaps

    torch.manual_seed(0)
    clip = load_backbone("sparse-cbm-tiny", "none", device="cpu", precision="fp32")
    features = feature_backbone("clip", None, "auto", clip)
    x = torch.randn(2, *clip.blank_input.shape)
    assert features.encode(x).shape == (2, 64, 8, 8)
    assert tokens_to_maps(torch.arange(2 * 65 * 3.0).reshape(2, 65, 3)).shape == (2, 3, 8, 8)
    with pytest.raises(BackboneError, match="set spatial.features.layer: tokens"):
        feature_backbone("clip", None, "layer3", clip)

    class Head(torch.nn.Module):  # the black box: CLIP's pooled embedding, then a linear layer
        def __init__(self):
            super().__init__()
            self.visual, self.fc = clip.model.visual, torch.nn.Linear(64, 3)

        def forward(self, images):
            return self.fc(self.visual(images))

    maps = GradCamHeatmaps(Head().eval(), features.target_layer, features.reshape_transform)(x, [0, 2])
    assert maps.shape == (2, 64, 64) and np.isfinite(maps).all() and maps.max() > 0


def test_softmax_pooling_is_the_releases_softmax_pooling_2d():
    """The authors' SoftmaxPooling2D (itaybenou/show-and-tell, cbm.py) with the whole map as its kernel,
    written as they wrote it (unfold, softmax over each patch, weighted sum), against ours."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    maps = torch.randn(3, 5, 4, 4) * 3
    n, c, h, w = maps.shape
    patches = F.unfold(maps, kernel_size=(h, w), stride=(h, w), padding=0).view(n, c, h * w, -1)
    release = (patches * F.softmax(patches, dim=2)).sum(dim=2).squeeze(-1)
    model = SpatialBottleneck(channels=2, num_concepts=5, num_classes=2, grid=4, pooling="softmax")
    ours = model.pool(maps)
    assert torch.allclose(ours, release, atol=1e-6)
    assert (ours <= maps.amax(dim=(2, 3)) + 1e-6).all() and (ours >= maps.mean(dim=(2, 3)) - 1e-6).all()
    assert not torch.allclose(ours, maps.mean(dim=(2, 3)))


def _resnet_backbone(layers):
    """A CLIP-like backbone around open_clip's ModifiedResNet (64 px, width 8), for clip_features."""
    from open_clip.modified_resnet import ModifiedResNet

    torch.manual_seed(0)
    visual = ModifiedResNet(layers=layers, output_dim=16, heads=2, image_size=64, width=8).eval()
    for m in visual.modules():  # BatchNorm statistics that are not the identity, so that mistakes show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2), m.running_var.uniform_(0.5, 2.0)
    return SimpleNamespace(model=SimpleNamespace(visual=visual), identity={"model": "rn"}, preprocess=None,
                           device=torch.device("cpu"), blank_input=torch.zeros(3, 64, 64))


def test_a_dense_stage_is_its_own_maps_on_its_inputs_grid_and_changes_no_module():
    """spatial.features.dense: layer3 of a one-block stage at 64 px gives 8 x 8 maps whose 2 x 2 means
    before the last ReLU are exactly the stage's own 4 x 4 maps; a multi-block stage dilates its later
    3 x 3 convolutions without touching the modules; the CLIP's pooled embedding is unchanged; `auto`
    is dense only where the stage's own grid is coarser than spatial.grid; true on a ViT or a
    torchvision model is refused with the fix (the params refuse it for torchvision before any stage)."""
    from sparse_cbm.errors import BackboneError
    from sparse_cbm.spatial.features import clip_features, feature_backbone
    from sparse_cbm_app.params import SpatialFeaturesParams

    backbone = _resnet_backbone([1, 1, 1, 1])
    visual = backbone.model.visual
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        before = visual(x)
    own, dense = clip_features(backbone, "auto", dense=False), clip_features(backbone, "auto", dense=True)
    assert dense.identity == {"kind": "clip", "layer": "layer3", "dense": True, "model": "rn"}
    assert "dense" not in own.identity  # the identities of caches made before the option are unchanged
    assert own.encode(x).shape == (3, 128, 4, 4) and dense.encode(x).shape == (3, 128, 8, 8)
    assert dense.target_layer(torch.zeros(1, 64, 8, 8)).shape == (1, 128, 8, 8)  # Grad-CAM hooks the dense stage
    assert dense.network_layer is visual.layer3 and own.network_layer is own.target_layer is visual.layer3
    from sparse_cbm.spatial.heatmaps import GradCamHeatmaps

    class BlackBox(torch.nn.Module):  # the CLIP as it is (its pooled embedding), then a linear layer
        def __init__(self):
            super().__init__()
            self.visual, self.fc = visual, torch.nn.Linear(16, 3)

        def forward(self, images):
            return self.fc(self.visual(images))
    maps = GradCamHeatmaps(BlackBox(), dense.network_layer)(x, [0, 1, 2])  # the stage the black box runs
    assert maps.shape == (3, 64, 64) and np.isfinite(maps).all() and maps.max() > 0
    relu = visual.layer3[0].act3
    visual.layer3[0].act3 = torch.nn.Identity()  # before the last ReLU
    try:
        pooled = torch.nn.functional.avg_pool2d(dense.encode(x), 2)
        torch.testing.assert_close(pooled, own.encode(x), rtol=1e-5, atol=1e-5)
    finally:
        visual.layer3[0].act3 = relu
    with torch.no_grad():
        torch.testing.assert_close(visual(x), before, rtol=0, atol=0)
    assert clip_features(backbone, "auto").identity["dense"] is True  # auto: 4 x 4 is coarser than 7 x 7
    assert "dense" not in clip_features(backbone, "auto", grid=4).identity  # ... and not than 4 x 4
    assert "dense" not in clip_features(backbone, "layer1", dense=True).identity  # layer1 does not downsample

    deep = _resnet_backbone([1, 1, 2, 1])
    conv = deep.model.visual.layer3[1].conv2
    maps = clip_features(deep, "layer3", dense=True).encode(x)
    assert maps.shape == (3, 128, 8, 8) and conv.dilation == (1, 1) and conv.padding == (1, 1)
    assert isinstance(deep.model.visual.layer3[0].avgpool, torch.nn.AvgPool2d)

    vit = SimpleNamespace(model=SimpleNamespace(visual=SimpleNamespace(transformer=None)), identity={},
                          preprocess=None, device=torch.device("cpu"), blank_input=torch.zeros(3, 64, 64))
    with pytest.raises(BackboneError, match="set spatial.features.dense: auto or false"):
        clip_features(vit, "tokens", dense=True)
    with pytest.raises(BackboneError, match="set spatial.features.dense: auto or false"):
        feature_backbone("resnet18", None, "layer3", dense=True)
    with pytest.raises(ValueError, match="set dense: auto or false"):
        SpatialFeaturesParams(backbone="resnet50", dense=True)
    assert SpatialFeaturesParams(dense="false").dense is False
