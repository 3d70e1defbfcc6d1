"""glm-saga's SAGA epoch loop with its gradients as matrix products (``train_saga``).

glm-saga 0.1.2's ``train_saga`` (``elasticnet.py``) forms each minibatch's weight gradient as a
(B, C, D) broadcast, ``(a.unsqueeze(2) * X.unsqueeze(1)).mean(0)``, twice a step (the new
gradient and the table's old one), and runs the final layer twice. At ImageNet's scale that is
4.9 GB a step and 96x the cost of the same product as a matrix multiply (``bench/sparse_layer.py``).
This module is the same algorithm, step for step: the same minibatches in the same order, the same
SAGA table and averages, the same proximal operators (called by their glm-saga module names, so
``glm_saga_calls.non_negative_prox`` still applies), the same stopping rules, and the "did not
converge" message the path reads; only the gradient ``(a - a_prev)^T X / B`` is one matrix product, and the linear layer
runs once. The iterates equal glm-saga's up to float rounding (``tests/unit/bottleneck/test_saga.py``
runs both side by side, step by step). ``sparse_layer`` swaps it in for glm-saga's while it runs
glm-saga's path driver (``solver="fast"``; ``"glm-saga"`` keeps the reference).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


NONNEG = "non_negative"  # the mark ``glm_saga_calls.non_negative_prox`` puts on the operators it swaps in


def _fused_form(op) -> str | None:
    """``"plain"`` for glm-saga's own soft-threshold operators, ``"nonneg"`` for those marked ``NONNEG``
    (``glm_saga_calls.non_negative_prox``), None for anything else."""
    if getattr(op, NONNEG, False):
        return "nonneg"
    if getattr(op, "__module__", None) == "glm_saga.elasticnet" and \
            getattr(op, "__name__", None) in ("soft_threshold", "soft_threshold_with_shrinkage"):
        return "plain"
    return None


def _prox(v: torch.Tensor, lr, lam, alpha, group: bool) -> torch.Tensor:
    """glm-saga's proximal step of ``v`` (which it may overwrite), its operator looked up by name at
    call time.

    glm-saga's soft-threshold operators and the non-negative ones ``sparse_layer`` swaps in (marked
    ``NONNEG``) run fused: ``softshrink`` (or ``sub_().clamp_min_()`` in place), then one division.
    Those are glm-saga's numbers, bit for bit, signed zeros included (``(beta - lam) * (beta > lam) +
    (beta + lam) * (beta < -lam)``, then ``/ (1 + s)``), without its seven passes and their
    temporaries. Any other operator patched in is called as glm-saga calls it."""
    import glm_saga.elasticnet as glm

    t = lr * lam * alpha
    s = None if alpha == 1 else lr * lam * (1 - alpha)
    if group:
        op = glm.group_threshold if s is None else glm.group_threshold_with_shrinkage
    else:
        op = glm.soft_threshold if s is None else glm.soft_threshold_with_shrinkage
    form = None if group else _fused_form(op)
    if s is not None and form != _fused_form(glm.soft_threshold):
        form = None  # glm-saga's shrink form calls soft_threshold by name: a patched one must be honoured
    if form is None:
        return op(v, t) if s is None else op(v, t, s)
    if form == "nonneg":
        out = v.sub_(float(t)).clamp_min_(0)
    else:  # softshrink may leave -0.0 inside the threshold (its scalar tail); glm-saga's formula gives +0.0
        out = F.softshrink(v, float(t)).add_(0.0)
    return out if s is None else out.div_(1 + s)


def _state(a_table, w_grad_avg, b_grad_avg):
    return {"a_table": a_table.cpu(), "w_grad_avg": w_grad_avg.cpu(), "b_grad_avg": b_grad_avg.cpu()}


@torch.no_grad()
def train_saga(linear, loader, lr, nepochs, lam, alpha, group=True, verbose=None, state=None, table_device=None,
               n_ex=None, n_classes=None, tol=1e-4, preprocess=None, lookbehind=None, family="multinomial",
               logger=None):
    """``glm_saga.elasticnet.train_saga``'s signature and behaviour (multinomial family, no sample
    weights: what the sparse layer uses), with matrix-product gradients."""
    if family != "multinomial":
        raise ValueError(f"the fast SAGA loop implements the multinomial family only, not {family!r}: "
                         "use train.sparse.solver glm-saga")
    logger = print if logger is None else logger
    weight, bias = list(linear.parameters())
    table_device = weight.device if table_device is None else table_device
    if n_ex is None:
        n_ex = sum(tensors[0].size(0) for tensors in loader)
    if n_classes is None:
        n_classes = max(tensors[1].max().item() for tensors in loader) + 1
    if state is None:
        a_table = torch.zeros(n_ex, n_classes).to(table_device)
        w_grad_avg, b_grad_avg = torch.zeros_like(weight), torch.zeros_like(bias)
    else:
        a_table = state["a_table"].to(table_device)
        w_grad_avg, b_grad_avg = state["w_grad_avg"].to(weight.device), state["b_grad_avg"].to(weight.device)
    eye = torch.eye(weight.size(0), device=weight.device)
    obj_best, nni, criteria = None, 0, None
    for t in range(nepochs):
        total_loss = 0.0
        for batch in loader:
            if len(batch) != 3:
                raise ValueError(f"the fast SAGA loop takes (data, target, index) batches, got a tuple of "
                                 f"{len(batch)}: use train.sparse.solver glm-saga for sample weights")
            X, y, idx = batch
            if preprocess is not None:
                import glm_saga.elasticnet as glm

                X = preprocess(X.to(glm.get_device(preprocess)))
            X = X.to(weight.device)
            y = y.to(weight.device)
            out = linear(X)
            total_loss += F.cross_entropy(out, y, reduction="mean").item() * X.size(0)
            a = F.softmax(out, dim=1) - eye[y]
            delta = a - a_table[idx].to(weight.device)
            w_step = delta.T @ X  # (C, D): B times the difference of the two gradients
            # weight - lr * (w_step / B + w_grad_avg), in one buffer with the roundings of the same expression
            weight_new = _prox(torch.div(w_step, X.size(0)).add_(w_grad_avg).mul_(-lr).add_(weight),
                               lr, lam, alpha, group)
            b_step = delta.sum(0)
            bias_new = bias - lr * (b_step / X.size(0) + b_grad_avg)
            a_table[idx] = a.to(table_device)
            w_grad_avg.add_(w_step.div_(n_ex))
            b_grad_avg.add_(b_step / n_ex)
            if lookbehind is None:
                criteria = torch.sqrt(torch.dist(weight_new, weight) ** 2 + (bias_new - bias).norm(p=2) ** 2)
                if criteria.item() <= tol:
                    return _state(a_table, w_grad_avg, b_grad_avg)
            weight.data = weight_new
            bias.data = bias_new
        saga_obj = total_loss / n_ex + lam * alpha * weight.norm(p=1) + 0.5 * lam * (1 - alpha) * (weight ** 2).sum()
        if obj_best is None or saga_obj.item() + tol < obj_best:
            obj_best, nni = saga_obj.item(), 0
        else:
            nni += 1
        stop = lookbehind is not None and nni >= lookbehind
        nnz, total = (weight.abs() > 1e-5).sum().item(), weight.numel()
        if verbose and t % verbose == 0:
            logger(f"obj {saga_obj.item()} weight nnz {nnz}/{total} ({nnz / total:.4f})")
        if stop:
            logger(f"obj {saga_obj.item()} weight nnz {nnz}/{total} ({nnz / total:.4f}) obj_best {obj_best} "
                   f"[early stop at {t}]")
            return _state(a_table, w_grad_avg, b_grad_avg)
    logger(f"did not converge at {nepochs} iterations (criteria {criteria})")
    return _state(a_table, w_grad_avg, b_grad_avg)
