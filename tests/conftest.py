"""Shared fixtures. Tests never touch the network: Hub access is switched off and any
connection to a non-loopback address fails the test."""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["DVC_NO_ANALYTICS"] = "1"

REPO = Path(__file__).resolve().parents[1]
_real_connect = socket.socket.connect


def _guarded_connect(self, address):
    host = address[0] if isinstance(address, tuple) else None
    if host is not None:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            raise AssertionError(f"test tried to reach the network: {address}")
    return _real_connect(self, address)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)


@pytest.fixture(scope="session")
def tiny_backbone():
    import torch

    from sparse_cbm.clip.backbone import TINY_MODEL, load_backbone

    torch.manual_seed(0)
    return load_backbone(TINY_MODEL, "none", device="cpu")


def write_image(path: Path, seed: int, size=(40, 30), mode="RGB", fmt=None) -> Path:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    img = Image.fromarray(arr).convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format=fmt)
    return path


def make_imagefolder(root: Path, classes=("cat", "dog", "fish"), n_train=6, n_test=3) -> Path:
    for split, n in (("train", n_train), ("test", n_test)):
        for c_idx, cls in enumerate(classes):
            for i in range(n):
                ext = ".png" if i % 2 else ".jpg"
                write_image(root / split / cls / f"img_{i}{ext}", seed=c_idx * 1000 + i + (500 if split == "test" else 0))
    return root
