"""Explanation faithfulness against known attributes: are an image's top concepts true of it?"""

from __future__ import annotations

from typing import Dict, Sequence

import numpy as np
import pandas as pd

from sparse_cbm.evaluation.explain import top_concept_indices
from sparse_cbm.bottleneck.model import ConceptBottleneck


def truth_matrix(index: pd.DataFrame, concepts: Sequence[str]) -> np.ndarray:
    """(N, |D|) bool: which concepts are true of each shapes image (its shape, colour, texture,
    background and size words)."""
    from sparse_cbm.datasets.shapes_text import image_concepts

    position = {c: j for j, c in enumerate(concepts)}
    truth = np.zeros((len(index), len(concepts)), dtype=bool)
    for i, attrs in enumerate(index.to_dict("records")):
        for phrase in image_concepts(attrs):
            if phrase in position:
                truth[i, position[phrase]] = True
    return truth


def faithfulness(model: ConceptBottleneck, embeddings, index: pd.DataFrame, concepts: Sequence[str],
                 k: int) -> Dict[str, float]:
    """Mean precision of each image's top-k concepts against its true attributes, for three
    rankings: raw CLIP score, CBL activation, contribution to the decision."""
    truth = truth_matrix(index, concepts)
    tops = top_concept_indices(model, embeddings, min(k, len(concepts)))
    out: Dict[str, float] = {"k": k}
    for name, top in tops.items():
        hits = np.take_along_axis(truth, top, axis=1)
        out[f"precision_{name}"] = round(float(hits.mean()), 4)
    out["true_concepts_per_image"] = round(float(truth.sum(axis=1).mean()), 4)
    return out
