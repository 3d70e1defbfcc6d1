"""Training the bottleneck: the CBL with its objective, the FC with cross-entropy.

Two optimizers, one for each layer. ``ce_to_cbl`` decides whether the cross-entropy
gradient also reaches W_CBL: the paper's text describes a sequential bottleneck (it
does not), its eq. 11 and its released code let it (for l1 it must: the penalty alone
drives W_CBL to zero). ``resolve_ce_to_cbl`` gives each loss its default.
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

from sparse_cbm.losses import (contrastive_loss, gumbel_contrastive_loss, gumbel_released_loss, l1_penalty,
                               tau_at)
from sparse_cbm.model import ConceptBottleneck
from sparse_cbm.sparsity import concepts_for_mass, fraction_below

log = logging.getLogger(__name__)

LOSSES = ("l1", "contrastive", "gumbel")


@dataclass
class OptimizerConfig:
    name: str = "adam"  # adam | adamw | sgd
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd only


@dataclass
class TrainConfig:
    loss: str = "gumbel"
    epochs: int = 20
    batch_size: int = 256
    seed: int = 0
    ce_to_cbl: bool = False
    log_alpha: float = 2.659
    l1_lambda: float = 1e-3
    tau_start: float = 1.0
    tau_end: float = 0.5
    tau_schedule: str = "exponential"
    gumbel_hard: bool = False
    gumbel_objective: str = "paper"  # paper (eq. 10) | released (the authors' code)
    cbl: OptimizerConfig = field(default_factory=OptimizerConfig)
    fc: OptimizerConfig = field(default_factory=OptimizerConfig)
    clip_grad_norm: Optional[float] = None
    lr_schedule: str = "constant"  # constant | cosine
    early_stopping_patience: Optional[int] = None
    device: str = "cpu"
    max_steps: Optional[int] = None  # stop after this many steps in all (smoke runs, benchmarks)


def resolve_ce_to_cbl(loss: str, setting: str | bool) -> bool:
    """``auto``: True for l1 (eq. 11), False for contrastive and gumbel (the sequential bottleneck)."""
    if setting == "auto":
        return loss == "l1"
    return bool(setting)


def _optimizer(params, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """The optimizer, fused (one pass over the weights; about 2.5x faster on a CPU) where torch has it."""
    kinds = {"adam": (torch.optim.Adam, {}), "adamw": (torch.optim.AdamW, {}),
             "sgd": (torch.optim.SGD, {"momentum": cfg.momentum})}
    if cfg.name not in kinds:
        raise ValueError(f"unknown optimizer {cfg.name!r}; use adam, adamw or sgd")
    cls, extra = kinds[cfg.name]
    params = list(params)
    try:
        return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True, **extra)
    except (RuntimeError, TypeError, ValueError):  # torch without a fused kernel for this device
        return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **extra)


def cbl_objective(model: ConceptBottleneck, S: torch.Tensor, cfg: TrainConfig, tau: float,
                  generator: torch.Generator) -> torch.Tensor:
    """The CBL's own loss on a batch (without cross-entropy)."""
    alpha = math.exp(cfg.log_alpha)
    if cfg.loss == "l1":
        return l1_penalty(model.cbl.weight, cfg.l1_lambda)
    if cfg.loss == "contrastive":
        return contrastive_loss(S, alpha)
    if cfg.loss == "gumbel":
        fn = gumbel_contrastive_loss if cfg.gumbel_objective == "paper" else gumbel_released_loss
        return fn(S, alpha, tau, hard=cfg.gumbel_hard, generator=generator)
    raise ValueError(f"unknown loss {cfg.loss!r}; use one of {', '.join(LOSSES)}")


