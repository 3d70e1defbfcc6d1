"""One protocol for every classifier, and the registry the evaluate stage loops over.

A ``Classifier`` scores every class for a batch of unit-norm image embeddings
(``class_scores``); ``predict`` turns that into top-1 and top-k class indices over a
whole split, a batch at a time, the same way for every method. Classifiers that go
through concepts also give per-image concept activations (``ConceptClassifier``), which
the concept-quality metrics read.

Each method is a module of this package that registers a builder: a function of the
``EvaluationInputs`` (caches, trained models, train/val splits, options) that returns
a ready classifier (a linear probe is fitted there). Adding a method is adding a
module and its import line in ``sparse_cbm/classifiers/__init__.py``.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
import torch

from sparse_cbm.classifiers.batched import Predictions, predict_batches
from sparse_cbm.runtime.registry import Registry


class Classifier(abc.ABC):
    """Scores of every class for a batch of images."""

    label: str = ""  # how reports name the method

    @abc.abstractmethod
    def class_scores(self, x: torch.Tensor) -> torch.Tensor:
        """(B, |C|) scores for a float32 batch of unit-norm image embeddings (B, d); larger is more likely."""

    def predict(self, embeddings, batch_size: int = 4096, k: int = 5) -> Predictions:
        """(top-1 int64 (N,), top-k int64 (N, min(k, |C|)) or None for k <= 1) class indices, read
        ``batch_size`` rows at a time (arrays, memory maps or ``NpyRows``)."""
        return predict_batches(embeddings, self.class_scores, batch_size, k)


class ConceptScorer(abc.ABC):
    """Anything that gives every image an activation per named concept (CLIP's own scores, a CBM's
    bottleneck): what the concept-quality metrics read."""

    concepts: list
    label: str = ""

    @abc.abstractmethod
    def concept_activations(self, x: torch.Tensor) -> torch.Tensor:
        """(B, |D|) activation of every concept for a batch of unit-norm image embeddings."""


class ConceptClassifier(Classifier, ConceptScorer):
    """A classifier that decides through named concepts: logits = decide(activations), and each
    concept's contribution to a class can be read off (what interventions and deletions act on)."""

    @abc.abstractmethod
    def decide(self, activations: torch.Tensor) -> torch.Tensor:
        """(B, |C|) logits from (B, |D|) concept activations."""

    @abc.abstractmethod
    def contributions(self, activations: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """(B, |D|) contribution of every concept to class ``classes[i]`` of image i: the logit is their
        sum (plus the class's bias, if the final layer has one)."""

    def class_scores(self, x: torch.Tensor) -> torch.Tensor:
        return self.decide(self.concept_activations(x))


@dataclass
class EvaluationInputs:
    """What a classifier may be built from."""

    concepts: list  # the bottleneck's concepts, in order
    classes: list
    concept_embeddings: np.ndarray  # (|D|, d) CLIP text embeddings of the concepts
    class_embeddings: np.ndarray  # (|C|, d) unit class embeddings (template ensemble)
    description_embeddings: np.ndarray  # (P, d) "{class}, which has {concept}"
    description_class: np.ndarray  # (P,) class index of each description
    train: Tuple[Any, np.ndarray]  # (embeddings, labels)
    val: Tuple[Any, np.ndarray]
    bottlenecks: Dict[str, Any] = field(default_factory=dict)  # name -> trained ConceptBottleneck
    options: Dict[str, Any] = field(default_factory=dict)  # per-method options, e.g. options["linear_probe"]
    seed: int = 0


Builder = Callable[[EvaluationInputs], Optional[Classifier]]
CLASSIFIERS: Registry[Builder] = Registry("classifier")


def register(name: str) -> Callable[[Builder], Builder]:
    """Register ``builder(inputs) -> Classifier`` (or None when the inputs do not allow it) as ``name``."""
    return CLASSIFIERS.register(name)


def build_classifiers(inputs: EvaluationInputs) -> Dict[str, Classifier]:
    """Every registered classifier that the inputs allow, in registry order."""
    built = {name: build(inputs) for name, build in CLASSIFIERS.items()}
    return {name: clf for name, clf in built.items() if clf is not None}
