import pytest
import torch

from sparse_cbm.clip.backbone import TINY_MODEL, backbone_identity, describe_transform, load_backbone
from sparse_cbm.errors import BackboneError
from sparse_cbm.runtime.device import DeviceError


def test_tiny_backbone_offline(tiny_backbone):
    x = torch.zeros(3, 3, 64, 64)
    emb = tiny_backbone.encode_images(x)
    assert emb.shape == (3, 64) and emb.dtype == torch.float32
    assert tiny_backbone.identity == {"model": TINY_MODEL, "pretrained": "none", "checkpoint_sha256": None,
                                      "random_weights": True}
    assert " at 0x" not in tiny_backbone.preprocess_description
    assert "Resize(size=64" in describe_transform(tiny_backbone.preprocess)


def test_random_weights_are_seeded_and_warned(caplog):
    torch.manual_seed(5)
    a = load_backbone(TINY_MODEL, "none", device="cpu")
    torch.manual_seed(5)
    b = load_backbone(TINY_MODEL, "none", device="cpu")
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(a.encode_images(x), b.encode_images(x))
    assert "RANDOM weights" in caplog.text


def test_local_checkpoint_path_loads_the_same_weights(tiny_backbone, tmp_path):
    ckpt = tmp_path / "tiny.pt"
    torch.save(tiny_backbone.model.state_dict(), ckpt)
    loaded = load_backbone(TINY_MODEL, str(ckpt), device="cpu")
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(loaded.encode_images(x), tiny_backbone.encode_images(x))
    assert loaded.identity["pretrained"] == "file:tiny.pt"
    assert len(loaded.identity["checkpoint_sha256"]) == 64
    assert backbone_identity(TINY_MODEL, str(ckpt)) == loaded.identity


def test_missing_checkpoint_file():
    with pytest.raises(BackboneError, match="checkpoint file /no/such/model.pt not found"):
        load_backbone(TINY_MODEL, "/no/such/model.pt", device="cpu")


def test_misspelt_model_gets_a_suggestion():
    with pytest.raises(BackboneError, match="Did you mean ViT-B-32"):
        load_backbone("ViT-B-23", "none", device="cpu")


def test_unknown_tag_lists_the_model_tags():
    with pytest.raises(BackboneError) as err:
        load_backbone("ViT-B-32", "opnai", device="cpu")
    assert "openai" in str(err.value) and "laion2b" in str(err.value)


def test_download_failure_is_one_line_naming_model_tag_and_fix():
    # HF_HUB_OFFLINE=1 (set by conftest): the download cannot happen
    with pytest.raises(BackboneError) as err:
        load_backbone("ViT-B-32", "openai", device="cpu")
    msg = str(err.value)
    assert "'openai'" in msg and "ViT-B-32" in msg and "local path" in msg
    assert "\n" not in msg


def test_amp_needs_cuda():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(BackboneError, match="amp"):
        load_backbone(TINY_MODEL, "none", device="cpu", precision="amp")
    with pytest.raises(DeviceError, match="no CUDA device"):
        load_backbone(TINY_MODEL, "none", device="cuda")


@pytest.mark.parametrize("precision", ["fp16", "bf16", "AMP", ""])
def test_unknown_precision_is_a_named_error_not_fp32(precision):
    with pytest.raises(BackboneError, match=f"backbone.precision '{precision}' is not one of auto, fp32, amp, fp64"):
        load_backbone(TINY_MODEL, "none", device="cpu", precision=precision)


def test_unknown_device_is_a_named_error():
    with pytest.raises(DeviceError, match="'gpu' is not one of auto, cpu, mps, cuda or cuda:N"):
        load_backbone(TINY_MODEL, "none", device="gpu")


_ENCODE = """
import sys, numpy as np, torch
from sparse_cbm.clip.backbone import load_backbone
from sparse_cbm.datasets import load_dataset
bb = load_backbone("sparse-cbm-shapes", "data/pretrained/shapes-clip.pt", device="cpu", precision=sys.argv[1])
src = load_dataset("shapes", "unused", seed=0, shapes_n_train=256, shapes_n_test=16,
                   shapes_preset="attributes").splits["train"]
x = torch.stack([bb.preprocess(src.load(i)) for i in range(len(src))])
np.save(sys.argv[2], bb.encode_images(x).numpy().astype(np.float16))
"""


def test_fp64_caches_do_not_depend_on_the_kernel_set(tmp_path):
    """The world CLIP's float16 embeddings (backbone.precision fp64) under ATen's default kernels and under
    this CPU's best, in fresh processes: the same bytes, as the caches the pipeline's lock records. (In fp32,
    0.1 % of the elements differ: docs/reproducibility.md.)"""
    import os
    import subprocess
    import sys

    import numpy as np

    from tests.conftest import REPO

    out = {}
    for kernels in ("default", None):
        env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
        if kernels:
            env["ATEN_CPU_CAPABILITY"] = kernels
        out[kernels] = tmp_path / f"{kernels}.npy"
        subprocess.run([sys.executable, "-c", _ENCODE, "fp64", str(out[kernels])], cwd=REPO, env=env, check=True)
    a, b = np.load(out["default"]), np.load(out[None])
    assert a.shape == (236, 64) and a.tobytes() == b.tobytes()
