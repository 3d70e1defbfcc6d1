"""Do a model's concepts say what is in the image? Concept AUROC, precision@k, intervention and
deletion, wherever annotations exist. See docs/methods.md#concept-quality.

A bottleneck concept matches an attribute when its normalised text equals the attribute's concept
phrase. Everything is computed a batch of images at a time; the AUROC a block of at most 256
concepts at a time: no N x |D| matrix is ever held.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Sequence

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

from sparse_cbm.classifiers.base import ConceptClassifier, ConceptScorer
from sparse_cbm.classifiers.batched import unit_batches
from sparse_cbm.concepts.text import normalize_concept
from sparse_cbm.datasets.base import Attribute
from sparse_cbm.evaluation.intervention import (POLICIES, check_policies, concept_columns, fit_intervention_values, intervention_curves,
                                                summarize_curves)

DIGITS = 4


@dataclass
class AnnotatedConcepts:
    """Which bottleneck concepts are annotated: concept ``concept_index[i]`` is attribute ``attribute_index[i]``."""

    concept_index: np.ndarray
    attribute_index: np.ndarray
    names: List[str]

    def __len__(self) -> int:
        return len(self.concept_index)


def match_annotations(concepts: Sequence[str], attributes: Sequence[Attribute]) -> AnnotatedConcepts:
    by_phrase: Dict[str, int] = {}
    for k, attribute in enumerate(attributes):
        by_phrase.setdefault(normalize_concept(attribute.concept), k)
    pairs = [(j, by_phrase[normalize_concept(c)]) for j, c in enumerate(concepts) if normalize_concept(c) in by_phrase]
    return AnnotatedConcepts(np.array([j for j, _ in pairs], dtype=np.int64),
                             np.array([a for _, a in pairs], dtype=np.int64), [concepts[j] for j, _ in pairs])


def concept_auroc(scorer: ConceptScorer, embeddings, annotations: np.ndarray, matched: AnnotatedConcepts,
                  batch_size: int = 4096) -> pd.DataFrame:
    """Per annotated bottleneck concept: positives, negatives, and the ROC-AUC of its activation against
    its annotation (None when the test images hold only one of the two)."""
    records = []
    for cols, block in concept_columns(scorer, embeddings, matched.concept_index, batch_size):
        for k, column in zip(range(cols.start, cols.stop), block.T):
            truth = annotations[:, matched.attribute_index[k]]
            positives = int(truth.sum())
            auc = roc_auc_score(truth, column) if 0 < positives < len(truth) else None
            records.append({"concept": matched.names[k], "positives": positives,
                            "negatives": int(len(truth) - positives),
                            "auroc": None if auc is None else round(float(auc), DIGITS)})
    return pd.DataFrame.from_records(records, columns=["concept", "positives", "negatives", "auroc"])


def truth_rows(annotations: np.ndarray, matched: AnnotatedConcepts, rows: slice, num_concepts: int) -> torch.Tensor:
    """(B, |D|) bool: bottleneck concepts annotated true of each image (unannotated ones: False)."""
    truth = np.zeros((rows.stop - rows.start, num_concepts), dtype=bool)
    truth[:, matched.concept_index] = annotations[rows][:, matched.attribute_index]
    return torch.from_numpy(truth)


def top_k_hits(scores: torch.Tensor, truth: torch.Tensor, k: int) -> float:
    """The summed (over the batch) share of each row's k best-scored concepts that are true of it."""
    top = scores.topk(min(k, scores.shape[1]), dim=1).indices
    return float(truth.gather(1, top).float().mean(dim=1).sum())


@torch.inference_mode()
def _deletion_curves(clf: ConceptClassifier, S: torch.Tensor, pred: torch.Tensor, contrib: torch.Tensor,
                     steps: int, generator: torch.Generator) -> Dict[str, np.ndarray]:
    """Summed (over the batch) probability of the predicted class after deleting 0 .. steps concepts,
    in order of contribution and in a random order."""
    rows = torch.arange(len(S))
    orders = {"by_contribution": contrib.argsort(dim=1, descending=True),
              "random": torch.rand(S.shape, generator=generator).argsort(dim=1)}
    out = {}
    for name, order in orders.items():
        changed, curve = S.clone(), np.zeros(steps + 1)
        for t in range(steps + 1):
            if t:
                changed[rows, order[:, t - 1]] = 0.0
            curve[t] = float(clf.decide(changed).softmax(dim=1)[rows, pred].sum())
        out[name] = curve
    return out


def _area(curve: np.ndarray) -> float:
    """Area under a curve over 0 .. steps, as a share of the steps (a probability stays in [0, 1])."""
    return float(np.trapezoid(curve) / max(len(curve) - 1, 1)) if hasattr(np, "trapezoid") \
        else float(np.trapz(curve) / max(len(curve) - 1, 1))


