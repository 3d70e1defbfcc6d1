"""A trained SALF-CBM on disk: ``weights.safetensors`` and ``config.json`` in one folder.

The config holds what the model needs to run on a new image (the grid, the pooling, the
feature maps' shape and the backbone that makes them, the concepts and classes by name) and
the statistics of the raw similarities P on train (to draw P as a heatmap beside the maps).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from safetensors.torch import load_file, save_file

from sparse_cbm.errors import CacheMismatchError
from sparse_cbm.runtime.atomic import atomic_write_json
from sparse_cbm.spatial.model import SpatialBottleneck

WEIGHTS, CONFIG = "weights.safetensors", "config.json"
CLASS_MODEL = "class_concepts"  # the folder, inside a trained SALF-CBM's, of its class-concept model (Table 2)


def save_spatial(folder: str | Path, model: SpatialBottleneck, config: Dict[str, Any]) -> None:
    folder = Path(folder)
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(folder / WEIGHTS))
    atomic_write_json(folder / CONFIG, config)


def load_spatial(folder: str | Path, expect_concepts_sha256: Optional[str] = None
                 ) -> Tuple[SpatialBottleneck, Dict[str, Any]]:
    folder = Path(folder)
    if not (folder / CONFIG).is_file():
        raise CacheMismatchError(f"{folder} holds no trained SALF-CBM: run `dvc repro train_spatial`.")
    config = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
    if expect_concepts_sha256 is not None and config["concept_list_sha256"] != expect_concepts_sha256:
        raise CacheMismatchError(f"the SALF-CBM in {folder} was trained on another concept list than the text cache "
                                 f"holds. Run `dvc repro train_spatial`.")
    state = load_file(str(folder / WEIGHTS))
    channels = int(config["feature_shape"][0])
    model = SpatialBottleneck(channels, len(config["concepts"]), len(config["classes"]), config["grid"],
                              config["pooling"])
    model.load_state_dict(state)
    return model.eval(), config
