"""The CLIP backbone: open_clip's ``create_model_and_transforms``, with clear errors.

``pretrained`` is an open_clip tag (``openai``, ``laion2b_s34b_b79k``...), an
``hf-hub:org/repo`` id, a local checkpoint path, or ``none`` for random weights
(allowed only when written explicitly; results are then meaningless).

Importing this module registers ``sparse-cbm-tiny``, a small open_clip
architecture (width 64, 2 layers, 64 px input) that runs the whole pipeline on
a CPU in seconds; ``sparse-cbm-shapes-minilm``, the embedded world's CLIP: a small
ResNet image tower (64 px) and the packaged all-MiniLM-L6-v2 as its locked text
tower (``language_tower``), which ``sparse-cbm train-shapes-clip`` trains on
shapes; and ``sparse-cbm-shapes``, the same ResNet with its own text tower (the
first shapes CLIPs).
A checkpoint of an architecture with a packaged text tower holds only the trained
parts; the tower comes from its package.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import logging
import os
import re
import socket
from urllib.parse import urlparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Sequence

import open_clip
import torch
from PIL import Image

from sparse_cbm.clip import PRECISIONS, language_tower
from sparse_cbm.errors import BackboneError
from sparse_cbm.storage.manifest import file_sha256  # noqa: F401  (re-exported)
from sparse_cbm.runtime.device import model_dtype, resolve_device

log = logging.getLogger(__name__)

TINY_MODEL = "sparse-cbm-tiny"
RANDOM_WEIGHTS = "none"
_CONFIG_DIR = Path(__file__).parent / "model_configs"
if TINY_MODEL not in open_clip.list_models():
    open_clip.add_model_config(_CONFIG_DIR)
    language_tower.resolve_packaged_towers(p.stem for p in _CONFIG_DIR.glob("*.json"))


def _looks_like_path(value: str) -> bool:
    return "/" in value or "\\" in value or value.endswith((".pt", ".pth", ".bin", ".safetensors", ".ckpt"))


def backbone_identity(model: str, pretrained: str) -> Dict[str, Any]:
    """What makes two embedding caches comparable: architecture and weights.

    A local checkpoint is identified by its sha256, so a moved file still matches.
    """
    checkpoint_sha256 = None
    if pretrained != RANDOM_WEIGHTS and not pretrained.startswith("hf-hub:") and _looks_like_path(pretrained):
        if not Path(pretrained).is_file():
            raise BackboneError(f"backbone.pretrained: checkpoint file {pretrained} not found. Give the path of a "
                                f"downloaded open_clip checkpoint, an open_clip tag, or an hf-hub: id.")
        checkpoint_sha256 = file_sha256(pretrained)
    identity = {
        "model": pretrained if pretrained.startswith("hf-hub:") else model,
        "pretrained": pretrained if checkpoint_sha256 is None else f"file:{Path(pretrained).name}",
        "checkpoint_sha256": checkpoint_sha256,
        "random_weights": pretrained == RANDOM_WEIGHTS,
    }
    tower = language_tower.packaged_tower(model)
    if tower is not None:  # the text tower's weights come from a package, not from the checkpoint
        identity["text_tower"] = language_tower.tower_identity(tower)
    return identity


def describe_transform(transform: Callable) -> str:
    """A stable text description of a preprocessing pipeline (memory addresses removed)."""
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(transform))


@dataclass
class Backbone:
    model: torch.nn.Module
    preprocess: Callable
    device: torch.device
    amp: bool
    identity: Dict[str, Any]
    logit_scale: float
    tokenizer: Callable

    @property
    def preprocess_description(self) -> str:
        return describe_transform(self.preprocess)

    @functools.cached_property
    def blank_input(self) -> torch.Tensor:
        """A zero tensor of the shape that ``preprocess`` gives one image."""
        return torch.zeros_like(self.preprocess(Image.new("RGB", (8, 8))))

    @functools.cached_property
    def embed_dim(self) -> int:
        """Width of the image embeddings, found by one forward pass."""
        return int(self.encode_images(self.blank_input[None]).shape[1])

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the model's weights: what its inputs are cast to (float64 with precision fp64)."""
        return model_dtype(self.model)

    def autocast(self):
        if self.amp:
            return torch.autocast(device_type=self.device.type, dtype=torch.float16)
        return contextlib.nullcontext()

    @torch.inference_mode()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Unnormalised image embeddings (float32, on the CPU) of a preprocessed batch."""
        images = images.to(self.device, dtype=self.dtype, non_blocking=True)
        with self.autocast():
            feats = self.model.encode_image(images)
        return feats.float().cpu()

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """Unnormalised text embeddings (float32, on the CPU), in order."""
        out = []
        for lo in range(0, len(texts), batch_size):
            tokens = self.tokenizer(list(texts[lo:lo + batch_size])).to(self.device)
            with self.autocast():
                out.append(self.model.encode_text(tokens).float().cpu())
        return torch.cat(out) if out else torch.zeros(0, self.embed_dim)


def _unreachable_reason(model_name: str, weights: str | None) -> str | None:
    """Why weights that must be downloaded cannot be, found in seconds; None when they can.

    The Hub's client retries for about a minute before it gives up; a one-off
    connection to the host it would use tells the same at once. Cached weights
    and local files need no network, and HF_HUB_OFFLINE=1 fails fast on its own.
    """
    import huggingface_hub
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return None
    if model_name.startswith("hf-hub:"):
        repo, filename, url = model_name[len("hf-hub:"):], "open_clip_config.json", None
    else:
        if weights is None or os.path.isfile(weights):
            return None
        cfg = open_clip.get_pretrained_cfg(model_name, weights)
        repo, filename = os.path.split(cfg.get("hf_hub", "")) if cfg.get("hf_hub") else (None, None)
        url = None if repo else cfg.get("url")
    if repo:
        cached = huggingface_hub.try_to_load_from_cache(repo, filename or "open_clip_pytorch_model.bin")
        if isinstance(cached, str):
            return None
        host = urlparse(constants.ENDPOINT).hostname
    elif url:
        if (Path.home() / ".cache" / "clip" / os.path.basename(url)).is_file():
            return None
        host = urlparse(url).hostname
    else:
        return None
    try:
        socket.create_connection((host, 443), timeout=5).close()
    except OSError as exc:
        return f"cannot reach {host}: {exc}"
    return None


@contextlib.contextmanager
def _quiet_loggers(*names: str):
    """Silence third-party loggers that repeat, in many lines, an error we report in one."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _check_model_name(model: str) -> None:
    known = open_clip.list_models()
    if model not in known:
        close = difflib.get_close_matches(model, known, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise BackboneError(f"backbone.model {model!r} is not an open_clip architecture.{hint} "
                            f"`python -c 'import open_clip; print(open_clip.list_models())'` lists them.")


def load_backbone(model: str, pretrained: str, device: str = "auto", precision: str = "auto") -> Backbone:
    """Build the CLIP model and its eval preprocessing, in eval mode on ``device``."""
    if precision not in PRECISIONS:
        raise BackboneError(f"backbone.precision {precision!r} is not one of {', '.join(PRECISIONS)} (auto: mixed "
                            f"precision on CUDA, fp32 elsewhere; amp: mixed precision, CUDA only; fp64: float64, "
                            f"so that the caches do not depend on the CPU's kernel set).")
    torch_device = resolve_device(device)
    if precision == "amp" and torch_device.type != "cuda":
        raise BackboneError("backbone.precision 'amp' needs a CUDA device; use 'auto' or 'fp32' on the CPU.")
    amp = precision == "amp" or (precision == "auto" and torch_device.type == "cuda")
    identity = backbone_identity(model, pretrained)

    kwargs: Dict[str, Any] = {"device": torch_device}
    if pretrained.startswith("hf-hub:"):
        model_name, weights = pretrained, None
    else:
        _check_model_name(model)
        model_name = model
        weights = None if pretrained == RANDOM_WEIGHTS else pretrained
        if weights is not None and identity["checkpoint_sha256"] is None:
            tags = open_clip.list_pretrained_tags_by_model(model)
            if weights not in tags:
                raise BackboneError(
                    f"backbone.pretrained {weights!r} is not an open_clip tag for {model}. Tags for {model}: "
                    f"{', '.join(tags) or '(none)'}; or give a local checkpoint path, an hf-hub: id, or 'none'.")
            if open_clip.get_pretrained_cfg(model, weights).get("quick_gelu", False):
                kwargs["force_quick_gelu"] = True
    if pretrained == RANDOM_WEIGHTS:
        log.warning("backbone.pretrained is 'none': %s has RANDOM weights. Embeddings and every accuracy "
                    "computed from them are meaningless; use this for tests only.", model)
    fix = ("Without network access, download the checkpoint on another machine and set backbone.pretrained "
           "to its local path (for example open_clip_pytorch_model.bin), or set backbone.pretrained: none for "
           "random weights (tests only).")
    unreachable = _unreachable_reason(model_name, weights)
    if unreachable:
        raise BackboneError(f"could not download weights {pretrained!r} for {model_name} ({unreachable}). {fix}")
    towers_only = weights is not None and identity["checkpoint_sha256"] is not None \
        and language_tower.packaged_tower(model_name) is not None
    try:
        with _quiet_loggers("", "huggingface_hub", "open_clip", "transformers"):
            if towers_only:  # the packaged text tower, then what the checkpoint trained
                clip, _, preprocess = open_clip.create_model_and_transforms(model_name, **kwargs)
                language_tower.load_trained_parts(clip, weights)
            else:
                clip, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=weights, **kwargs)
    except BackboneError:
        raise
    except Exception as exc:  # open_clip wraps download and load failures in RuntimeError and friends
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise BackboneError(f"could not load weights {pretrained!r} for {model_name} ({reason}). {fix}") from None
    clip.eval()
    if precision == "fp64":
        clip.double()
    logit_scale = float(clip.logit_scale.exp().item()) if hasattr(clip, "logit_scale") else 100.0
    log.info("backbone %s (%s) on %s, %s", model_name, identity["pretrained"], torch_device,
             "mixed precision" if amp else ("fp64" if precision == "fp64" else "fp32"))
    return Backbone(model=clip, preprocess=preprocess, device=torch_device, amp=amp, identity=identity,
                    logit_scale=logit_scale, tokenizer=open_clip.get_tokenizer(model_name))
