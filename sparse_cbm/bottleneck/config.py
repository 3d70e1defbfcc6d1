"""The training configuration: the ``train:`` section of params.yaml, with every default.

The library owns this schema; ``sparse_cbm.params`` composes it into the whole file.
Choices (objectives, Gumbel forms, tau schedules, optimizers) come from the modules
that implement them, so a name is defined once.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

from sparse_cbm.bottleneck.objectives import OBJECTIVES, get_objective
from sparse_cbm.bottleneck.objectives.gumbel import GUMBEL_FORMS, RELEASED_HARD_ERROR, TAU_SCHEDULES
from sparse_cbm.bottleneck.optim import LR_SCHEDULES, OPTIMIZERS
from sparse_cbm.runtime.device import DEVICE_PATTERN
from sparse_cbm.runtime.schema import StrictModel

LOSSES = tuple(OBJECTIVES)


class GumbelParams(StrictModel):
    tau_start: float = Field(1.0, gt=0)
    tau_end: float = Field(0.5, gt=0)
    schedule: Literal[tuple(TAU_SCHEDULES)] = "exponential"  # type: ignore[valid-type]
    hard: bool = False
    objective: Literal[tuple(GUMBEL_FORMS)] = "paper"  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _released_hard_is_undefined(self) -> "GumbelParams":
        if self.hard and self.objective == "released":
            raise ValueError(RELEASED_HARD_ERROR)
        return self


class OptimizerParams(StrictModel):
    optimizer: Literal[tuple(OPTIMIZERS)] = "adam"  # type: ignore[valid-type]
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)


class EarlyStoppingParams(StrictModel):
    patience: Optional[int] = Field(None, gt=0)


class TrainParams(StrictModel):
    epochs: int = Field(20, gt=0)
    batch_size: int = Field(256, gt=1)
    ce_to_cbl: Literal["auto", True, False] = "auto"
    log_alpha: float = 2.659
    l1_lambda: float = Field(1e-3, ge=0)
    gumbel: GumbelParams = GumbelParams()
    cbl: OptimizerParams = OptimizerParams()
    fc: OptimizerParams = OptimizerParams(lr=1e-2)
    clip_grad_norm: Optional[float] = Field(None, gt=0)
    lr_schedule: Literal[LR_SCHEDULES] = "constant"  # type: ignore[valid-type]
    early_stopping: EarlyStoppingParams = EarlyStoppingParams()
    keep: Literal["best", "final"] = "best"
    device: str = Field("cpu", pattern=DEVICE_PATTERN)


def resolve_ce_to_cbl(loss: str, setting: str | bool) -> bool:
    """``auto``: the objective's own default (l1: yes, eq. 11; contrastive and gumbel: no, the
    sequential bottleneck); True or False as given."""
    if setting == "auto":
        return get_objective(loss).ce_to_cbl
    return bool(setting)


def objective_label(loss: str, params: TrainParams) -> str:
    """"l1", "contrastive", "gumbel, released objective": how every output names the objective."""
    return get_objective(loss).label(params)
