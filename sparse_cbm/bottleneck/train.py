"""Training the bottleneck: the CBL with its objective, the FC with cross-entropy.

Two optimizers, one for each layer. ``ce_to_cbl`` decides whether the cross-entropy
gradient also reaches W_CBL: the paper's text describes a sequential bottleneck (it
does not), its eq. 11 and its released code let it (for l1 it must: the penalty alone
drives W_CBL to zero). ``train.ce_to_cbl: auto`` gives each objective its default.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from sparse_cbm.bottleneck.config import TrainParams, check_combination, resolve_ce_to_cbl
from sparse_cbm.bottleneck.final_layer import StandardizedLinear
from sparse_cbm.bottleneck.model import BottleneckOutput, ConceptBottleneck
from sparse_cbm.bottleneck.objectives import StepContext, get_objective
from sparse_cbm.bottleneck.objectives.gumbel import tau_at
from sparse_cbm.bottleneck.optim import make_optimizer, make_schedulers
from sparse_cbm.bottleneck.sparsity import concepts_for_mass, fraction_below
from sparse_cbm.runtime.cpus import threads_for

log = logging.getLogger(__name__)


def batch_losses(model: ConceptBottleneck, x: torch.Tensor, y: torch.Tensor, loss: str, params: TrainParams,
                 tau: float, generator: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor, BottleneckOutput]:
    """(CBL objective, cross-entropy, the pass) of a batch. Unless the cross-entropy reaches the CBL
    (``resolve_ce_to_cbl``), the FC sees S detached and the cross-entropy's gradient stops at the FC."""
    out = model(x, ce_to_cbl=resolve_ce_to_cbl(loss, params.ce_to_cbl))
    cbl_loss = get_objective(loss).loss(out, StepContext(model, params, tau, generator))
    return cbl_loss, F.cross_entropy(out.logits, y), out


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> Dict[int, int]:
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hit = top == labels[:, None]
    return {k: int(hit[:, :k].any(dim=1).sum()) for k in ks}


def _batch(embeddings: np.ndarray, labels: np.ndarray, idx: np.ndarray, device) -> Tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(np.asarray(embeddings[idx], dtype=np.float32)).to(device)
    return x, torch.from_numpy(np.asarray(labels[idx])).to(device)


@torch.no_grad()
def evaluate_split(model: ConceptBottleneck, embeddings: np.ndarray, labels: np.ndarray,
                   batch_size: int = 1024, device="cpu") -> Dict[str, float]:
    """Top-1/top-5 accuracy and activation sparsity, a batch at a time."""
    model.eval()
    correct = {1: 0, 5: 0}
    mass, below = [], []
    for lo in range(0, len(labels), batch_size):
        x, y = _batch(embeddings, labels, np.arange(lo, min(lo + batch_size, len(labels))), device)
        out = model(x)
        for k, v in topk_correct(out.logits, y).items():
            correct[k] += v
        mass.append(concepts_for_mass(out.activations).float())
        below.append(fraction_below(out.activations) * len(y))
    n = max(len(labels), 1)
    return {"top1": correct[1] / n, "top5": correct[5] / n,
            "concepts_for_90pct_mass": float(torch.cat(mass).mean()) if mass else float("nan"),
            "fraction_below_1pct": sum(below) / n}


@dataclass
class TrainResult:
    model: ConceptBottleneck
    steps: List[Dict[str, float]]
    epochs: List[Dict[str, float]]
    kept_epoch: int  # the epoch whose weights the model holds (train.keep: best or final)
    seconds: float
    dropped_units: List[int] = field(default_factory=list)  # concept indices cut by cos3's cutoff
    unit_similarity: Optional[np.ndarray] = None  # cos3: each unit's similarity to its concept on val
    sparse_path: Optional[List[Dict[str, float]]] = None  # sparse final layer: lambda, NEC, top-1 per point


