"""The trained concept bottleneck as a classifier: class logits FC(CBL(psi)), concept activations S."""

from __future__ import annotations

import torch

from sparse_cbm.bottleneck.model import ConceptBottleneck
from sparse_cbm.classifiers.base import ConceptClassifier, EvaluationInputs, register


class BottleneckClassifier(ConceptClassifier):
    """``concepts``: the full concept list; the classifier's concepts are those its CBL units name."""

    def __init__(self, model: ConceptBottleneck, concepts: list, label: str = "CBM"):
        self.model, self.label = model.eval(), label
        self.concepts = [list(concepts)[int(j)] for j in model.units]

    @torch.inference_mode()
    def concept_activations(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).activations

    @torch.inference_mode()
    def decide(self, activations: torch.Tensor) -> torch.Tensor:
        return self.model.fc(activations)

    @torch.inference_mode()
    def contributions(self, activations: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """weight x activation (standardised for the sparse layer), summing to the logit less its bias."""
        return self.model.fc.contributions(activations, classes)


@register("cbm")
def build(inputs: EvaluationInputs):
    if "cbm" not in inputs.bottlenecks:
        return None
    model, label = inputs.bottlenecks["cbm"]
    return BottleneckClassifier(model, inputs.concepts, label)
