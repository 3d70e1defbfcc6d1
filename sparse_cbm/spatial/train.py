"""Training SALF-CBM: the 1 x 1 convolution against CLIP's local similarities P (the extended
cubic-cosine loss, P computed a batch at a time from the prompted-copy cache, never stored whole),
then the elastic-net path on the pooled maps. See docs/salf-cbm.md#the-method.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from sparse_cbm.bottleneck.config import SpatialSparseParams
from sparse_cbm.bottleneck.final_layer import StandardizedLinear
from sparse_cbm.bottleneck.objectives.cos3 import cos_cubed_similarity
from sparse_cbm.spatial.full_batch import chunk_bounds, full_batch_cos3, full_batch_cos3_backward
from sparse_cbm.spatial.model import SpatialBottleneck

log = logging.getLogger(__name__)
FULL_BATCH_CHUNK = 64  # prompted images a chunk when eq. 1 runs over all N (memory: a chunk's maps and P)


def local_similarities(prompted: torch.Tensor, concepts: torch.Tensor, grid: int) -> torch.Tensor:
    """P for a batch: prompted (B, grid * grid, d) embeddings, concepts (|D|, d) -> (B, |D|, grid, grid)."""
    p = F.normalize(prompted.float(), dim=2) @ F.normalize(concepts.float(), dim=1).T  # (B, K, |D|)
    return p.transpose(1, 2).reshape(len(prompted), concepts.shape[0], grid, grid)


@dataclass
class SpatialTrainResult:
    model: SpatialBottleneck
    steps: List[Dict[str, float]]
    sparse_path: List[Dict[str, float]]
    similarity: float  # mean cos3 over (m, h, w) on train in the kept epoch
    p_mean: np.ndarray  # (|D| kept,) mean of P over every train copy: to draw P itself as a heatmap
    p_std: np.ndarray  # (|D| kept,)
    seconds: float
    kept: np.ndarray  # indices of the concepts kept (all of them unless ``HeldOut.cutoff`` dropped some)
    kept_epoch: int  # the epoch whose convolution is kept (the last one unless ``HeldOut.early_stop``)
    val_similarity: Optional[np.ndarray] = None  # (|D|,) every concept's eq. 1 on val, kept or not, 4 decimals


@dataclass
class HeldOut:
    """Label-free CBM's stop, which the paper follows, scored by eq. 1 on val's ringed copies (columns
    centred over them all): ``early_stop``, after each epoch, stop at the first that does not improve the
    val similarity and keep the best (LF-CBM checks every 50 steps, ours every epoch); ``cutoff``, drop
    the concepts whose mean similarity over locations is not above it (LF-CBM's 0.45)."""

    prompted: object  # rows (n_val * grid^2, d)
    rows: np.ndarray  # their images' indices into val's feature rows
    early_stop: bool = False
    cutoff: Optional[float] = None


def _rows(array, idx: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(array[np.sort(idx)], dtype=np.float32))


class _PStatistics:
    """P's mean and spread per concept over every prompted copy (to draw P itself as a heatmap)."""

    def __init__(self, concepts: int):
        self.total = torch.zeros(concepts, dtype=torch.float64)
        self.squares = torch.zeros(concepts, dtype=torch.float64)
        self.count = 0

    def add(self, p: torch.Tensor) -> None:
        flat = p.detach().transpose(0, 1).reshape(p.shape[1], -1).double().cpu()
        self.total += flat.sum(1)
        self.squares += (flat ** 2).sum(1)
        self.count += flat.shape[1]

    def result(self) -> Tuple[np.ndarray, np.ndarray]:
        mean = (self.total / max(self.count, 1)).numpy()
        std = np.sqrt(np.maximum((self.squares / max(self.count, 1)).numpy() - mean ** 2, 1e-12))
        return mean.astype(np.float32), std.astype(np.float32)


def _batches(model: SpatialBottleneck, features, feature_shape, prompted, prompted_rows: np.ndarray,
             concepts: torch.Tensor, grid: int, device):
    """``batch(chosen, grad)``: the concept maps and P of the prompted images ``chosen`` (sorted indices
    into ``prompted_rows``), each flattened to (B, |D| h w)."""
    k = grid * grid

    def batch(chosen: np.ndarray, grad: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
        copies = np.concatenate([np.arange(i * k, (i + 1) * k) for i in chosen])
        p = local_similarities(_rows(prompted, copies).reshape(len(chosen), k, -1).to(device), concepts, grid)
        feats = _rows(features, prompted_rows[chosen]).reshape(len(chosen), *feature_shape).to(device)
        with torch.set_grad_enabled(grad):
            maps = model.concept_maps(feats)
        return maps.reshape(len(chosen), -1), p.reshape(len(chosen), -1)

    return batch


def _over_all(batch, n: int):
    """``batch`` over all ``n`` prompted images, a chunk at a time, as ``full_batch`` wants it."""
    bounds = chunk_bounds(n, FULL_BATCH_CHUNK)
    return (lambda i, grad: batch(np.arange(*bounds[i]), grad)), len(bounds)


def _epoch(batch, opt, n: int, batch_size: Optional[int], rng, p_stats: Optional[_PStatistics],
           concepts: int) -> List[float]:
    """One epoch of eq. 1: mini-batches centred per batch, or (``batch_size`` None) one step over all N.
    ``p_stats``: P's statistics to gather on the way (the first epoch). Returns each step's mean cos3."""
    if batch_size is None:
        if p_stats is not None:
            for lo, hi in chunk_bounds(n, FULL_BATCH_CHUNK):
                p_stats.add(batch(np.arange(lo, hi), False)[1].reshape(hi - lo, concepts, -1))
        opt.zero_grad()
        cos = full_batch_cos3_backward(*_over_all(batch, n))
        opt.step()
        return [float(cos.mean())]
    sims = []
    order = rng.permutation(n)
    for lo in range(0, n, batch_size):
        chosen = np.sort(order[lo:lo + batch_size])
        if len(chosen) < 2 and p_stats is None:
            continue
        maps, p = batch(chosen)
        if p_stats is not None:
            p_stats.add(p.reshape(len(chosen), concepts, -1))
        if len(chosen) < 2:  # cos3 centres over the batch: a lone image is no step, but P's statistics count it
            continue
        sim = cos_cubed_similarity(maps, p)
        opt.zero_grad()
        (-sim.mean()).backward()
        opt.step()
        sims.append(float(sim.detach().mean()))
    return sims


def train_spatial(features, feature_shape: Tuple[int, int, int], prompted, prompted_rows: np.ndarray,
                  concept_embeddings: np.ndarray, train_labels: np.ndarray, val: Tuple[object, np.ndarray],
                  num_classes: int, *, grid: int, pooling: str, epochs: int, batch_size: Optional[int], lr: float,
                  sparse: SpatialSparseParams, seed: int = 0, device: str = "cpu",
                  held_out: Optional[HeldOut] = None) -> SpatialTrainResult:
    """``features``: rows (N_train, C * h * w) of every train image (array or ``NpyRows``); ``prompted``: rows
    (n * grid^2, d) of the n train images ``prompted_rows`` (indices into ``features``). ``batch_size``
    None: eq. 1 over every prompted image at once, a step an epoch (``full_batch``). ``held_out``:
    Label-free CBM's stop on val's ringed copies."""
    started = time.perf_counter()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    concepts = torch.as_tensor(np.asarray(concept_embeddings, dtype=np.float32)).to(device)
    model = SpatialBottleneck(feature_shape[0], len(concepts), num_classes, grid, pooling).to(device)
    opt = torch.optim.Adam(model.conv.parameters(), lr=lr)
    n = len(prompted_rows)
    batch = _batches(model, features, feature_shape, prompted, prompted_rows, concepts, grid, device)
    val_cos = None
    if held_out is not None:
        if len(held_out.rows) < 2:
            from sparse_cbm.errors import TrainingError

            raise TrainingError(f"Label-free CBM's stop scores eq. 1 on val's ringed copies, centred over them: "
                                f"{len(held_out.rows)} val image(s) is too few. Set spatial.val_images >= 2 and "
                                f"dataset.val_fraction > 0.")
        val_batch = _batches(model, val[0], feature_shape, held_out.prompted, held_out.rows, concepts, grid, device)
        val_cos = lambda: full_batch_cos3(*_over_all(val_batch, len(held_out.rows)))  # noqa: E731
    p_stats = _PStatistics(len(concepts))
    steps: List[Dict[str, float]] = []
    similarity, kept_epoch, best = float("nan"), epochs, None
    with tqdm(total=epochs if batch_size is None else math.ceil(n / batch_size) * epochs, desc="train spatial",
              unit="step") as bar:
        for epoch in range(1, epochs + 1):
            sims = _epoch(batch, opt, n, batch_size, rng, p_stats if epoch == 1 else None, len(concepts))
            steps += [{"step": len(steps) + i, "epoch": epoch, "cos3": c} for i, c in enumerate(sims)]
            bar.update(len(sims))
            similarity = float(np.mean(sims)) if sims else float("nan")
            bar.set_postfix(cos3=f"{similarity:.3f}")
            if held_out is not None and held_out.early_stop:
                score = float(val_cos().mean())
                if best is not None and score <= best[0]:  # LF-CBM: stop once val stops improving, keep the best
                    score, kept_epoch, weight, similarity = best
                    model.conv.weight.data.copy_(weight)
                    break
                best = (score, epoch, model.conv.weight.detach().clone(), similarity)
    kept, val_similarity = np.arange(len(concepts)), None
    if held_out is not None:  # at 4 decimals: the values the cutoff compares are the ones the model's config records
        val_similarity = np.round(val_cos().reshape(len(concepts), -1).mean(1).cpu().numpy().astype(np.float64), 4)
        if held_out.cutoff is not None:
            kept = _cut(model, val_similarity, held_out.cutoff)
    model.eval()
    path = _fit_final_layer(model, features, feature_shape, train_labels, val, num_classes, sparse, seed, device)
    p_mean, p_std = p_stats.result()
    return SpatialTrainResult(model, steps, path, similarity, p_mean[kept], p_std[kept], time.perf_counter() - started,
                              kept, kept_epoch, val_similarity)


def _cut(model: SpatialBottleneck, similarity: np.ndarray, cutoff: float) -> np.ndarray:
    """LF-CBM's interpretability cutoff: keep the concepts whose val similarity is above ``cutoff``; the
    convolution keeps their rows only. Returns their indices."""
    from sparse_cbm.errors import TrainingError

    kept = np.flatnonzero(similarity > cutoff)
    if not len(kept):
        raise TrainingError(f"spatial.cutoff {cutoff:g} drops every concept (the best val similarity is "
                            f"{similarity.max():.3f}): lower spatial.cutoff, or set it to null")
    weight = model.conv.weight.detach()[torch.from_numpy(kept)].clone()
    model.conv = torch.nn.Conv2d(weight.shape[1], len(kept), kernel_size=1, bias=False).to(weight.device)
    model.conv.weight.data.copy_(weight)
    model.fc = StandardizedLinear.empty(len(kept), model.num_classes)
    return kept


def _pooled_rows(model: SpatialBottleneck, features, feature_shape, folder: Path, name: str,
                 batch_size: int = 256) -> np.ndarray:
    """c* of every row of ``features``, written a batch at a time into a float32 .npy in ``folder`` and
    returned as a read-only memory map (the path then reads it each epoch instead of redoing the maps)."""
    out = np.lib.format.open_memmap(folder / f"{name}.npy", mode="w+", dtype=np.float32,
                                    shape=(len(features), model.conv.out_channels))
    with torch.no_grad():
        for lo in range(0, len(features), batch_size):
            x = torch.from_numpy(np.asarray(features[lo:lo + batch_size], dtype=np.float32))
            out[lo:lo + len(x)] = model.pool(model.concept_maps(x.reshape(len(x), *feature_shape))).numpy()
    out.flush()
    del out
    return np.load(folder / f"{name}.npy", mmap_mode="r")


def _fit_final_layer(model: SpatialBottleneck, features, feature_shape, labels, val, num_classes,
                     sparse: SpatialSparseParams, seed: int, device) -> List[Dict[str, float]]:
    from sparse_cbm.bottleneck.sparse_layer import fit_sparse_path, resolve_scale

    model = model.cpu()
    with tempfile.TemporaryDirectory(prefix="salf-pooled-") as tmp:
        train_rows = _pooled_rows(model, features, feature_shape, Path(tmp), "train")
        val_rows = _pooled_rows(model, val[0], feature_shape, Path(tmp), "val")
        path = fit_sparse_path(lambda a: a, (train_rows, labels), (val_rows, val[1]), num_classes, alpha=sparse.alpha,
                               **sparse.path_arguments(), max_epochs=sparse.max_epochs, lr=sparse.lr, tol=sparse.tol,
                               batch_size=sparse.batch_size, seed=seed, device=str(device),
                               scale=resolve_scale(sparse.scale, units_are_clip_scores=False),
                               solver=sparse.solver, shared_concepts=sparse.shared_for(False, num_classes),
                               nonneg=sparse.non_negative)
        del train_rows, val_rows
    layer = path.require_concepts(sparse.kept_nec(), "spatial", len(labels))
    model.fc = StandardizedLinear(layer.weight, layer.bias, layer.mean, layer.std)
    return path.summary()
