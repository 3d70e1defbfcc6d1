"""Explaining a concept classifier's decisions, each explanation naming how it ranks.

For an image: its concepts ranked by **activation** (the bottleneck's value a_m), by **CLIP
score** (psi, what CLIP itself says, when the scorer has it) and by **contribution** to the
predicted class c (weight x activation, W[c, m] * a_m, which sum to the logit). For a class:
its concepts ranked by final-layer **weight**. Every record says which ranking each list uses
(``rankings``), so no reader has to guess (LaBo's issue #11 is about exactly that).
Where the dataset annotates attributes, a record also lists the image's true ones.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from sparse_cbm.classifiers.base import ConceptClassifier, ConceptScorer
from sparse_cbm.classifiers.batched import unit_rows

RANKINGS = {"by_activation": "activation", "by_clip_score": "CLIP score (logit scale x cosine)",
            "by_contribution": "weight x activation, for the predicted class", "by_weight": "final-layer weight"}


def _ranked(values: torch.Tensor, names: Sequence[str], top: int) -> List[Dict[str, Any]]:
    order = values.argsort(descending=True)[:top]
    return [{"concept": names[int(j)], "value": round(float(values[j]), 4)} for j in order]


@torch.inference_mode()
def explain_images(classifier: ConceptClassifier, image_embeddings: np.ndarray, classes: Sequence[str],
                   top: int = 10, clip_scores: Optional[ConceptScorer] = None,
                   true_concepts: Optional[List[List[str]]] = None) -> List[Dict[str, Any]]:
    """Per image: predicted class, top concepts by activation, by contribution to the predicted class,
    by CLIP score (``clip_scores`` given), and its true annotated concepts (``true_concepts`` given)."""
    x = unit_rows(image_embeddings)
    S = classifier.concept_activations(x)
    pred = classifier.decide(S).argmax(dim=1)
    contrib = classifier.contributions(S, pred)
    psi = clip_scores.concept_activations(x) if clip_scores is not None else None
    names = classifier.concepts
    out = []
    for i in range(len(x)):
        c = int(pred[i])
        record: Dict[str, Any] = {"predicted": classes[c], "predicted_index": c,
                                  "by_activation": _ranked(S[i], names, top),
                                  "by_contribution": _ranked(contrib[i], names, top)}
        if psi is not None:
            record["by_clip_score"] = _ranked(psi[i], clip_scores.concepts, top)
        record["rankings"] = {key: RANKINGS[key] for key in record if key in RANKINGS}
        if true_concepts is not None:
            record["true_concepts"] = list(true_concepts[i])
        out.append(record)
    return out


def class_top_concepts(weight: torch.Tensor, concepts: Sequence[str], classes: Sequence[str],
                       top: int = 10) -> Dict[str, Any]:
    """Per class, the concepts with the largest final-layer weights (``weight``: (|C|, |D|))."""
    weight = weight.detach()
    return {"ranking": RANKINGS["by_weight"],
            "classes": {name: _ranked(weight[c], concepts, top) for c, name in enumerate(classes)}}


def sample_per_class(labels: np.ndarray, per_class: int, limit: int, seed: int) -> np.ndarray:
    """Up to ``per_class`` seeded test rows of every class (at most ``limit`` in all), in row order."""
    rng = np.random.default_rng(seed)
    picked = []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        picked += list(rng.choice(rows, size=min(per_class, len(rows)), replace=False))
    return np.sort(np.array(picked[:limit], dtype=np.int64))
