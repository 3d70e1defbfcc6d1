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
FORMS = ("paper", "faithful")  # train.form: as published, or CBL unit m tied to concept m and final weights >= 0
FINAL_LAYERS = ("dense", "sparse")  # train.final_layer


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


class Cos3Params(StrictModel):
    cutoff: float = Field(0.45, ge=-1.0, le=1.0)  # Label-free CBM's interpretability cutoff (its default)


class SparseLayerParams(StrictModel):
    """The elastic-net path of the sparse final layer (GLM-SAGA)."""

    alpha: float = Field(0.99, gt=0.0, le=1.0)  # share of l1 in the elastic net
    path_points: int = Field(20, gt=1)  # lambdas from the largest (all weights zero) down
    epsilon: float = Field(1e-3, gt=0.0, lt=1.0)  # the smallest lambda, as a share of the largest
    max_epochs: int = Field(50, gt=0)  # SAGA epochs per lambda at most
    lr: float = Field(0.1, gt=0.0)
    tol: float = Field(1e-4, gt=0.0)
    target_nec: float = Field(5.0, gt=0.0)  # the path point kept: the densest with NEC at most this
    batch_size: int = Field(256, gt=0)


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
    form: Literal[FORMS] = "paper"  # type: ignore[valid-type]
    final_layer: Literal[FINAL_LAYERS] = "dense"  # type: ignore[valid-type]
    cos3: Cos3Params = Cos3Params()
    sparse: SparseLayerParams = SparseLayerParams()
    device: str = Field("cpu", pattern=DEVICE_PATTERN)


FAITHFUL_RELEASED_ERROR = ("train.form: faithful pairs CBL output m with concept m, and the released Gumbel objective "
                           "has no targets to pair: with loss gumbel use train.gumbel.objective: paper.")


def check_combination(loss: str, params: TrainParams) -> None:
    """Settings that are valid alone but not together with ``loss``: a ValueError naming them."""
    get_objective(loss)
    if loss == "gumbel" and params.form == "faithful" and params.gumbel.objective == "released":
        raise ValueError(FAITHFUL_RELEASED_ERROR)
    if loss == "gumbel" and params.form == "faithful" and params.gumbel.hard:
        raise ValueError("train.gumbel.hard is not built for train.form: faithful; use hard: false.")


def resolve_ce_to_cbl(loss: str, setting: str | bool) -> bool:
    """``auto``: the objective's own default (l1: yes, eq. 11; contrastive and gumbel: no, the
    sequential bottleneck); True or False as given."""
    if setting == "auto":
        return get_objective(loss).ce_to_cbl
    return bool(setting)


def objective_label(loss: str, params: TrainParams) -> str:
    """"l1", "contrastive", "gumbel, released objective": how every output names the objective."""
    return get_objective(loss).label(params)
