"""The small CLIP trained inside the shapes world: the committed checkpoint and the script."""

import open_clip
import torch

from sparse_cbm.clip.backbone import file_sha256, load_backbone
from sparse_cbm.datasets import load_dataset
from sparse_cbm_app.cli.shapes_clip import (DEFAULT_MODEL, DEFAULT_OUT, preprocess_all, ring_accuracy, save_checkpoint,
                                        train, zero_shot)
from tests.conftest import REPO

# sha256 of data/pretrained/shapes-clip.pt; rebuild with `python -m sparse_cbm_app.cli.shapes_clip` (see docs/usage.md#backbones).
CHECKPOINT_SHA256 = "78f26e93e4909863887bdf1048236cb42650cc29eeeab5291e3e60be69d84fee"
# data/pretrained/shapes-clip-rings.pt, SALF-CBM's prompting CLIP: `sparse-cbm train-shapes-clip --steps 3000
# --scenes 0.5 --rings 0.5 --out data/pretrained/shapes-clip-rings.pt`
RINGS = "data/pretrained/shapes-clip-rings.pt"
RINGS_SHA256 = "856a27911d98c66d966695a0f93eb0af9632e13df010245476ffe9188cdbc182"


def test_committed_checkpoint_is_the_recorded_one():
    assert file_sha256(REPO / DEFAULT_OUT) == CHECKPOINT_SHA256


def test_committed_checkpoint_classifies_fresh_shapes_zero_shot():
    backbone = load_backbone(DEFAULT_MODEL, str(REPO / DEFAULT_OUT), device="cpu")
    assert backbone.identity["checkpoint_sha256"] == CHECKPOINT_SHA256 and not backbone.identity["random_weights"]
    data = load_dataset("shapes", seed=1, shapes_n_train=12, shapes_n_test=48, val_fraction=0.0,
                        shapes_preset="easy")
    test = data.splits["test"]
    images = preprocess_all(test, backbone.preprocess)
    accuracy = zero_shot(backbone.model, open_clip.get_tokenizer(DEFAULT_MODEL), images, test.labels, data.classes)
    assert accuracy >= 0.7, accuracy  # chance is 1/12


def test_short_training_is_deterministic_and_loadable(tmp_path):
    kwargs = dict(seed=3, steps=3, batch_size=8, pool_size=24, warmup=1, num_workers=0, progress=False)
    a = train(DEFAULT_MODEL, **kwargs).state_dict()
    b = train(DEFAULT_MODEL, **kwargs).state_dict()
    c = train(DEFAULT_MODEL, **{**kwargs, "seed": 4}).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["text_projection"], c["text_projection"])

    path = save_checkpoint(train(DEFAULT_MODEL, **kwargs), tmp_path / "ckpt" / "shapes.pt")
    assert [p.name for p in path.parent.iterdir()] == ["shapes.pt"]  # no temporary file left behind
    saved = torch.load(path, weights_only=True)
    assert saved["text_projection"].dtype == torch.float16
    model, _, _ = open_clip.create_model_and_transforms(DEFAULT_MODEL, pretrained=str(path))
    torch.testing.assert_close(model.state_dict()["text_projection"], a["text_projection"].half().float())
    backbone = load_backbone(DEFAULT_MODEL, str(path), device="cpu")
    assert backbone.identity["checkpoint_sha256"] == file_sha256(path)


def test_training_with_scenes_and_rings_is_deterministic():
    kwargs = dict(seed=5, steps=2, batch_size=8, pool_size=16, warmup=1, num_workers=0, progress=False,
                  scenes=0.5, rings=0.5)
    a = train(DEFAULT_MODEL, **kwargs).state_dict()
    b = train(DEFAULT_MODEL, **kwargs).state_dict()
    plain = train(DEFAULT_MODEL, **{**kwargs, "scenes": 0.0, "rings": 0.0}).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["text_projection"], plain["text_projection"])


def test_the_ring_taught_checkpoint_knows_what_a_ring_circles_and_the_first_does_not():
    assert file_sha256(REPO / RINGS) == RINGS_SHA256
    taught, chance = ring_accuracy(DEFAULT_MODEL, REPO / RINGS, n=60)
    first, _ = ring_accuracy(DEFAULT_MODEL, REPO / DEFAULT_OUT, n=60)
    assert taught >= chance + 0.3, (taught, chance)
    assert first < chance + 0.1, (first, chance)  # the pipeline's CLIP never saw a ring: why SALF-CBM has its own