@torch.inference_mode()
def concept_quality(scorer: ConceptScorer, embeddings, labels: np.ndarray, annotations: np.ndarray,
                    matched: AnnotatedConcepts, *, k: int = 3, train_embeddings=None, max_k: int = 10,
                    deletion_steps: int = 20, batch_size: int = 4096, seed: int = 0,
                    policies: Sequence[str] = POLICIES) -> Dict[str, Any]:
    """The metrics of the module docstring for one scorer on one split. Returns a dict with the JSON
    summary (``summary``), the per-concept AUROC table (``auroc``) and the curves (``intervention``:
    accuracy per k, per policy; ``deletion``: mean probability per step, in contribution and random order)."""
    n = len(labels)
    policies = check_policies(policies)  # before any work
    num_concepts = len(scorer.concepts)
    is_classifier = isinstance(scorer, ConceptClassifier)
    values = None
    if is_classifier and train_embeddings is not None and len(matched):
        values = fit_intervention_values(scorer, train_embeddings, matched.concept_index, batch_size)
    steps = min(deletion_steps, num_concepts)
    sums: Dict[str, Any] = {"activation": 0.0, "contribution": 0.0, "random": 0.0,
                            "deletion": {"by_contribution": np.zeros(steps + 1), "random": np.zeros(steps + 1)}}
    generator = torch.Generator().manual_seed(seed)
    for lo, x in unit_batches(embeddings, batch_size):
        rows = slice(lo, lo + len(x))
        S = scorer.concept_activations(x).clone()
        truth = truth_rows(annotations, matched, rows, num_concepts)
        sums["activation"] += top_k_hits(S, truth, k)
        sums["random"] += float(truth.float().mean(dim=1).sum())
        if not is_classifier:
            continue
        pred = scorer.decide(S).argmax(dim=1)
        contrib = scorer.contributions(S, pred)
        sums["contribution"] += top_k_hits(contrib, truth, k)
        for name, curve in _deletion_curves(scorer, S, pred, contrib, steps, generator).items():
            sums["deletion"][name] += curve
    table = concept_auroc(scorer, embeddings, annotations, matched, batch_size) if len(matched) else \
        pd.DataFrame(columns=["concept", "positives", "negatives", "auroc"])
    aurocs = [a for a in table["auroc"] if a is not None and not pd.isna(a)]
    summary: Dict[str, Any] = {
        "annotated_concepts": len(matched),
        "auroc": round(float(np.mean(aurocs)), DIGITS) if aurocs else None,
        "precision_at_k": {"k": k, "by_activation": round(sums["activation"] / max(n, 1), DIGITS),
                           "random_ranking": round(sums["random"] / max(n, 1), DIGITS)},
    }
    curves: Dict[str, Any] = {}
    if is_classifier:
        summary["precision_at_k"]["by_contribution"] = round(sums["contribution"] / max(n, 1), DIGITS)
        deletion = {name: curve / max(n, 1) for name, curve in sums["deletion"].items()}
        summary["deletion"] = {"steps": steps, "auc": round(_area(deletion["by_contribution"]), DIGITS),
                               "random_order_auc": round(_area(deletion["random"]), DIGITS)}
        curves["deletion"] = deletion
        if values is not None:
            curves["intervention"] = intervention_curves(scorer, embeddings, labels, annotations,
                                                         matched.attribute_index, values, max_k, policies,
                                                         batch_size, seed)
            summary["intervention"] = summarize_curves(curves["intervention"], DIGITS)
    return {"summary": summary, "auroc": table, "curves": curves}


def assess_scorers(scorers: Dict[str, ConceptScorer], embeddings, labels: np.ndarray, annotations: np.ndarray,
                   attributes: Sequence[Attribute], train_embeddings=None, **options) -> Dict[str, Any]:
    """``concept_quality`` for every scorer (each matched to the annotations by its own concepts). Returns ``summary``
    (scorer -> metrics), ``auroc`` (one table, with a ``model`` column), ``intervention`` (k and the
    accuracy of every classifier under every policy: columns ``<classifier>_<policy>``) and ``deletion``
    (step, and the curves of every classifier)."""
    summary, tables, intervention, deletion = {}, [], {}, {}
    matched = None
    for name, scorer in scorers.items():
        matched = match_annotations(scorer.concepts, attributes)
        result = concept_quality(scorer, embeddings, labels, annotations, matched,
                                 train_embeddings=train_embeddings, **options)
        summary[name] = result["summary"]
        tables.append(result["auroc"].assign(model=name))
        for policy, curve in result["curves"].get("intervention", {}).items():
            intervention[f"{name}_{policy}"] = curve
        for order, curve in result["curves"].get("deletion", {}).items():
            deletion[f"{name}_{order}"] = curve
    auroc = pd.concat(tables, ignore_index=True)[["model", "concept", "positives", "negatives", "auroc"]]
    curves = {"intervention": pd.DataFrame({"k": np.arange(len(next(iter(intervention.values())))), **intervention})
              if intervention else None,
              "deletion": pd.DataFrame({"step": np.arange(len(next(iter(deletion.values())))), **deletion})
              if deletion else None}
    return {"summary": summary, "auroc": auroc, "annotated_concepts": matched.names, **curves}