def batch_losses(model: ConceptBottleneck, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, tau: float,
                 generator: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(CBL objective, cross-entropy, class logits) of a batch. Without ``cfg.ce_to_cbl`` the FC sees
    S detached, so the cross-entropy's gradient stops at the FC."""
    S = model.cbl(model.concept_scores(x))
    cbl_loss = cbl_objective(model, S, cfg, tau, generator)
    logits = model.fc(S if cfg.ce_to_cbl else S.detach())
    return cbl_loss, F.cross_entropy(logits, y), logits


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
        S, logits = model(x)
        for k, v in topk_correct(logits, y).items():
            correct[k] += v
        mass.append(concepts_for_mass(S).float())
        below.append(fraction_below(S) * len(y))
    n = max(len(labels), 1)
    return {"top1": correct[1] / n, "top5": correct[5] / n,
            "concepts_for_90pct_mass": float(torch.cat(mass).mean()) if mass else float("nan"),
            "fraction_below_1pct": sum(below) / n}


@dataclass
class TrainResult:
    model: ConceptBottleneck
    steps: List[Dict[str, float]]
    epochs: List[Dict[str, float]]
    best_epoch: int
    seconds: float


def train_bottleneck(concept_embeddings: np.ndarray, num_classes: int, logit_scale: float,
                     train: Tuple[np.ndarray, np.ndarray], val: Tuple[np.ndarray, np.ndarray],
                     cfg: TrainConfig) -> TrainResult:
    """Train CBL and FC on cached embeddings (``train`` and ``val``: (embeddings, labels) pairs;
    embeddings may be float16 arrays, memory maps or ``NpyRows``, read a batch at a time).
    Returns the best model on val top-1."""
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    order_rng = np.random.default_rng(cfg.seed)
    model = ConceptBottleneck(concept_embeddings, num_classes, logit_scale).to(device)
    opt_cbl = _optimizer(model.cbl.parameters(), cfg.cbl)
    opt_fc = _optimizer(model.fc.parameters(), cfg.fc)
    x_train, y_train = train
    n = len(y_train)
    per_epoch = max(1, math.ceil(n / cfg.batch_size))
    total = per_epoch * cfg.epochs if cfg.max_steps is None else min(per_epoch * cfg.epochs, cfg.max_steps)
    schedulers = []
    if cfg.lr_schedule == "cosine":
        schedulers = [torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=total) for o in (opt_cbl, opt_fc)]
    elif cfg.lr_schedule != "constant":
        raise ValueError(f"unknown lr schedule {cfg.lr_schedule!r}; use constant or cosine")

    steps: List[Dict[str, float]] = []
    epochs: List[Dict[str, float]] = []
    best = (-1.0, 0, copy.deepcopy(model.state_dict()))
    started = time.perf_counter()
    step = 0
    bar = tqdm(total=total, desc=f"train {cfg.loss}", unit="step")
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        perm = order_rng.permutation(n)
        correct = {1: 0, 5: 0}
        for lo in range(0, n, cfg.batch_size):
            x, y = _batch(x_train, y_train, perm[lo:lo + cfg.batch_size], device)
            tau = tau_at(step, total, cfg.tau_start, cfg.tau_end, cfg.tau_schedule)
            cbl_loss, ce, logits = batch_losses(model, x, y, cfg, tau, generator)
            opt_cbl.zero_grad(set_to_none=False)  # reuse the gradient buffers (|D|^2 floats) step after step
            opt_fc.zero_grad(set_to_none=False)
            (cbl_loss + ce).backward()
            if cfg.clip_grad_norm:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad_norm)
            opt_cbl.step()
            opt_fc.step()
            for s in schedulers:
                s.step()
            for k, v in topk_correct(logits.detach(), y).items():
                correct[k] += v
            steps.append({"step": step, "epoch": epoch, "ce": ce.item(), "cbl_loss": cbl_loss.item(), "tau": tau,
                          "lr_cbl": opt_cbl.param_groups[0]["lr"], "lr_fc": opt_fc.param_groups[0]["lr"]})
            step += 1
            bar.update(1)
            if cfg.max_steps is not None and step >= cfg.max_steps:
                break
        val_metrics = evaluate_split(model, *val, device=device)
        epochs.append({"epoch": epoch, "train_top1": correct[1] / n, "train_top5": correct[5] / n,
                       "val_top1": val_metrics["top1"], "val_top5": val_metrics["top5"]})
        bar.set_postfix(val_top1=f"{val_metrics['top1']:.3f}")
        if val_metrics["top1"] > best[0]:
            best = (val_metrics["top1"], epoch, copy.deepcopy(model.state_dict()))
        elif cfg.early_stopping_patience is not None and epoch - best[1] >= cfg.early_stopping_patience:
            log.info("early stop after epoch %d: val top-1 has not improved since epoch %d", epoch, best[1])
            break
        if cfg.max_steps is not None and step >= cfg.max_steps:
            break
    bar.close()
    model.load_state_dict(best[2])
    model.eval()
    return TrainResult(model=model, steps=steps, epochs=epochs, best_epoch=best[1],
                       seconds=time.perf_counter() - started)
