"""The training configuration: the ``train:`` section of params.yaml, with every default.

The library owns this schema; ``sparse_cbm_app.params`` composes it into the whole file.
Choices (objectives, Gumbel forms, tau schedules, optimizers) come from the modules
that implement them, so a name is defined once.
"""

from __future__ import annotations

from typing import Any, Dict, Literal, Optional, Union

from pydantic import Field, field_validator, model_validator

from sparse_cbm.bottleneck.objectives import OBJECTIVES, get_objective
from sparse_cbm.bottleneck.objectives.gumbel import (FAITHFUL_RELEASED_ERROR, GUMBEL_FORMS, RELEASED_HARD_ERROR,
                                                     TAU_SCHEDULES)
from sparse_cbm.bottleneck.optim import LR_SCHEDULES, OPTIMIZERS
from sparse_cbm.bottleneck.sparse_layer import SCALE_CHOICES, SOLVERS
from sparse_cbm.runtime.device import DEVICE_PATTERN
from sparse_cbm.runtime.schema import StrictModel

LOSSES = tuple(OBJECTIVES)
FORMS = ("paper", "faithful")  # train.form: as published, or CBL unit m tied to concept m and final weights >= 0
FINAL_LAYERS = ("dense", "sparse")  # train.final_layer
MAX_NEC_FACTOR = 1.5  # a path stops after its first point with NEC above this many times the target


class GumbelParams(StrictModel):
    tau_start: float = Field(1.0, gt=0, description="temperature at the first step")
    tau_end: float = Field(0.5, gt=0, description="temperature at the last step")
    schedule: Literal[tuple(TAU_SCHEDULES)] = Field(  # type: ignore[valid-type]
        "exponential", description="how tau goes from `tau_start` to `tau_end`")
    hard: bool = Field(False, description="straight-through one-hot samples (not with `objective: released`, nor "
                                          "with `train.form: faithful`)")
    objective: Literal[tuple(GUMBEL_FORMS)] = Field(  # type: ignore[valid-type]
        "paper", description="`paper` (eq. 10) or `released`, the authors' code: both axes, independent noise, no "
        "alpha, no targets (docs/methods.md#gumbel)")

    @model_validator(mode="after")
    def _released_hard_is_undefined(self) -> "GumbelParams":
        if self.hard and self.objective == "released":
            raise ValueError(RELEASED_HARD_ERROR)
        return self


class OptimizerParams(StrictModel):
    optimizer: Literal[tuple(OPTIMIZERS)] = Field(  # type: ignore[valid-type]
        "adam", description="the layer's optimizer")
    lr: float = Field(1e-3, gt=0, description="its learning rate")
    weight_decay: float = Field(0.0, ge=0, description="its weight decay")


class Cos3Params(StrictModel):
    cutoff: float = Field(0.45, ge=-1.0, le=1.0, description="Label-free CBM's interpretability cutoff (its 0.45): "
                                                             "after training, drop units whose similarity to their "
                                                             "concept on val is below this")


class SparseLayerParams(StrictModel):
    """The elastic-net path of the sparse final layer (GLM-SAGA)."""

    alpha: float = Field(0.99, gt=0.0, le=1.0, description="share of l1 in the elastic net")
    path_points: int = Field(20, gt=1, description="lambdas, from the largest (every weight zero) down")
    epsilon: float = Field(1e-3, gt=0.0, lt=1.0, description="the smallest lambda, as a share of the largest")
    max_epochs: int = Field(50, gt=0, description="glm-saga epochs per lambda at most (1000 with `tol` 1e-6 "
                                                  "converges, at about 8x the time)")
    lr: float = Field(0.1, gt=0.0, description="glm-saga's step size")
    tol: float = Field(1e-4, gt=0.0, description="glm-saga stops a lambda when a step moves the weights by at most "
                                                 "this")
    target_nec: float = Field(5.0, gt=0.0, description="the path point kept: the densest whose NEC (non-zero weights "
                                                       "per class) is at most this; the path stops past 1.5x it")
    batch_size: int = Field(256, gt=0, description="rows per SAGA step")
    lam: Optional[float] = Field(None, gt=0.0, description="Label-free CBM's single lambda (its `--lam`, 0.0007): "
                                 "fit lam / alpha only, as its glm_saga(epsilon=1, k=1) call, and keep that point "
                                 "whatever its NEC; `null`: the path, kept at `target_nec`")
    shared_concepts: Union[int, str, None] = Field(
        "auto", description="at most this many concepts for all classes, chosen first by a group lasso path "
        "(glm-saga's `group`: a concept's weights over the classes share one l2 norm), so that concepts the classes "
        "share win over one concept a class; `auto`: as many as classes for the faithful form's units (CLIP's "
        "concept scores), off for the paper's form and SALF-CBM's maps; `null`: off "
        "(docs/methods.md#concepts-shared-by-the-classes)")

    @field_validator("shared_concepts", mode="before")
    @classmethod
    def _shared_concepts(cls, v: Any) -> Any:
        if isinstance(v, str) and v.strip().isdigit():  # `dvc exp run -S ...=20` may leave text
            v = int(v)
        if v is None or v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
            return v
        raise ValueError("must be 'auto' (one concept a class for the faithful form), a positive number of "
                         "concepts, or null (off)")
    solver: Literal[SOLVERS] = Field(  # type: ignore[valid-type]
        "fast", description="who runs the SAGA epochs: `fast` (glm-saga's algorithm with its gradients as matrix "
        "products, the same iterates up to rounding) | `glm-saga` (its own loop, the reference)")
    scale: Literal[SCALE_CHOICES] = Field(  # type: ignore[valid-type]
        "auto", description="`concept`: each activation divided by its own spread on train (glm-saga's and "
        "LF-CBM's standardisation); `shared`: all by their mean spread, so that of two concepts that separate the "
        "classes alike the one whose CLIP score moves more wins; `auto`: `shared` for the faithful form's units "
        "(CLIP scores, on one scale), `concept` for the paper's form and SALF-CBM's maps "
        "(docs/methods.md#two-final-layers-dense-and-sparse)")


    def path_arguments(self) -> Dict[str, Any]:
        """The lambdas ``sparse_layer.fit_sparse_path`` runs: LF-CBM's one (``lam``), or the path."""
        if self.lam is not None:  # glm_saga: max_lam = max_reg / max(0.001, alpha); epsilon 1, k 1: that one
            return {"lambdas": [self.lam / max(0.001, self.alpha)], "max_nec": None}
        return {"path_points": self.path_points, "epsilon": self.epsilon,
                "max_nec": MAX_NEC_FACTOR * self.target_nec}

    def shared_for(self, units_are_clip_scores: bool, num_classes: int) -> Optional[int]:
        """``shared_concepts`` resolved: ``auto`` is one concept a class for units that are CLIP's concept
        scores (the faithful form), off for free mixtures (the paper's form) and for concept maps (measured
        there, and not kept: docs/salf-cbm.md#true-explanations-or-localised-heatmaps)."""
        if self.shared_concepts == "auto":
            return int(num_classes) if units_are_clip_scores else None
        return self.shared_concepts

    def kept_nec(self) -> Optional[float]:
        """The NEC budget the kept point is chosen within (``SparsePath.require_concepts``); None: a
        single lambda's point, whatever its NEC."""
        return None if self.lam is not None else self.target_nec


