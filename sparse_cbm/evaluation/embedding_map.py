"""The PCA map of image, concept and class embeddings (the paper's fig. 11)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F


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
