"""Explaining a trained bottleneck's decisions.

For an image: the concepts with the largest CBL activations, the concepts with the
largest raw CLIP scores (psi), and the concepts that contributed most to the decision,
W_FC[c, m] * a_m for the predicted class c. For a class: the concepts with the largest
FC weights.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence

import numpy as np
import torch

from sparse_cbm.bottleneck.model import ConceptBottleneck


def _ranked(values: torch.Tensor, names: Sequence[str], top: int) -> List[Dict[str, Any]]:
    order = values.argsort(descending=True)[:top]
    return [{"concept": names[int(j)], "value": round(float(values[j]), 4)} for j in order]


@torch.no_grad()
def explain_images(model: ConceptBottleneck, image_embeddings: np.ndarray, concepts: Sequence[str],
                   classes: Sequence[str], top: int = 10) -> List[Dict[str, Any]]:
    """Per image: predicted class, top concepts by CBL activation, by raw CLIP score, and by
    contribution W_FC[c, m] * a_m to the predicted class c."""
    x = torch.from_numpy(np.asarray(image_embeddings, dtype=np.float32))
    psi, S, logits = model(x)
    out = []
    for i in range(len(x)):
        c = int(logits[i].argmax())
        contributions = model.fc.weight[c] * S[i]
        out.append({"predicted": classes[c], "predicted_index": c,
                    "by_activation": _ranked(S[i], concepts, top), "by_clip_score": _ranked(psi[i], concepts, top),
                    "by_contribution": _ranked(contributions, concepts, top)})
    return out


def class_top_concepts(model: ConceptBottleneck, concepts: Sequence[str], classes: Sequence[str],
                       top: int = 10) -> Dict[str, List[Dict[str, Any]]]:
    """Per class, the concepts with the largest FC weights."""
    weight = model.fc.weight.detach()
    return {name: _ranked(weight[c], concepts, top) for c, name in enumerate(classes)}


@torch.no_grad()
def top_concept_indices(model: ConceptBottleneck, embeddings, k: int, batch_size: int = 1024) -> Dict[str, np.ndarray]:
    """For every image, the indices of its k top concepts by raw CLIP score, by CBL activation
    and by contribution to the predicted class (for faithfulness against known attributes)."""
    found: Dict[str, list] = {"clip_score": [], "activation": [], "contribution": []}
    for lo in range(0, len(embeddings), batch_size):
        x = torch.from_numpy(np.asarray(embeddings[lo:lo + batch_size], dtype=np.float32))
        psi, S, logits = model(x)
        contrib = model.fc.weight[logits.argmax(dim=1)] * S
        for key, values in (("clip_score", psi), ("activation", S), ("contribution", contrib)):
            found[key].append(values.topk(k, dim=1).indices.numpy())
    return {key: np.concatenate(v) for key, v in found.items()}


def sample_per_class(labels: np.ndarray, per_class: int, limit: int, seed: int) -> np.ndarray:
    """Up to ``per_class`` seeded test rows of every class (at most ``limit`` in all), in row order."""
    rng = np.random.default_rng(seed)
    picked = []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        picked += list(rng.choice(rows, size=min(per_class, len(rows)), replace=False))
    return np.sort(np.array(picked[:limit], dtype=np.int64))
