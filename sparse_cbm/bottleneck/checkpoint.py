"""A trained bottleneck on disk: ``weights.safetensors`` and ``config.json`` in one folder.

``config.json`` holds what the model was trained on and how: the objective (name and
label), the resolved training params, the classes, the sha256 of the concept list and
the backbone's identity. Loading refuses a model trained on another concept list or
backbone, naming both.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from safetensors.torch import load_file, save_file

from sparse_cbm.bottleneck.model import ConceptBottleneck
from sparse_cbm.errors import CacheMismatchError
from sparse_cbm.runtime.atomic import atomic_write_json
from sparse_cbm.storage.manifest import describe_backbone

WEIGHTS, CONFIG = "weights.safetensors", "config.json"


def save_bottleneck(folder: str | Path, model: ConceptBottleneck, config: Dict[str, Any]) -> None:
    """Write the weights and the config into ``folder`` (a folder being built: see ``atomic_directory``)."""
    folder = Path(folder)
    save_file({k: v.contiguous().cpu() for k, v in model.state_dict().items()}, str(folder / WEIGHTS),
              metadata={"loss": str(config.get("loss", ""))})
    atomic_write_json(folder / CONFIG, config)


def load_bottleneck(folder: str | Path, expect_concepts_sha256: Optional[str] = None,
                    expect_backbone: Optional[Dict[str, Any]] = None) -> Tuple[ConceptBottleneck, Dict[str, Any]]:
    """The trained model (in eval mode) and its config."""
    folder = Path(folder)
    if not (folder / CONFIG).is_file():
        raise CacheMismatchError(f"{folder} holds no trained model: run `dvc repro train`.")
    config = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
    if expect_concepts_sha256 is not None and config["concept_list_sha256"] != expect_concepts_sha256:
        raise CacheMismatchError(
            f"the model in {folder} was trained on another concept list (sha256 {config['concept_list_sha256'][:12]}) "
            f"than the text cache holds (sha256 {expect_concepts_sha256[:12]}). Run `dvc repro train`.")
    if expect_backbone is not None:
        keys = ("model", "pretrained", "checkpoint_sha256")
        if any(config["backbone"].get(k) != expect_backbone.get(k) for k in keys):
            raise CacheMismatchError(
                f"the model in {folder} was trained on embeddings of {describe_backbone(config['backbone'])}, "
                f"but the caches come from {describe_backbone(expect_backbone)}. Run `dvc repro train`.")
    state = load_file(str(folder / WEIGHTS))
    model = ConceptBottleneck(state["concepts"].numpy(), len(config["classes"]), config["logit_scale"],
                              units=state["units"].tolist() if "units" in state else None,
                              final_layer=config.get("train", {}).get("final_layer", "dense"))
    model.load_state_dict(state)
    model.eval()
    return model, config
