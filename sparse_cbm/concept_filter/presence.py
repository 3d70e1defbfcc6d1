"""Is a concept present in the data? Label-free CBM's test: the mean of its top-k CLIP
cosine similarities over the training images."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm


def presence_scores(image_embeddings: np.ndarray, concept_embeddings: np.ndarray, top_k: int = 5,
                    batch_size: int = 4096) -> np.ndarray:
    """Mean of the ``top_k`` largest cos(image, concept) per concept, reading images a batch at a time
    (the images x concepts matrix is never held whole)."""
    concepts = F.normalize(torch.as_tensor(np.asarray(concept_embeddings, dtype=np.float32)), dim=1)
    k = min(top_k, len(image_embeddings))
    best = torch.full((k, concepts.shape[0]), -float("inf"))
    for lo in tqdm(range(0, len(image_embeddings), batch_size), desc="presence", unit="batch"):
        images = F.normalize(torch.as_tensor(np.asarray(image_embeddings[lo:lo + batch_size], dtype=np.float32)), dim=1)
        best = torch.cat([best, images @ concepts.T]).topk(k, dim=0).values
    return best.mean(dim=0).numpy()