@torch.no_grad()
def unit_cos3_similarity(model: ConceptBottleneck, embeddings, batch_size: int = 4096, device="cpu") -> np.ndarray:
    """Each unit's cos3 similarity (``objectives.cos3``) to its concept's CLIP scores over a whole split,
    in two streaming passes (means, then sums of cubed products), float64."""
    def batches():
        for lo in range(0, len(embeddings), batch_size):
            x = torch.from_numpy(np.asarray(embeddings[lo:lo + batch_size], dtype=np.float32)).to(device)
            out = model(x)
            yield out.activations.double(), out.scores[:, model.units].double()

    n, mean_s, mean_p = 0, 0.0, 0.0
    for s, p in batches():
        n, mean_s, mean_p = n + len(s), mean_s + s.sum(dim=0), mean_p + p.sum(dim=0)
    mean_s, mean_p = mean_s / max(n, 1), mean_p / max(n, 1)
    sp, ss, pp = 0.0, 0.0, 0.0
    for s, p in batches():
        q, r = (s - mean_s) ** 3, (p - mean_p) ** 3
        sp, ss, pp = sp + (q * r).sum(dim=0), ss + (q * q).sum(dim=0), pp + (r * r).sum(dim=0)
    return (sp / (ss.sqrt() * pp.sqrt()).clamp_min(1e-300)).cpu().numpy()


def sparse_path(model: ConceptBottleneck, train: Tuple[np.ndarray, np.ndarray], val: Tuple[np.ndarray, np.ndarray],
                params: TrainParams, seed: int, device):
    """The GLM-SAGA regularisation path of an elastic-net final layer over the frozen CBL's activations,
    standardised on train (``sparse_layer.fit_sparse_path`` with ``params.sparse``)."""
    from sparse_cbm.bottleneck.sparse_layer import fit_sparse_path, resolve_scale

    sp = params.sparse
    model.eval()

    @torch.no_grad()
    def activations(x):
        return model(x).activations

    return fit_sparse_path(activations, train, val, model.num_classes, alpha=sp.alpha, **sp.path_arguments(),
                           max_epochs=sp.max_epochs, lr=sp.lr, tol=sp.tol,
                           batch_size=sp.batch_size, seed=seed, device=str(device), nonneg=params.form == "faithful",
                           scale=resolve_scale(sp.scale, params.form == "faithful"), solver=sp.solver,
                           shared_concepts=sp.shared_for(params.form == "faithful", model.num_classes))


def fit_sparse_final_layer(model: ConceptBottleneck, train: Tuple[np.ndarray, np.ndarray],
                           val: Tuple[np.ndarray, np.ndarray], params: TrainParams, seed: int,
                           device) -> List[Dict[str, float]]:
    """Replace the model's final layer by the sparse one: the densest path point whose NEC is at most
    ``params.sparse.target_nec`` (or LF-CBM's single lambda, ``params.sparse.lam``). Returns the path: lambda, NEC, train and val top-1 of every point."""
    path = sparse_path(model, train, val, params, seed, device)
    layer = path.require_concepts(params.sparse.kept_nec(), "train", len(train[1]))
    model.fc = StandardizedLinear(layer.weight, layer.bias, layer.mean, layer.std).to(device)
    return path.summary()


def train_bottleneck(concept_embeddings: np.ndarray, num_classes: int, logit_scale: float,
                     train: Tuple[np.ndarray, np.ndarray], val: Tuple[np.ndarray, np.ndarray], *, loss: str,
                     params: TrainParams, seed: int = 0, device: str = "cpu",
                     max_steps: Optional[int] = None) -> TrainResult:
    """Train CBL and FC on cached embeddings (``train`` and ``val``: (embeddings, labels) pairs;
    embeddings may be float16 arrays, memory maps or ``NpyRows``, read a batch at a time).

    Keeps the epoch with the best val top-1 (``params.keep: best``) or the last one (``final``).
    ``max_steps`` stops after that many steps in all (smoke runs, benchmarks). A step smaller than
    ``SMALL_STEP_FLOPS`` (forward and backward of the CBL and FC) runs on one thread: measured on the
    default world, 0.7 s a training against 2.3 s on two sleeping threads."""
    check_combination(loss, params)  # an unknown name or a bad combination fails here, before any work
    d, width = np.asarray(concept_embeddings).shape[1], len(concept_embeddings)
    step_flops = 6.0 * params.batch_size * width * (d + width + num_classes)
    with threads_for(step_flops):
        return _train(concept_embeddings, num_classes, logit_scale, train, val, loss, params, seed, device,
                      max_steps)


