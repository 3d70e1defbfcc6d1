"""A planted-concept simulator of CLIP embeddings, where the true class -> concept structure is known.

Each concept j has a latent direction z_j. A class owns ``concepts_per_class``
concepts. An image of class c shows each of its class's concepts with probability
``presence`` (at least one), and any other concept with probability ``distractor``;
its embedding is the sum of the shown concepts' directions plus Gaussian noise.
Like CLIP, the two modalities live in different cones (the *modality gap*): every
image embedding is shifted along one fixed direction, every text embedding along
another, before normalising, so image-text cosines are small and all of one sign
while their ranking still carries the signal.

Tests, evaluation and benchmarks use it to check that a method finds planted concepts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Tuple

import numpy as np


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@dataclass
class PlantedWorld:
    latent: np.ndarray  # (|D|, d) concept directions
    image_gap: np.ndarray  # (d,)
    text_gap: np.ndarray  # (d,)
    class_concepts: np.ndarray  # (|C|, |D|) bool: the concepts each class owns
    gap: float
    noise: float
    presence: float
    distractor: float
    logit_scale: float = 100.0

    @property
    def concept_text(self) -> np.ndarray:
        """Text embeddings of the concepts, (|D|, d) float32."""
        return _unit(_unit(self.latent) + self.gap * self.text_gap).astype(np.float32)

    @property
    def class_text(self) -> np.ndarray:
        """Text embeddings of the class prompts: the sum of the class's concepts, (|C|, d)."""
        return _unit(_unit(self.class_concepts @ self.latent) + self.gap * self.text_gap).astype(np.float32)

    def images(self, labels: np.ndarray, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
        """(embeddings (N, d) float32, shown concepts (N, |D|) bool) for images of the given classes."""
        own = self.class_concepts[labels]
        shown = np.where(own, rng.random(own.shape) < self.presence, rng.random(own.shape) < self.distractor)
        none = ~(shown & own).any(axis=1)
        if none.any():  # every image shows at least one concept of its class
            first = own[none].argmax(axis=1)
            shown[np.flatnonzero(none), first] = True
        latent = shown.astype(np.float32) @ self.latent
        latent += self.noise * rng.standard_normal(latent.shape).astype(np.float32)
        return _unit(_unit(latent) + self.gap * self.image_gap).astype(np.float32), shown

    def split(self, n: int, seed: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(embeddings, labels, shown concepts) of n images, classes balanced and shuffled."""
        rng = np.random.default_rng(seed)
        labels = rng.permutation(np.arange(n) % len(self.class_concepts)).astype(np.int64)
        emb, shown = self.images(labels, rng)
        return emb, labels, shown


def planted_world(num_classes: int = 10, num_concepts: int = 60, concepts_per_class: int = 4, dim: int = 64,
                  noise: float = 0.3, presence: float = 0.7, distractor: float = 0.02, gap: float = 1.5,
                  seed: int = 0) -> PlantedWorld:
    """A world of random concept directions; class c owns ``concepts_per_class`` distinct concepts
    (concepts beyond ``num_classes * concepts_per_class`` belong to no class)."""
    if num_classes * concepts_per_class > num_concepts:
        raise ValueError(f"num_concepts ({num_concepts}) must be at least num_classes x concepts_per_class "
                         f"({num_classes * concepts_per_class})")
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((num_concepts, dim)).astype(np.float32)
    shared = _unit(rng.standard_normal(dim))  # the two cones are near each other: image-text cosines > 0
    gaps = _unit(_unit(rng.standard_normal((2, dim))) + 1.5 * shared)
    owned = rng.permutation(num_concepts)[:num_classes * concepts_per_class].reshape(num_classes, concepts_per_class)
    class_concepts = np.zeros((num_classes, num_concepts), dtype=bool)
    np.put_along_axis(class_concepts, owned, True, axis=1)
    return PlantedWorld(latent=latent, image_gap=gaps[0], text_gap=gaps[1], class_concepts=class_concepts, gap=gap,
                        noise=noise, presence=presence, distractor=distractor)


def write_planted_npy(path: str | Path, world: PlantedWorld, n: int, seed: int,
                      chunk: int = 16384) -> np.ndarray:
    """Write n simulated image embeddings as a float16 .npy (what the image cache holds), a chunk at a
    time so memory stays bounded; return the labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(world.class_concepts), size=n).astype(np.int64)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(n, world.latent.shape[1]))
    for lo in range(0, n, chunk):
        out[lo:lo + chunk] = world.images(labels[lo:lo + chunk], rng)[0]
    out.flush()
    del out
    return labels
