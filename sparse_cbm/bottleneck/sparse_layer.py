"""A sparse final layer on the bottleneck: elastic-net multinomial regression along a path.

The CBL's outputs, standardised on train, are fitted for each lambda of a path (from the smallest
lambda whose solution is all zeros down to ``epsilon`` times it) with the field's solver, the
``glm-saga`` package (proximal SAGA): its path driver, with its SAGA epochs run by its own
``train_saga`` (``solver="glm-saga"``, the reference) or by the same algorithm with matrix-product
gradients (``solver="fast"``, ``sparse_cbm.bottleneck.saga``; 96x cheaper a gradient at ImageNet's
shape, the same iterates up to rounding); each point warm-starts from the previous
one with glm-saga's own returned ``state`` (what its own loop over lambdas does) and records its NEC,
train and val top-1, weight and bias. The objective, the path, NEC and ANEC-5: see
docs/methods.md#two-final-layers-dense-and-sparse. ``tests/unit/bottleneck/test_sparse_layer.py``
checks it reaches scikit-learn's solution of the same objective.

Memory: nothing N x |D| is ever held; the train split is read a block at a time (``saga_rows.BlockLoader``)
and glm-saga's SAGA table may live on disk (``saga_rows.DiskTable``): see ``sparse_cbm.bottleneck.saga_rows``.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from sparse_cbm.bottleneck.final_layer import StandardizedLinear, nec
from sparse_cbm.bottleneck.glm_saga_calls import SOLVERS, run_glm_saga
from sparse_cbm.bottleneck.saga_rows import BlockLoader, DiskTable
from sparse_cbm.bottleneck.shared_concepts import choose_shared, concepts_used
from sparse_cbm.errors import TrainingError
from sparse_cbm.runtime.cpus import threads_for

log = logging.getLogger(__name__)

Activations = Callable[[torch.Tensor], torch.Tensor]  # raw image embeddings (B, d) -> concept activations (B, D)
Split = Tuple[object, np.ndarray]  # (embeddings: array, memory map or NpyRows, labels (N,) int)

TABLE_BUDGET_BYTES = 512 * 2 ** 20  # table="auto" goes to disk above this
# How activations are scaled before the elastic net: "concept" divides each by its own spread on train (glm-saga's
# and LF-CBM's standardisation); "shared" divides all by their mean spread, so a concept whose activation barely
# moves needs a larger, costlier weight: between two that separate classes alike the lasso takes the one CLIP's
# score varies more for, the one it finds in the image. Callers resolve "auto" (``resolve_scale``).
SCALES = ("concept", "shared")
SCALE_CHOICES = ("auto", *SCALES)


def resolve_scale(scale: str, units_are_clip_scores: bool) -> str:
    """``auto``: ``shared`` where the units are CLIP's concept scores, on one scale (the faithful form), else
    ``concept`` (the paper's form, whose units are free mixtures; SALF-CBM's pooled maps)."""
    if scale != "auto":
        return scale
    return "shared" if units_are_clip_scores else "concept"


# ----------------------------------------------------------------------------------------------
# The path


@dataclass
class PathPoint:
    lam: float  # the lambda glm-saga ran with
    nec: float
    train_top1: float  # over the train split after this point's fit (glm-saga's own pass)
    val_top1: float  # nan without a val split
    weight: torch.Tensor  # (C, D)
    bias: torch.Tensor  # (C,)
    converged: bool  # False when glm-saga stopped at max_epochs without meeting its tolerance
    seconds: float
    train_loss: float  # glm-saga's objective on train: mean cross-entropy + the penalty
    val_loss: float

    def summary(self) -> Dict[str, float]:
        """The point without its weights (for metrics files)."""
        return {"lambda": self.lam, "nec": self.nec, "train_top1": self.train_top1, "val_top1": self.val_top1,
                "converged": self.converged, "seconds": self.seconds, "train_loss": self.train_loss,
                "val_loss": self.val_loss}


@dataclass
class SparsePath:
    points: List[PathPoint]  # lambda decreasing
    mean: torch.Tensor
    std: torch.Tensor
    alpha: float
    max_lambda: float  # the smallest lambda with every weight zero
    table: str  # "memory" or "disk": where glm-saga's SAGA table was kept
    seconds: float = 0.0

    def layer(self, i: int) -> StandardizedLinear:
        p = self.points[i]
        return StandardizedLinear(p.weight, p.bias, self.mean, self.std)

    def index_closest(self, target_nec: float = 5.0) -> int:
        """The point whose NEC is closest to ``target_nec``; ties: the best val top-1, then the sparser."""
        def key(i):
            p = self.points[i]
            val = p.val_top1 if not math.isnan(p.val_top1) else -math.inf
            return (round(abs(p.nec - target_nec), 9), -val, p.nec, i)
        return min(range(len(self.points)), key=key)

    def choose(self, target_nec: float = 5.0) -> StandardizedLinear:
        """The layer at ``index_closest(target_nec)``, as fitted (no truncation)."""
        return self.layer(self.index_closest(target_nec))

    def index_within(self, max_nec: Optional[float] = 5.0) -> int:
        """The densest point whose NEC is at most ``max_nec`` (ties: the best val top-1); the sparsest
        point when none is (a sparsity budget, where ``index_closest`` may overshoot it). ``None``: the
        last point (a single lambda's, LF-CBM's choice: no budget)."""
        if max_nec is None:
            return len(self.points) - 1
        within = [i for i, p in enumerate(self.points) if p.nec <= max_nec + 1e-9]
        if not within:
            return min(range(len(self.points)), key=lambda i: self.points[i].nec)
        def key(i):
            p = self.points[i]
            return (-p.nec, -(p.val_top1 if not math.isnan(p.val_top1) else -math.inf), i)
        return min(within, key=key)

    def choose_within(self, max_nec: Optional[float] = 5.0) -> StandardizedLinear:
        """The layer at ``index_within(max_nec)``: what the train stage keeps for ``target_nec``."""
        return self.layer(self.index_within(max_nec))

    def require_concepts(self, max_nec: Optional[float], what: str, rows: int) -> StandardizedLinear:
        """``choose_within(max_nec)``, refused when it uses no concept at all (NEC 0: every class decided by its
        bias, top-1 at chance), with what to change."""
        i = self.index_within(max_nec)
        if self.points[i].nec == 0 and max_nec is None:
            raise TrainingError(
                f"{what}: the sparse final layer uses no concept (NEC 0, top-1 at chance) at {what}.sparse.lam "
                f"{self.points[i].lam * max(0.001, self.alpha):.3g} (lambda {self.points[i].lam:.3g}); every weight is "
                f"zero from lambda {self.max_lambda:.3g} on, on these {rows} train images: lower {what}.sparse.lam, or "
                f"set it to null for the path")
        if self.points[i].nec == 0:
            denser = min((p.nec for p in self.points if p.nec > 0), default=0.0)
            raise TrainingError(
                f"{what}: the sparse final layer uses no concept (NEC 0, top-1 at chance) on {rows} train images: "
                + (f"the path's next point already has NEC {denser:.1f} > {max_nec:g}; raise {what}.sparse.path_points "
                   f"for a finer path, or {what}.sparse.target_nec" if denser else
                   f"no point of the path selected a concept; lower {what}.sparse.epsilon or add train images"))
        return self.layer(i)

    def index_vlg(self, target_nec: float = 5.0) -> int:
        """VLG-CBM's pick (``measure_acc``): the first point, lambda decreasing, whose NEC reaches
        ``target_nec``; the last point when none does."""
        return next((i for i, p in enumerate(self.points) if p.nec >= target_nec), len(self.points) - 1)

    def choose_vlg(self, target_nec: float = 5.0) -> StandardizedLinear:
        """VLG-CBM's ANEC procedure: ``index_vlg``'s layer truncated to ``target_nec``
        (``StandardizedLinear.truncated``)."""
        return self.layer(self.index_vlg(target_nec)).truncated(target_nec)

    def summary(self) -> List[Dict[str, float]]:
        return [p.summary() for p in self.points]


# ----------------------------------------------------------------------------------------------
# Streaming pieces


def bottleneck_activations(model) -> Activations:
    """The CBL outputs of a ``ConceptBottleneck`` without its FC: ``model.cbl(model.concept_scores(x))``
    (``model(x).activations`` gives the same and computes the logits too)."""
    return lambda x: model.cbl(model.concept_scores(x))


def column_index(columns: Sequence[int], width: int) -> np.ndarray:
    """``columns`` as distinct concept indices in [0, width), at least one, or a ValueError."""
    index = np.asarray(columns, dtype=np.int64)
    if index.ndim != 1 or not len(index) or index.min() < 0 or index.max() >= width \
            or len(np.unique(index)) != len(index):
        raise ValueError(f"columns must be distinct concept indices in [0, {width}), at least one; "
                         f"got {index.tolist()[:10]}")
    return index


class Standardised(nn.Module):
    """glm-saga's ``preprocess``: raw embeddings -> (activations(x) - mean) / std, without gradients.
    Its ``device`` attribute is what glm-saga's ``get_device`` reads."""

    def __init__(self, activations: Activations, mean: torch.Tensor, std: torch.Tensor, device="cpu",
                 columns: Optional[Sequence[int]] = None):
        super().__init__()
        self.activations = activations
        self.device = torch.device(device)
        self.register_buffer("mean", mean.to(self.device, torch.float32))
        self.register_buffer("std", std.to(self.device, torch.float32))
        mask = None  # ``columns``: the others read as 0, so their weights get no gradient and stay 0
        if columns is not None:
            index = column_index(columns, len(mean))
            mask = torch.zeros_like(self.mean)
            mask[torch.as_tensor(index, device=self.device)] = 1.0
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            out = (self.activations(x.to(self.device)).float() - self.mean) / self.std
            return out if self.mask is None else out * self.mask


