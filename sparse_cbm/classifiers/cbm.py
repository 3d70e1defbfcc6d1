"""The trained concept bottleneck as a classifier: class logits FC(CBL(psi)), concept activations S."""

from __future__ import annotations

import torch

from sparse_cbm.bottleneck.model import ConceptBottleneck
from sparse_cbm.classifiers.base import ConceptClassifier, EvaluationInputs, register


class BottleneckClassifier(ConceptClassifier):
    def __init__(self, model: ConceptBottleneck, concepts: list, label: str = "CBM"):
        self.model, self.concepts, self.label = model.eval(), list(concepts), label

    @torch.inference_mode()
    def concept_activations(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).activations

    @torch.inference_mode()
    def decide(self, activations: torch.Tensor) -> torch.Tensor:
        return self.model.fc(activations)

    @torch.inference_mode()
    def contributions(self, activations: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """W_FC[c, m] * a_m: the FC has no bias, so they sum to the logit of c."""
        return self.model.fc.weight[classes] * activations


@register("cbm")
def build(inputs: EvaluationInputs):
    if "cbm" not in inputs.bottlenecks:
        return None
    model, label = inputs.bottlenecks["cbm"]
    return BottleneckClassifier(model, inputs.concepts, label)
