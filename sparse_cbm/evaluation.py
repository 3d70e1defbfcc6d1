"""Pieces of the evaluation that are not classifiers: the sample of images to explain,
explanation faithfulness against known attributes, and the PCA map of the embeddings."""

from __future__ import annotations

from typing import Dict, Sequence

import numpy as np
import pandas as pd
import torch.nn.functional as F
import torch

from sparse_cbm.explain import top_concept_indices
from sparse_cbm.model import ConceptBottleneck


def sample_per_class(labels: np.ndarray, per_class: int, limit: int, seed: int) -> np.ndarray:
    """Up to ``per_class`` seeded test rows of every class (at most ``limit`` in all), in row order."""
    rng = np.random.default_rng(seed)
    picked = []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        picked += list(rng.choice(rows, size=min(per_class, len(rows)), replace=False))
    return np.sort(np.array(picked[:limit], dtype=np.int64))


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


def embedding_map(images, labels: np.ndarray, concept_emb: np.ndarray, class_emb: np.ndarray,
                  concepts: Sequence[str], classes: Sequence[str], n_images: int, seed: int) -> pd.DataFrame:
    """2-D PCA of a seeded sample of normalised image embeddings with all concept and class embeddings."""
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(labels), size=min(n_images, len(labels)), replace=False))
    parts = [np.asarray(images[rows], dtype=np.float32), np.asarray(concept_emb, dtype=np.float32),
             np.asarray(class_emb, dtype=np.float32)]
    x = F.normalize(torch.from_numpy(np.concatenate(parts)), dim=1).double()
    x = x - x.mean(dim=0)
    _, _, v = torch.linalg.svd(x, full_matrices=False)
    xy = (x @ v[:2].T).numpy()
    xy *= np.sign(xy[np.abs(xy).argmax(axis=0), range(2)])  # a fixed orientation for each axis
    kinds = ["image"] * len(rows) + ["concept"] * len(concepts) + ["class"] * len(classes)
    label = [classes[int(labels[r])] for r in rows] + list(concepts) + list(classes)
    return pd.DataFrame({"kind": kinds, "label": label, "x": xy[:, 0], "y": xy[:, 1]})