@dataclass
class ActivationStats:
    """What one streaming pass over train gives: the standardisation and glm-saga's maximum lambda."""

    n: int
    mean: torch.Tensor  # (D,) float64
    std: torch.Tensor  # (D,) float64, sample (n - 1); 1 where it is 0
    class_counts: np.ndarray = field(repr=False)
    concept_reg: torch.Tensor = field(repr=False)  # (D,) glm-saga's ``maximum_reg`` terms: max over classes, per concept
    group_reg: torch.Tensor = field(repr=False)  # (D,) glm-saga's grouped ones: l2 norm over classes, per concept

    @property
    def max_reg(self) -> float:
        """glm-saga's ``maximum_reg`` (nongrouped) on the standardised activations."""
        return float(self.concept_reg.max())

    def largest_lambda(self, alpha: float, group: bool = False, columns: Optional[Sequence[int]] = None) -> float:
        """glm-saga's first lambda, ``maximum_reg / max(0.001, alpha)``: grouped (each concept's l2 norm over
        the classes) with ``group``, and over ``columns`` only when given."""
        reg = self.group_reg if group else self.concept_reg
        if columns is not None:
            reg = reg[torch.as_tensor(np.asarray(columns, dtype=np.int64))]
        return float(reg.max()) / max(0.001, alpha)