def _train(concept_embeddings, num_classes, logit_scale, train, val, loss, params, seed, device,
           max_steps) -> TrainResult:
    device = torch.device(device)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)  # on the CPU for any device: the same draws (sample_gumbel)
    order_rng = np.random.default_rng(seed)
    model = ConceptBottleneck(concept_embeddings, num_classes, logit_scale).to(device)
    if params.form == "faithful":
        model.init_identity()
    opt_cbl = make_optimizer(model.cbl.parameters(), params.cbl.optimizer, params.cbl.lr, params.cbl.weight_decay)
    opt_fc = make_optimizer(model.fc.parameters(), params.fc.optimizer, params.fc.lr, params.fc.weight_decay)
    x_train, y_train = train
    n = len(y_train)
    per_epoch = max(1, math.ceil(n / params.batch_size))
    total = per_epoch * params.epochs if max_steps is None else min(per_epoch * params.epochs, max_steps)
    schedulers = make_schedulers(params.lr_schedule, [opt_cbl, opt_fc], total)
    g = params.gumbel

    steps: List[Dict[str, float]] = []
    epochs: List[Dict[str, float]] = []
    best = (-1.0, 0, None)
    started = time.perf_counter()
    step = 0
    bar = tqdm(total=total, desc=f"train {loss}", unit="step")
    for epoch in range(1, params.epochs + 1):
        model.train()
        perm = order_rng.permutation(n)
        correct = {1: 0, 5: 0}
        for lo in range(0, n, params.batch_size):
            x, y = _batch(x_train, y_train, perm[lo:lo + params.batch_size], device)
            tau = tau_at(step, total, g.tau_start, g.tau_end, g.schedule)
            cbl_loss, ce, out = batch_losses(model, x, y, loss, params, tau, generator)
            opt_cbl.zero_grad(set_to_none=False)  # reuse the gradient buffers (|D|^2 floats) step after step
            opt_fc.zero_grad(set_to_none=False)
            (cbl_loss + ce).backward()
            if params.clip_grad_norm:
                torch.nn.utils.clip_grad_norm_(model.parameters(), params.clip_grad_norm)
            opt_cbl.step()
            opt_fc.step()
            if params.form == "faithful":  # evidence only from concepts whose presence raises the class
                with torch.no_grad():
                    model.fc.weight.clamp_(min=0)
            for s in schedulers:
                s.step()
            for k, v in topk_correct(out.logits.detach(), y).items():
                correct[k] += v
            steps.append({"step": step, "epoch": epoch, "ce": ce.item(), "cbl_loss": cbl_loss.item(), "tau": tau,
                          "lr_cbl": opt_cbl.param_groups[0]["lr"], "lr_fc": opt_fc.param_groups[0]["lr"]})
            step += 1
            bar.update(1)
            if max_steps is not None and step >= max_steps:
                break
        val_metrics = evaluate_split(model, *val, device=device)
        epochs.append({"epoch": epoch, "train_top1": correct[1] / n, "train_top5": correct[5] / n,
                       "val_top1": val_metrics["top1"], "val_top5": val_metrics["top5"]})
        bar.set_postfix(val_top1=f"{val_metrics['top1']:.3f}")
        if val_metrics["top1"] > best[0]:
            best = (val_metrics["top1"], epoch, copy.deepcopy(model.state_dict()) if params.keep == "best" else None)
        elif params.early_stopping.patience is not None and epoch - best[1] >= params.early_stopping.patience:
            log.info("early stop after epoch %d: val top-1 has not improved since epoch %d", epoch, best[1])
            break
        if max_steps is not None and step >= max_steps:
            break
    bar.close()
    kept = epochs[-1]["epoch"]
    if params.keep == "best":
        model.load_state_dict(best[2])
        kept = best[1]
    model.eval()
    result = TrainResult(model=model, steps=steps, epochs=epochs, kept_epoch=kept, seconds=0.0)
    if loss == "cos3":
        result.unit_similarity = unit_cos3_similarity(model, val[0], device=device)
        keep = result.unit_similarity >= params.cos3.cutoff
        result.dropped_units = model.units[torch.from_numpy(~keep)].tolist()
        if not keep.any():
            raise ValueError(f"train.cos3.cutoff {params.cos3.cutoff} drops every concept (the best similarity "
                             f"on val is {result.unit_similarity.max():.3f}); lower the cutoff.")
        if result.dropped_units:
            log.info("cos3 cutoff %.2f: dropped %d of %d units", params.cos3.cutoff, len(result.dropped_units),
                     len(keep))
            model.keep_units(torch.from_numpy(keep))
    if params.final_layer == "sparse":
        result.sparse_path = fit_sparse_final_layer(model, train, val, params, seed, device)
    model.eval()
    result.seconds = time.perf_counter() - started
    return result
