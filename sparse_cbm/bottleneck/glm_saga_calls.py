"""How the sparse final layer calls glm-saga: one lambda of its path (``run_glm_saga``), with its
proximal operators swapped for the non-negative (``non_negative_prox``) or NaN-safe grouped
(``group_prox``) ones and its SAGA epochs run by our loop (``saga_epochs``). glm-saga's
``glm_saga`` and ``train_saga`` look these operators and that loop up by their module names at call
time, so each swap is a context that changes those names, and nothing else, while it is open."""

from __future__ import annotations

import contextlib
import io
import warnings

import torch

# Who runs the SAGA epochs: "fast", glm-saga's algorithm with its gradients as matrix products
# (``sparse_cbm.bottleneck.saga``), or "glm-saga", its own ``train_saga`` (the reference). glm-saga's path
# driver, stopping rules and proximal operators serve both.
SOLVERS = ("fast", "glm-saga")


@contextlib.contextmanager
def _swapped(**names):
    """glm-saga's module-level ``names`` replaced by the given callables while the context is open, and
    put back on leaving, whatever happens inside."""
    import glm_saga.elasticnet as glm

    saved = {name: getattr(glm, name) for name in names}
    for name, value in names.items():
        setattr(glm, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(glm, name, value)


@contextlib.contextmanager
def non_negative_prox(enabled: bool):
    """Make glm-saga's proximal steps project onto W >= 0 while the context is open.

    The proximal operator of lambda (alpha |w|_1 + (1 - alpha)/2 w^2) plus the indicator of w >= 0 is
    glm-saga's soft-threshold-and-shrink clamped at zero: max(v - t, 0) / (1 + s). Its ``train_saga``
    calls ``soft_threshold`` and ``soft_threshold_with_shrinkage`` by their module names, so swapping
    those two names (and nothing else) gives the non-negative elastic net with the same solver. Our
    loop (``saga.train_saga``) knows them by their ``NONNEG`` mark and runs them fused."""
    if not enabled:
        yield
        return
    import glm_saga.elasticnet as glm

    from sparse_cbm.bottleneck.saga import NONNEG

    plain, shrink = glm.soft_threshold, glm.soft_threshold_with_shrinkage

    def soft_threshold(beta, lam):
        return plain(beta, lam).clamp_min(0)

    def soft_threshold_with_shrinkage(x, a, b):
        return shrink(x, a, b).clamp_min(0)

    for op in (soft_threshold, soft_threshold_with_shrinkage):  # our SAGA loop runs these fused
        setattr(op, NONNEG, True)
    with _swapped(soft_threshold=soft_threshold, soft_threshold_with_shrinkage=soft_threshold_with_shrinkage):
        yield


@contextlib.contextmanager
def group_prox(enabled: bool, nonneg: bool):
    """Make glm-saga's grouped proximal steps safe for an all-zero column while the context is open,
    and project onto W >= 0 with ``nonneg``.

    glm-saga's ``group_threshold`` is ``(w - lam w / |w|) (|w| > lam)``, each concept's column norm over
    the classes: a column of zeros gives 0/0 = NaN, which a concept that never moves (or one outside
    ``columns``) has. This is the same operator with 0 there. With ``nonneg``, the proximal operator of
    the group norm plus the indicator of w >= 0 is the group threshold of max(v, 0)."""
    if not enabled:
        yield
        return
    def group_threshold(weight, lam):
        w = weight.clamp_min(0) if nonneg else weight
        norm = w.norm(p=2, dim=0)
        return w * (1 - lam / norm.clamp_min(torch.finfo(w.dtype).tiny)).clamp_min(0)

    def group_threshold_with_shrinkage(x, alpha, beta):
        return group_threshold(x, alpha) / (1 + beta)

    with _swapped(group_threshold=group_threshold, group_threshold_with_shrinkage=group_threshold_with_shrinkage):
        yield


@contextlib.contextmanager
def saga_epochs(solver: str):
    """Run glm-saga's SAGA epochs with ``solver`` while the context is open: its ``glm_saga`` calls
    ``train_saga`` by its module name, so swapping that one name swaps the loop and nothing else."""
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {', '.join(SOLVERS)}, got {solver!r}")
    if solver == "glm-saga":
        yield
        return
    from sparse_cbm.bottleneck.saga import train_saga

    with _swapped(train_saga=train_saga):
        yield


def run_glm_saga(linear, loader, lr, max_epochs, alpha, lam, *, state, n_ex, n_classes, tol, lookbehind,
                 preprocess, val_loader, table_device, nonneg=False, solver="fast", group=False):
    """One lambda of the path: glm-saga's ``glm_saga`` with a one-point grid at ``lam``, warm-started
    from ``linear`` and ``state`` (weights kept >= 0 with ``nonneg``), its epochs run by ``solver``;
    ``group``: its group lasso (each concept's column of weights over the classes, ``group_prox``).
    Its printed log is captured and returned."""
    from glm_saga.elasticnet import glm_saga

    out = io.StringIO()
    with contextlib.redirect_stdout(out), warnings.catch_warnings(), non_negative_prox(nonneg and not group), \
            group_prox(group, nonneg), saga_epochs(solver):
        warnings.filterwarnings("ignore", message="Implicit dimension choice for softmax")
        result = glm_saga(linear, loader, lr, max_epochs, alpha, table_device=table_device, preprocess=preprocess,
                          group=group, verbose=None, state=state, n_ex=n_ex, n_classes=n_classes, tol=tol,
                          epsilon=1.0, k=1, do_zero=False,
                          metadata={"max_reg": {"group" if group else "nongrouped": lam * max(0.001, alpha)}},
                          val_loader=val_loader,
                          lookbehind=lookbehind, family="multinomial")
    return result, out.getvalue()
