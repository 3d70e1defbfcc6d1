"""Concept interventions (Koh et al., *Concept Bottleneck Models*, ICML 2020): set chosen concept
activations of an image to "present" or "absent" (the 95th and 5th percentiles of their train
activations) and decide again; the intervention curve, under three orders of choosing concepts
(``POLICIES``, after Shin et al., *A Closer Look at the Intervention Procedure of Concept
Bottleneck Models*, ICML 2023). See docs/methods.md#interventions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence

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


# evaluate.concept_quality.intervention_policies -> the order in which a person checks an image's
# annotated concepts (docs/methods.md#interventions); in this order they are reported
POLICIES = ("worst_first", "contribution", "random")


def _disagreement(current: torch.Tensor, truth: torch.Tensor, values: InterventionValues) -> torch.Tensor:
    """(B, M): how far each concept is on the wrong side of the midpoint between its absent and
    present values, in units of their distance (> 0: the concept contradicts its annotation)."""
    absent, present = torch.from_numpy(values.absent), torch.from_numpy(values.present)
    span = (present - absent).clamp_min(1e-6)
    mid = (present + absent) / 2
    return torch.where(truth, (mid - current) / span, (current - mid) / span)


def check_policies(policies: Sequence[str]) -> List[str]:
    """The policies, checked: at least one, each known, none twice."""
    unknown = [p for p in policies if p not in POLICIES]
    if unknown:
        raise ValueError(f"unknown intervention policy {unknown[0]!r}; use one of: {', '.join(POLICIES)}")
    if not policies or len(set(policies)) != len(policies):
        raise ValueError(f"intervention policies must be distinct and at least one, got {list(policies)}")
    return list(policies)


def inspection_order(policy: str, classifier: ConceptClassifier, activations: torch.Tensor, truth: torch.Tensor,
                     values: InterventionValues, generator: torch.Generator) -> torch.Tensor:
    """(B, M) column order of ``values.concept_index`` in which each image's concepts are checked:

    * ``worst_first``: the most wrong first, greedily by ``_disagreement``: it reads the annotations,
      as a person who checks the concepts against the truth would (close to Shin et al.'s loss-based
      criterion); greedy, not optimal: correcting the most wrong concept need not help the decision;
    * ``contribution``: the concepts the explanation cites first, by |contribution| to the predicted
      class (it needs no annotation: close to Shin et al.'s CCTP); concepts of equal contribution (a
      sparse layer's many zeros) come in a seeded random order, not the concept list's;
    * ``random``: a seeded random order (Koh et al.; CEM's random policy).
    """
    index = torch.from_numpy(values.concept_index)
    if policy == "worst_first":
        return _disagreement(activations[:, index], truth, values).argsort(dim=1, descending=True, stable=True)
    if policy == "contribution":
        pred = classifier.decide(activations).argmax(dim=1)
        cited = classifier.contributions(activations, pred)[:, index].abs()
        shuffled = torch.rand(truth.shape, generator=generator).argsort(dim=1)  # ties in a random order
        by_contribution = cited.gather(1, shuffled).argsort(dim=1, descending=True, stable=True)
        return shuffled.gather(1, by_contribution)
    if policy == "random":
        return torch.rand(truth.shape, generator=generator).argsort(dim=1)
    raise ValueError(f"unknown intervention policy {policy!r}; use one of: {', '.join(POLICIES)}")


@torch.inference_mode()
def corrected_accuracy(classifier: ConceptClassifier, activations: torch.Tensor, labels: torch.Tensor,
                       truth: torch.Tensor, values: InterventionValues, max_k: int,
                       order: torch.Tensor | None = None) -> np.ndarray:
    """Correct predictions of a batch after checking k = 0 .. max_k concepts: (max_k + 1,) int counts.

    ``truth`` (B, M) bool: the annotation of each concept of ``values``; ``order`` (B, M): the
    order each image's concepts are checked in (``inspection_order``; default worst first). A
    checked concept that contradicts its annotation (``_disagreement`` > 0) is set to its present
    or absent value; one that agrees is left as it is.
    """
    index = torch.from_numpy(values.concept_index)
    disagreement = _disagreement(activations[:, index], truth, values)
    if order is None:
        order = disagreement.argsort(dim=1, descending=True, stable=True)
    target = torch.where(truth, torch.from_numpy(values.present), torch.from_numpy(values.absent))
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


@torch.inference_mode()
def intervention_curves(classifier: ConceptClassifier, embeddings, labels: np.ndarray, annotations: np.ndarray,
                        attribute_index: np.ndarray, values: InterventionValues, max_k: int,
                        policies: Sequence[str] = POLICIES, batch_size: int = 4096,
                        seed: int = 0) -> Dict[str, np.ndarray]:
    """Accuracy after checking k = 0 .. max_k concepts, per policy: {policy: (max_k + 1,) float}.

    Concept ``values.concept_index[m]`` is annotated by column ``attribute_index[m]`` of
    ``annotations`` (N, A). A batch of images at a time: memory is bounded by ``batch_size``."""
    policies = check_policies(policies)
    labels_t = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    generator = torch.Generator().manual_seed(seed)
    counts = {policy: np.zeros(max_k + 1, dtype=np.int64) for policy in policies}
    for lo, x in unit_batches(embeddings, batch_size):
        rows = slice(lo, lo + len(x))
        S = classifier.concept_activations(x).clone()
        truth = torch.from_numpy(np.ascontiguousarray(annotations[rows][:, attribute_index], dtype=bool))
        for policy in policies:
            order = inspection_order(policy, classifier, S, truth, values, generator)
            counts[policy] += corrected_accuracy(classifier, S, labels_t[rows], truth, values, max_k, order)
    n = max(len(labels_t), 1)
    return {policy: c / n for policy, c in counts.items()}


def summarize_curves(curves: Dict[str, np.ndarray], digits: int = 4) -> Dict[str, object]:
    """The JSON summary of ``intervention_curves``: accuracy at k = 0, and per policy the gain at
    k = 5 (or the last k, when fewer)."""
    if not curves:
        raise ValueError("no intervention curves to summarise: name at least one policy")
    some = next(iter(curves.values()))
    max_k = len(some) - 1
    gain_k = min(5, max_k)
    return {"accuracy_at_0": round(float(some[0]), digits), "max_k": max_k, "policies": list(curves),
            f"gain_at_{gain_k}": {policy: round(float(c[gain_k] - c[0]), digits) for policy, c in curves.items()}}