@torch.no_grad()
def activation_stats(activations: Activations, embeddings, labels: np.ndarray, num_classes: int, *,
                     batch_size: int = 256, device="cpu", scale: str = "concept") -> ActivationStats:
    """Mean and sample std of the activations over train, and glm-saga's maximum regularisation, in one
    pass a batch at a time (float64; batches merged with Chan et al.'s update).

    glm-saga's ``maximum_reg_loader`` is max over (concept, class) of |sum_i x_i (t_i - p)| / n, x the
    standardised activations, t one-hot labels, p the class frequencies; since the x sum to zero over
    train, sum_i x_i (t_ic - p_c) = (S_c - n_c mean) / std with S_c the sum of class c's raw
    activations, which one pass gives."""
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got [{labels.min()}, {labels.max()}]")
    device = torch.device(device)
    n, mean, m2, class_sums = 0, None, None, None
    loader = BlockLoader(embeddings, labels, batch_size, shuffle=False)
    for x, y, _ in loader:
        a = activations(x.to(device)).to(torch.float64)
        if mean is None:
            d = a.shape[1]
            mean = torch.zeros(d, dtype=torch.float64, device=device)
            m2 = torch.zeros(d, dtype=torch.float64, device=device)
            class_sums = torch.zeros(num_classes, d, dtype=torch.float64, device=device)
        b = a.shape[0]
        b_mean = a.mean(0)
        b_m2 = ((a - b_mean) ** 2).sum(0)
        delta = b_mean - mean
        total = n + b
        mean += delta * (b / total)
        m2 += b_m2 + delta ** 2 * (n * b / total)
        n = total
        class_sums.index_add_(0, y.to(device), a)
    if n < 2:
        raise ValueError(f"the train split needs at least 2 rows, got {n}")
    std = (m2 / (n - 1)).sqrt()
    if scale == "shared":  # one scale for every concept, the mean spread of those that move (SCALES)
        moving = std[std > 0]
        std = torch.full_like(std, float(moving.mean()) if len(moving) else 1.0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    counts = np.bincount(labels, minlength=num_classes)
    inner = (class_sums - torch.as_tensor(counts, dtype=torch.float64, device=device)[:, None] * mean) / std
    return ActivationStats(n=n, mean=mean.cpu(), std=std.cpu(), class_counts=counts,
                           concept_reg=(inner.abs().amax(dim=0) / n).cpu(),
                           group_reg=(inner.norm(dim=0) / n).cpu())


@torch.no_grad()
def predict(layer: StandardizedLinear, activations: Activations, embeddings, *, batch_size: int = 1024,
            device="cpu") -> np.ndarray:
    """(N,) predicted classes, a batch at a time."""
    device = torch.device(device)
    w, b = layer.weight.to(device), layer.bias.to(device)
    mean, std = layer.mean.to(device), layer.std.to(device)
    out = np.empty(len(embeddings), dtype=np.int64)
    loader = BlockLoader(embeddings, np.zeros(len(embeddings), dtype=np.int64), batch_size, shuffle=False)
    for x, _, idx in loader:
        z = (activations(x.to(device)).float() - mean) / std
        out[idx[0]:idx[-1] + 1] = torch.addmm(b, z, w.T).argmax(1).cpu().numpy()
    return out


def top1(layer: StandardizedLinear, activations: Activations, split: Split, *, batch_size: int = 1024,
         device="cpu") -> float:
    """Top-1 accuracy of ``layer`` on a split (embeddings, labels), a batch at a time."""
    embeddings, labels = split
    labels = np.asarray(labels)
    if len(labels) == 0:
        return float("nan")
    return float((predict(layer, activations, embeddings, batch_size=batch_size, device=device) == labels).mean())


@dataclass
class AccuracyAtNec:
    target: float
    rule: str  # "closest" or "vlg"
    index: int  # the path point
    lam: float
    nec: float  # of the layer evaluated (after truncation for "vlg")
    top1: float


def accuracy_at_nec(path: SparsePath, activations: Activations, split: Split, target_nec: float = 5.0, *,
                    rule: str = "closest", batch_size: int = 1024, device="cpu") -> AccuracyAtNec:
    """Top-1 on ``split`` at NEC ``target_nec``: ``rule="closest"`` evaluates the path point whose NEC
    is closest (``SparsePath.choose``); ``"vlg"`` VLG-CBM's procedure (the first point reaching it,
    truncated to it: ``SparsePath.choose_vlg``)."""
    if rule == "closest":
        i = path.index_closest(target_nec)
        layer = path.layer(i)
    elif rule == "vlg":
        i = path.index_vlg(target_nec)
        layer = path.choose_vlg(target_nec)
    else:
        raise ValueError(f"rule must be 'closest' or 'vlg', got {rule!r}")
    return AccuracyAtNec(target=target_nec, rule=rule, index=i, lam=path.points[i].lam, nec=layer.nec,
                         top1=top1(layer, activations, split, batch_size=batch_size, device=device))


# ----------------------------------------------------------------------------------------------
# Fitting


def path_lambdas(max_lambda: float, path_points: int, epsilon: float) -> np.ndarray:
    """``path_points`` lambdas evenly spaced in log from ``max_lambda`` down to ``epsilon * max_lambda``
    (glm-saga's own grid)."""
    return np.geomspace(max_lambda, epsilon * max_lambda, path_points) if path_points > 1 else np.array([max_lambda])


def _width(activations: Activations, x_train, device="cpu") -> int:
    """How many concepts the activations give (one row of zeros run through)."""
    with torch.no_grad():
        return int(activations(torch.zeros(1, x_train.shape[1], device=device)).shape[1])


def _step_flops(activations: Activations, x_train, batch_size: int, num_classes: int, device="cpu") -> float:
    """About what one SAGA step costs: the activations of a batch (one row run through, on the path's
    device, scaled to the batch) and the final layer's forward and gradient."""
    width = _width(activations, x_train, device)
    return 2.0 * batch_size * width * (x_train.shape[1] + width + 2 * num_classes)


def fit_sparse_path(activations: Activations, train: Split, val: Optional[Split], num_classes: int, *,
                    alpha: float = 0.99, path_points: int = 20, epsilon: float = 1e-3,
                    lambdas: Optional[Sequence[float]] = None, max_nec: Optional[float] = None,
                    max_epochs: int = 50, lr: float = 0.1, tol: float = 1e-4, lookbehind: Optional[int] = None,
                    batch_size: int = 256, seed: int = 0, device="cpu", table: str = "auto",
                    table_budget_bytes: int = TABLE_BUDGET_BYTES, table_dir: Optional[str | Path] = None,
                    nonneg: bool = False, scale: str = "concept", solver: str = "fast", group: bool = False,
                    columns: Optional[Sequence[int]] = None, shared_concepts: Optional[int] = None,
                    max_concepts: Optional[int] = None) -> SparsePath:
    """Fit the elastic-net path on the activations of the train split (see the module docstring).

    ``activations`` maps a float32 batch of raw image embeddings (B, d) to the CBL's (B, D) outputs
    (``bottleneck_activations(model)``); ``train`` and ``val`` are (embeddings, labels), embeddings an
    array, a memory map or ``NpyRows``, read ``batch_size`` rows at a time (the callable never sees
    more). ``lambdas`` replaces the grid (``path_lambdas(max, path_points, epsilon)``); ``max_nec``
    stops the path after the first point whose NEC exceeds it. glm-saga's knobs: ``lr`` (its
    ``max_lr``; constant along the path), ``max_epochs`` per lambda (its ``nepochs``), ``tol`` (it
    stops a lambda when one step moves (W, b) by at most ``tol``; with ``lookbehind``, when its
    objective has not improved by ``tol`` for that many epochs). ``table``: ``"memory"``, ``"disk"``
    or ``"auto"`` (disk when n x C x 4 bytes exceeds ``table_budget_bytes``). ``nonneg``: every weight
    >= 0, so a class is explained only by concepts whose presence raises it (``non_negative_prox``).
    ``solver``: who runs the SAGA epochs (``SOLVERS``). ``group``: glm-saga's group lasso (each concept's
    weights over the classes, one l2 norm) in place of the l1 term. ``columns``: only these concepts may
    get weights. ``shared_concepts``: first a group path on the same rows chooses at most that many
    concepts for all classes (``shared_concepts.choose_shared``), then the path runs on them.
    ``max_concepts`` stops the path after the first point that uses more concepts (any class).
    Same inputs and ``seed``, same weights: the only randomness is the seeded order of the blocks.

    Convergence decides the NEC: an unconverged SAGA iterate keeps small weights the optimum does not
    have (measured: docs/methods.md#two-final-layers-dense-and-sparse); ``max_nec`` stops the path early."""
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    if table not in ("auto", "memory", "disk"):
        raise ValueError(f"table must be 'auto', 'memory' or 'disk', got {table!r}")
    started = time.perf_counter()
    torch.manual_seed(seed)
    device = torch.device(device)
    x_train, y_train = train
    y_train = np.asarray(y_train, dtype=np.int64)
    n = len(y_train)
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {', '.join(SOLVERS)}, got {solver!r}")
    if shared_concepts is not None:
        if columns is not None:
            raise ValueError("give columns or shared_concepts, not both")
        columns = choose_shared(lambda: fit_sparse_path(
            activations, train, val, num_classes, alpha=alpha, path_points=path_points, epsilon=epsilon,
            max_concepts=shared_concepts, max_epochs=max_epochs, lr=lr, tol=tol, lookbehind=lookbehind,
            batch_size=batch_size, seed=seed, device=device, table=table, table_budget_bytes=table_budget_bytes,
            table_dir=table_dir, nonneg=nonneg, scale=scale, solver=solver, group=True), shared_concepts,
            _width(activations, x_train, device))
    step_flops = _step_flops(activations, x_train, batch_size, num_classes, device)
    with threads_for(step_flops):  # small steps run on one thread (sparse_cbm.runtime.cpus.SMALL_STEP_FLOPS)
        stats = activation_stats(activations, x_train, y_train, num_classes, batch_size=batch_size, device=device,
                                 scale=scale)
    if columns is not None:
        columns = column_index(columns, len(stats.mean))
    max_lambda = stats.largest_lambda(alpha, group, columns)
    grid = (np.asarray(lambdas, dtype=np.float64) if lambdas is not None
            else path_lambdas(max_lambda, path_points, epsilon))
    mean32, std32 = stats.mean.float(), stats.std.float()
    d = mean32.shape[0]

    linear = nn.Linear(d, num_classes).to(device)
    linear.weight.data.zero_()
    linear.bias.data.zero_()
    preprocess = Standardised(activations, mean32, std32, linear.weight.device, columns)  # glm-saga: same device
    loader = BlockLoader(x_train, y_train, batch_size, shuffle=True, seed=seed)
    val_loader = None
    if val is not None and len(val[1]):
        val_loader = BlockLoader(val[0], np.asarray(val[1], dtype=np.int64), batch_size, shuffle=False)

    where = table if table != "auto" else ("disk" if n * num_classes * 4 > table_budget_bytes else "memory")
    points: List[PathPoint] = []
    with tempfile.TemporaryDirectory(prefix="sparse-layer-", dir=table_dir) as tmp, threads_for(step_flops):
        if where == "disk":
            state = {"a_table": DiskTable(Path(tmp) / "saga_table.f32", n, num_classes),
                     "w_grad_avg": torch.zeros_like(linear.weight), "b_grad_avg": torch.zeros_like(linear.bias)}
            table_device = torch.device("cpu")
        else:
            state, table_device = None, None  # glm-saga makes its own zeros(n, C) on the weights' device
        try:
            for i, lam in enumerate(grid):
                result, printed = run_glm_saga(linear, loader, lr, max_epochs, alpha, float(lam), state=state, n_ex=n,
                                                n_classes=num_classes, tol=tol, lookbehind=lookbehind,
                                                preprocess=preprocess, val_loader=val_loader, table_device=table_device,
                                                nonneg=nonneg, solver=solver, group=group)
                state = result["state"]
                p = result["path"][0]
                m = p["metrics"]
                point = PathPoint(lam=float(p["lam"]), nec=nec(p["weight"]), train_top1=float(m["acc_tr"]),
                                  val_top1=float(m["acc_val"]) if val_loader is not None else float("nan"),
                                  weight=p["weight"].float().contiguous(), bias=p["bias"].float().contiguous(),
                                  converged="did not converge" not in printed, seconds=float(p["time"]),
                                  train_loss=float(m["loss_tr"]),
                                  val_loss=float(m["loss_val"]) if val_loader is not None else float("nan"))
                points.append(point)
                log.info("%s path %d/%d: lambda %.3g, NEC %.2f, train top-1 %.4f, val top-1 %.4f, %.1f s",
                         "group" if group else "sparse", i + 1, len(grid), point.lam, point.nec, point.train_top1,
                         point.val_top1, point.seconds)
                if max_nec is not None and point.nec > max_nec:
                    break
                if max_concepts is not None and concepts_used(point.weight).sum() > max_concepts:
                    break
        finally:
            if where == "disk" and state is not None:
                state["a_table"].close()
    unconverged = sum(not p.converged for p in points)
    if unconverged:  # one line a path, not one a point: each point starts from the last, so this is common
        log.info("%s path: %d of %d points stopped at max_epochs %d before tol %g (each point warm-starts the next; "
                 "raise max_epochs to fit them further)", "group" if group else "sparse", unconverged, len(points),
                 max_epochs, tol)
    return SparsePath(points=points, mean=mean32, std=std32, alpha=alpha, max_lambda=max_lambda, table=where,
                      seconds=time.perf_counter() - started)
