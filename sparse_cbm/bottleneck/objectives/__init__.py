"""The CBL's objectives, looked up by name (the top-level param ``loss``).

Each objective is one module of this package that registers an ``Objective``: a
function of a batch's ``BottleneckOutput`` and the step's context (the model, the
training params, the Gumbel temperature, the random generator) that returns the
CBL's own loss. The trainer adds the cross-entropy of the logits. Adding an
objective is adding a module and its import line below. ``OBJECTIVES`` is a
``sparse_cbm.runtime.registry.Registry``: registration order is the order of the
``loss`` choices.

This package does not import ``sparse_cbm.bottleneck.config`` (config imports it for
the choices): ``params`` below is that module's ``TrainParams``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import torch

from sparse_cbm.bottleneck.model import BottleneckOutput, ConceptBottleneck
from sparse_cbm.runtime.registry import Registry


class StepContext(NamedTuple):
    model: ConceptBottleneck
    params: Any  # sparse_cbm.bottleneck.config.TrainParams
    tau: float  # Gumbel temperature at this step (unused by the other objectives)
    generator: torch.Generator


LossFn = Callable[[BottleneckOutput, StepContext], torch.Tensor]


@dataclass(frozen=True)
class Objective:
    name: str
    loss: LossFn
    ce_to_cbl: bool  # with train.ce_to_cbl: auto, does the cross-entropy's gradient reach W_CBL?
    summary: str  # one line describing the objective (nothing reads it at present)

    def label(self, params: Any) -> str:
        """How the report names the objective: the loss, and the Gumbel form where it has one."""
        if self.name == "gumbel":
            return f"gumbel, {params.gumbel.objective} objective"
        return self.name


OBJECTIVES: Registry[Objective] = Registry("loss")


def register(name: str, *, ce_to_cbl: bool, summary: str) -> Callable[[LossFn], LossFn]:
    """Decorator: register ``fn`` as the objective ``name`` (``OBJECTIVES.add``)."""
    def add(fn: LossFn) -> LossFn:
        OBJECTIVES.add(name, Objective(name, fn, ce_to_cbl, summary))
        return fn
    return add


def get_objective(name: str) -> Objective:
    """The objective called ``name``; the registry's ValueError (the known ones, the closest) otherwise."""
    return OBJECTIVES.get(name)


# the order here is the order of the `loss` choices and of the compare grid
from sparse_cbm.bottleneck.objectives import l1, contrastive, gumbel, cos3  # noqa: E402,F401