class SpatialSparseParams(SparseLayerParams):
    """SALF-CBM's sparse final layer on c*: ``SparseLayerParams``, and the sign of its weights (the CBM takes
    that from ``train.form``; SALF-CBM has no form)."""

    non_negative: bool = Field(
        False, description="every weight >= 0, as the CBM's faithful form: a class is explained only by concepts "
        "whose maps its images raise. Its explanations are truer and it classifies better, but its heatmaps "
        "light up every object and background its concepts name "
        "(docs/salf-cbm.md#true-explanations-or-localised-heatmaps) | false: signed weights (the paper's)")


class EarlyStoppingParams(StrictModel):
    patience: Optional[int] = Field(None, gt=0, description="epochs without a better val top-1 before stopping "
                                                            "(`null`: off)")


class TrainParams(StrictModel):
    epochs: int = Field(20, gt=0, description="epochs at most")
    batch_size: int = Field(256, gt=1, description="images a step")
    ce_to_cbl: Literal["auto", True, False] = Field(
        "auto", description="does the cross-entropy's gradient reach W_CBL? `auto`: the objective's default (yes for "
        "`l1`, eq. 11; no for the others, the sequential bottleneck)")
    log_alpha: float = Field(2.659, description="alpha = exp(log_alpha), the scale of the contrastive objectives")
    l1_lambda: float = Field(1e-3, ge=0, description="lambda of eq. 11: CE + lambda/|D| ||W_CBL||_1")
    gumbel: GumbelParams = Field(GumbelParams(), description="`loss: gumbel`")
    cbl: OptimizerParams = Field(OptimizerParams(), description="the CBL's optimizer")
    fc: OptimizerParams = Field(OptimizerParams(lr=1e-2), description="the dense final layer's optimizer")
    clip_grad_norm: Optional[float] = Field(None, gt=0, description="clip the gradient norm of both layers "
                                                                    "(`null`: off)")
    lr_schedule: Literal[LR_SCHEDULES] = Field(  # type: ignore[valid-type]
        "constant", description="both layers' learning-rate schedule")
    early_stopping: EarlyStoppingParams = Field(EarlyStoppingParams(), description="on val top-1")
    keep: Literal["best", "final"] = Field("best", description="the epoch kept: the best val top-1, or the last run "
                                                               "(as the authors' code)")
    form: Literal[FORMS] = Field(  # type: ignore[valid-type]
        "faithful", description="`paper`: the objectives as published; `faithful`: CBL unit m tied to concept m, final "
        "weights >= 0 (docs/methods.md#two-forms-paper-and-faithful)")
    final_layer: Literal[FINAL_LAYERS] = Field(  # type: ignore[valid-type]
        "sparse", description="`dense`: the paper's Linear, trained with the CBL; `sparse`: an elastic net on the "
        "standardised activations, fitted afterwards with glm-saga")
    cos3: Cos3Params = Field(Cos3Params(), description="`loss: cos3`")
    sparse: SparseLayerParams = Field(SparseLayerParams(), description="`final_layer: sparse`: the regularisation "
                                                                       "path (glm-saga)")
    device: str = Field("cpu", pattern=DEVICE_PATTERN, description="where training runs: `auto` (the profiles), "
                                                                   "`cpu`, `cuda`, `cuda:N`, `mps`")


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
