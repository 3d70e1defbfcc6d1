"""Concept interventions (Koh et al., *Concept Bottleneck Models*, ICML 2020): set chosen concept
activations of an image to "present" or "absent" (the 95th and 5th percentiles of their train
activations) and decide again; the intervention curve. See docs/methods.md#concept-quality.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Sequence

import numpy as np
import torch

from sparse_cbm.classifiers.base import ConceptClassifier, ConceptScorer
from sparse_cbm.classifiers.batched import unit_batches

PERCENTILES = (5.0, 95.0)


@dataclass
class InterventionValues:
    concept_index: np.ndarray  # (M,) bottleneck indices these values are for
    absent: np.ndarray  # (M,) 5th percentile of each concept's activation on train
    present: np.ndarray  # (M,) 95th percentile


def concept_columns(scorer: ConceptScorer, embeddings, concept_index: np.ndarray, batch_size: int = 4096,
                    chunk: int = 256):
    """Yield (column slice, float32 (N, <=chunk) activations of those concepts over every image): a
    block of concepts at a time, so that no N x |D| matrix is ever held."""
    concept_index = np.asarray(concept_index, dtype=np.int64)
    for lo in range(0, len(concept_index), chunk):
        cols = torch.from_numpy(concept_index[lo:lo + chunk])
        out = np.empty((len(embeddings), len(cols)), dtype=np.float32)
        for first, x in unit_batches(embeddings, batch_size):
            out[first:first + len(x)] = scorer.concept_activations(x)[:, cols].numpy()
        yield slice(lo, lo + len(cols)), out


def fit_intervention_values(scorer: ConceptScorer, train_embeddings, concept_index: Sequence[int],
                            batch_size: int = 4096, percentiles=PERCENTILES) -> InterventionValues:
    """The 5th and 95th percentiles of every listed concept's activation over the training images."""
    index = np.asarray(concept_index, dtype=np.int64)
    absent, present = np.empty(len(index), np.float32), np.empty(len(index), np.float32)
    for cols, block in concept_columns(scorer, train_embeddings, index, batch_size):
        low, high = np.percentile(block, percentiles, axis=0)
        absent[cols], present[cols] = low, high
    return InterventionValues(index, absent, present)


@torch.inference_mode()
def intervene(classifier: ConceptClassifier, activations: torch.Tensor, settings: Dict[int, bool],
              values: InterventionValues) -> torch.Tensor:
    """Logits after setting, in every row of ``activations`` (B, |D|), each concept ``m`` of
    ``settings`` (bottleneck index -> present?) to its present or absent value."""
    where = {int(m): k for k, m in enumerate(values.concept_index)}
    missing = [m for m in settings if m not in where]
    if missing:
        raise ValueError(f"no intervention values for concepts {missing}: fit them for those concepts")
    changed = activations.clone()
    for m, present in settings.items():
        changed[:, m] = float(values.present[where[m]] if present else values.absent[where[m]])
    return classifier.decide(changed)


@torch.inference_mode()
def corrected_accuracy(classifier: ConceptClassifier, activations: torch.Tensor, labels: torch.Tensor,
                       truth: torch.Tensor, values: InterventionValues, max_k: int) -> np.ndarray:
    """Correct predictions of a batch for k = 0 .. max_k corrections: (max_k + 1,) int counts.

    ``truth`` (B, M) bool: the annotation of each concept of ``values``. An image's concepts are
    corrected in order of disagreement: (mid - a) / (present - absent) for an annotated-present
    concept, (a - mid) / (present - absent) for an absent one, mid = (present + absent) / 2; only
    those that disagree (> 0).
    """
    index = torch.from_numpy(values.concept_index)
    absent, present = torch.from_numpy(values.absent), torch.from_numpy(values.present)
    span = (present - absent).clamp_min(1e-6)
    current = activations[:, index]
    mid = (present + absent) / 2
    disagreement = torch.where(truth, (mid - current) / span, (current - mid) / span)
    order = disagreement.argsort(dim=1, descending=True)
    target = torch.where(truth, present, absent)
    counts = np.zeros(max_k + 1, dtype=np.int64)
    changed = activations.clone()
    rows = torch.arange(len(activations))
    for k in range(max_k + 1):
        if k:
            if k > order.shape[1]:
                counts[k] = counts[k - 1]
                continue
            j = order[:, k - 1]
            disagrees = disagreement[rows, j] > 0
            cols = index[j]
            changed[rows[disagrees], cols[disagrees]] = target[rows, j][disagrees]
        counts[k] = int((classifier.decide(changed).argmax(dim=1) == labels).sum())
    return counts
