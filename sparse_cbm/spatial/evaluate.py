"""Evaluating SALF-CBM where every pixel's object is known.

* top-1 on every test image (from the feature-map cache), and how true its whole-image explanations are:
  the share of each image's top-k concepts by contribution that its annotations confirm, as the CBM's
  ``concept_quality`` scores them;
* heatmaps of the true class against the class object's mask (``heatmaps.SegmentationScores``,
  Chefer et al.'s protocol) on the test images with prompted copies: SALF-CBM's maps, Grad-CAM of
  the SALF-CBM head, Grad-CAM, Grad-CAM++ and LayerCAM of the black-box head (a linear probe on
  the same backbone's embedding), the raw P;
* the grid pointing game on 2 x 2 mosaics of test images of four different classes;
* Explain Anything: boxes around single objects, their top-k concepts against that object's
  own attributes (colour, shape, texture: never the background), beside the paper's ranking on
  the raw maps, the same ranking of the raw P and of the whole image's maps (what the region adds);
* local editing (``local_edits``): concepts lowered or raised in the box around the class object,
  and how often the prediction becomes the class each edit is meant to give.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from sparse_cbm.datasets.base import ImageSource
from sparse_cbm.evaluation.concept_quality import AnnotatedConcepts, top_k_hits, truth_rows
from sparse_cbm.spatial.heatmaps import GradCamHeatmaps, SegmentationScores, class_heatmaps, pointing_share, upsample
from sparse_cbm.spatial.model import SpatialBottleneck
from sparse_cbm.spatial.names import HEATMAP_METHODS
from sparse_cbm.spatial.regions import EDIT_UNITS, bounding_box, box_region, edit_maps, grid_region, region_scores
from sparse_cbm.spatial.train import local_similarities

log = logging.getLogger(__name__)


@dataclass
class SpatialEvaluation:
    model: SpatialBottleneck
    feature_shape: tuple
    grid: int
    p_mean: torch.Tensor  # (|D|,)
    p_std: torch.Tensor
    concept_embeddings: torch.Tensor  # (|D|, d)
    attribute_of: Dict[int, int]  # bottleneck concept -> annotated attribute column
    source: ImageSource  # the test split
    preprocess: Callable[[Image.Image], torch.Tensor]
    features: torch.nn.Module  # images -> feature maps
    gradcam: Dict[str, GradCamHeatmaps]  # method -> Grad-CAM of a classifier
    class_model: Optional[SpatialBottleneck] = None  # trained with one concept a class (Table 2's heatmaps)

    def feature_maps(self, rows: np.ndarray, feature_rows) -> torch.Tensor:
        x = torch.from_numpy(np.asarray(feature_rows[rows], dtype=np.float32))
        return x.reshape(len(rows), *self.feature_shape)

    def maps(self, rows: np.ndarray, feature_rows) -> torch.Tensor:
        return self.model.concept_maps(self.feature_maps(rows, feature_rows))

    @property
    def annotated(self) -> AnnotatedConcepts:
        """``attribute_of`` as the concept-quality metrics take it."""
        index = sorted(self.attribute_of)
        return AnnotatedConcepts(np.array(index, dtype=np.int64),
                                 np.array([self.attribute_of[m] for m in index], dtype=np.int64), [])

    @property
    def own_heatmaps(self) -> tuple:
        """The heatmap methods read off the SALF-CBM (and its class-concept model, when trained)."""
        return ("salf_cbm", *(("class_concept_maps",) if self.class_model is not None else ()))

    def class_maps(self, features: torch.Tensor, labels: Sequence[int]) -> torch.Tensor:
        """(B, h, w): the class-concept model's standardised map of class labels[i] on image i (the paper's
        Table 2 heatmap), from feature maps (B, C, h', w')."""
        z = self.class_model.standardised(self.class_model.concept_maps(features))
        return z[torch.arange(len(z)), torch.as_tensor(list(labels))]

    def raw_p(self, prompted, copies_per_image: int, batch: np.ndarray) -> torch.Tensor:
        """Standardised P (B, |D|, grid, grid) of the prompted-cache images ``batch`` (their positions)."""
        idx = np.concatenate([np.arange(i * copies_per_image, (i + 1) * copies_per_image) for i in batch])
        emb = torch.from_numpy(np.asarray(prompted[idx], dtype=np.float32)).reshape(len(batch), copies_per_image, -1)
        p = local_similarities(emb, self.concept_embeddings, self.grid)
        return (p - self.p_mean[None, :, None, None]) / self.p_std[None, :, None, None]


@dataclass
class SplitPass:
    predictions: List[np.ndarray]  # one (N,) array per model, in the order given
    precision: Optional[Dict[str, Any]]  # k and three shares of the first model (``split_pass``), or None


@torch.no_grad()
def split_pass(models: Sequence[SpatialBottleneck], features, shape: tuple, annotations: Optional[np.ndarray] = None,
               matched: Optional[AnnotatedConcepts] = None, k: int = 3, batch_size: int = 512) -> SplitPass:
    """One pass over the feature-map cache (N, C * h * w): every model's predictions and, with annotations
    (N, attributes) and the concepts that name them, the first model's whole-image explanations scored as
    the CBM's are (``concept_quality``): the share of each image's k top concepts true of it, ranked by
    contribution to the predicted class (W[c, m] times the standardised c*_m), by raw c* (as the CBM's by its raw
    activations), and at random."""
    preds: List[List[np.ndarray]] = [[] for _ in models]
    scored = annotations is not None and matched is not None and len(matched) > 0
    sums = {"by_contribution": 0.0, "by_activation": 0.0, "random_ranking": 0.0}
    for lo in range(0, len(features), batch_size):
        x = torch.from_numpy(np.asarray(features[lo:lo + batch_size], dtype=np.float32)).reshape(-1, *shape)
        for j, model in enumerate(models):
            out = model(x)
            preds[j].append(out.logits.argmax(1).numpy())
            if j == 0 and scored:
                truth = truth_rows(annotations, matched, slice(lo, lo + len(x)), out.pooled.shape[1])
                contrib = model.fc.contributions(out.pooled, out.logits.argmax(1))
                sums["by_contribution"] += top_k_hits(contrib, truth, k)
                sums["by_activation"] += top_k_hits(out.pooled, truth, k)
                sums["random_ranking"] += float(truth.float().mean(dim=1).sum())
    n = max(len(features), 1)
    return SplitPass([np.concatenate(p) if p else np.zeros(0, dtype=np.int64) for p in preds],
                    {"k": k, **{name: round(v / n, 4) for name, v in sums.items()}} if scored else None)


def decided_by_object(ev: SpatialEvaluation, rows: np.ndarray) -> np.ndarray:
    """Positions (into ``rows``) of the images whose class the class object alone decides: only there is
    the object's mask where all the class's evidence lies."""
    return np.array([i for i, r in enumerate(rows) if ev.source.object_map(int(r)).decided_by_object], dtype=np.int64)


def score_heatmaps(ev: SpatialEvaluation, rows: np.ndarray, feature_rows, prompted, threshold,
                   batch_size: int = 32) -> Dict[str, Dict[str, float]]:
    """Every heatmap method on the test images ``rows`` (with prompted copies, in cache order) whose
    class is decided by the class object alone; the Grad-CAMs scored are those ``ev.gradcam`` holds."""
    methods = [m for m in HEATMAP_METHODS if m in (*ev.own_heatmaps, "raw_p") or m in ev.gradcam]
    per_method = {m: SegmentationScores(threshold) for m in methods}
    weight = ev.model.fc.weight.detach()
    k = ev.grid * ev.grid
    scored = decided_by_object(ev, rows)
    for lo in tqdm(range(0, len(scored), batch_size), desc="heatmaps", unit="batch"):
        batch = scored[lo:lo + batch_size]
        images = [ev.source.object_map(int(rows[i])) for i in batch]
        labels = [int(ev.source.labels[int(rows[i])]) for i in batch]
        size = images[0].labels.shape
        with torch.no_grad():
            x = ev.feature_maps(rows[batch], feature_rows)
            heat = {"salf_cbm": class_heatmaps(ev.model.standardised(ev.model.concept_maps(x)), weight, labels),
                    "raw_p": class_heatmaps(ev.raw_p(prompted, k, batch), weight, labels)}
            if ev.class_model is not None:
                heat["class_concept_maps"] = ev.class_maps(x, labels)
        heat = {m: upsample(h, size).numpy() for m, h in heat.items()}
        tensors = torch.stack([ev.preprocess(ev.source.load(int(rows[i]))) for i in batch])
        for method, cam in ev.gradcam.items():
            heat[method] = upsample(torch.from_numpy(cam(tensors, labels)), size).numpy()
        for j, objects in enumerate(images):
            mask = objects.mask(objects.class_object)
            for method in methods:
                per_method[method].add(heat[method][j], mask)
    return {m: scores.result() for m, scores in per_method.items()}


def mosaic(sources: Sequence[Image.Image]) -> Image.Image:
    """A 2 x 2 grid of four equal images, row-major."""
    w, h = sources[0].size
    out = Image.new("RGB", (2 * w, 2 * h))
    for q, image in enumerate(sources):
        out.paste(image, ((q % 2) * w, (q // 2) * h))
    return out


def pointing_game(ev: SpatialEvaluation, grids: int, seed: int) -> Dict[str, float]:
    """Rao et al.'s grid pointing game on ``grids`` seeded mosaics of four test images of four classes."""
    rng = np.random.default_rng([seed, 2024])
    labels = np.asarray(ev.source.labels)
    classes = np.unique(labels)
    if len(classes) < 4 or grids == 0:
        return {}
    shares: Dict[str, List[float]] = {m: [] for m in (*ev.own_heatmaps, *ev.gradcam)}
    weight = ev.model.fc.weight.detach()
    for _ in tqdm(range(grids), desc="pointing game", unit="grid"):
        chosen = rng.choice(classes, 4, replace=False)
        picks = [int(rng.choice(np.flatnonzero(labels == c))) for c in chosen]
        x = ev.preprocess(mosaic([ev.source.load(i) for i in picks]))[None].repeat(4, 1, 1, 1)
        size = x.shape[-2:]
        with torch.no_grad():
            feats = ev.features(x[:1])
            maps = ev.model.concept_maps(feats)
            heat = {"salf_cbm": class_heatmaps(ev.model.standardised(maps).repeat(4, 1, 1, 1), weight, chosen.tolist())}
            if ev.class_model is not None:
                heat["class_concept_maps"] = ev.class_maps(feats.expand(4, *feats.shape[1:]), chosen.tolist())
        heat = {m: upsample(h, size).numpy() for m, h in heat.items()}
        for method, cam in ev.gradcam.items():
            heat[method] = cam(x, chosen.tolist())
        half_h, half_w = size[0] // 2, size[1] // 2
        for q in range(4):
            cell = ((q // 2) * half_h, (q // 2 + 1) * half_h, (q % 2) * half_w, (q % 2 + 1) * half_w)
            for method, h in heat.items():
                shares[method].append(pointing_share(h[q], cell))
    return {m: round(float(np.mean(v)), 4) for m, v in shares.items()}


def _true_concepts(ev: SpatialEvaluation, annotations: np.ndarray) -> set:
    return {m for m, a in ev.attribute_of.items() if annotations[a]}


def _precision(scores: torch.Tensor, truth: set, k: int, among: Optional[torch.Tensor] = None) -> float:
    """The share of the k best-scored concepts (of ``among`` only, when given) that are in ``truth``."""
    among = torch.arange(len(scores)) if among is None else among
    top = among[scores[among].topk(min(k, len(among))).indices].tolist()
    return sum(m in truth for m in top) / len(top)


def explain_anything(ev: SpatialEvaluation, rows: np.ndarray, feature_rows, prompted, regions: int, k: int,
                     seed: int) -> Dict[str, float]:
    """Top-k precision of the concepts of boxes around single objects, against that object's attributes."""
    rng = np.random.default_rng([seed, 4242])
    order = rng.permutation(len(rows))[:regions]
    hits: Dict[str, List[float]] = {"salf_cbm": [], "salf_cbm_raw_maps": [], "raw_p": [], "whole_image": [],
                                    "random": []}
    # a diagnostic, not a method: each ranking restricted to the concepts that name annotated attributes (an
    # oracle vocabulary), which separates "the maps do not see the object's attributes" from "associations
    # outrank them"
    words = {m: [] for m in hits}
    vocabulary = torch.tensor(sorted(ev.attribute_of), dtype=torch.long)
    kinds: Dict[str, List[float]] = {"class_object": [], "other_object": []}
    per_image = ev.grid * ev.grid
    for pos in tqdm(order, desc="explain anything", unit="region"):
        objects = ev.source.object_map(int(rows[pos]))
        visible = [j for j in range(1, len(objects.objects) + 1) if objects.mask(j).any()]
        target = int(rng.choice(visible))
        truth = _true_concepts(ev, objects.objects[target - 1])
        region = box_region(objects.labels.shape, bounding_box(objects.mask(target)))
        with torch.no_grad():
            maps = ev.maps(rows[[pos]], feature_rows)
            z = ev.model.standardised(maps)
            # salf_cbm_raw_maps: the paper's sum of I * c(x)[m] over the raw maps (the same order as their region mean)
            rankings = {"salf_cbm": region_scores(z, region)[0], "salf_cbm_raw_maps": region_scores(maps, region)[0],
                        "raw_p": region_scores(ev.raw_p(prompted, per_image, np.array([pos])), region)[0],
                        "whole_image": z.mean(dim=(2, 3))[0], "random": torch.from_numpy(rng.random(z.shape[1]))}
        for method, scores in rankings.items():
            hits[method].append(_precision(scores, truth, k))
            if len(vocabulary):
                words[method].append(_precision(scores, truth, k, among=vocabulary))
        kinds["class_object" if target == objects.class_object else "other_object"].append(hits["salf_cbm"][-1])
    out = {f"precision_at_{k}": {m: round(float(np.mean(v)), 4) for m, v in hits.items()}}
    out["salf_cbm_by_object"] = {kind: round(float(np.mean(v)), 4) for kind, v in kinds.items() if v}
    if len(vocabulary):
        out[f"precision_at_{k}_attribute_words_only"] = {m: round(float(np.mean(v)), 4) for m, v in words.items()}
    out["regions"] = len(order)
    return out


EDITS = ("lower_top_concept", "lower_class_concepts", "raise_runner_up", "raise_other_class")


def _positive(weight: torch.Tensor, c: int) -> List[int]:
    return torch.nonzero(weight[c] > 0).flatten().tolist()


def _edit_plan(weight: torch.Tensor, z_pooled: torch.Tensor, pred: int, runner_up: int,
               other: Optional[int]) -> Dict[str, Optional[tuple]]:
    """Each edit of ``local_edits``: (concept -> sign, intended class), or None where it has nothing to
    edit; from the final layer's weights (C, |D|), one image's pooled standardised concepts (|D|,), its
    predicted class, runner-up and a random other class."""
    own = _positive(weight, pred)
    top = own[int((weight[pred, own] * z_pooled[own]).argmax())] if own else None
    plans = {"lower_top_concept": ({top: -1.0}, runner_up) if own else None,
             "lower_class_concepts": ({m: -1.0 for m in own}, runner_up) if own else None,
             "raise_runner_up": ({m: 1.0 for m in _positive(weight, runner_up)}, runner_up),
             "raise_other_class": None if other is None else ({m: 1.0 for m in _positive(weight, other)}, other)}
    return {name: plan if plan and plan[0] else None for name, plan in plans.items()}


@torch.no_grad()
def local_edits(ev: SpatialEvaluation, rows: np.ndarray, feature_rows, beta: float, units: str = "raw",
                seed: int = 0) -> Dict[str, object]:
    """Edits of the concept maps inside the class object's box, each with the class it is meant to
    give, and how often the prediction becomes that class.

    An edit adds ``sign * beta * I`` to a concept's map, I the box's share of each cell: the paper's
    c[m] <- c[m] + beta I in raw map units (``units="raw"``), or ``beta`` standard deviations of the
    concept (``"sd"``, what ``sparse-cbm explain --edit`` takes). Four edits (``EDITS``), on every image
    whose predicted class has a positive-weight concept (``images``):

    * ``lower_top_concept``: of the predicted class's positive-weight concepts, the one contributing
      most (its weight times its pooled standardised value), lowered; meant to give the runner-up;
    * ``lower_class_concepts``: every positive-weight concept of the predicted class, lowered; meant to
      give the runner-up;
    * ``raise_runner_up``: the runner-up's positive-weight concepts, raised; meant to give the runner-up;
    * ``raise_other_class``: the positive-weight concepts of a seeded random class other than the
      prediction and the runner-up, raised; meant to give that class.

    Per edit: ``to_intended`` (the share of images whose prediction became the intended class) and
    ``changed`` (the share whose prediction changed at all), over the images where the edit has a
    concept to move (a class with no positive weight cannot be raised; with two classes there is no
    other class)."""
    if units not in EDIT_UNITS:
        raise ValueError(f"edit units must be one of {', '.join(EDIT_UNITS)}, got {units!r}")
    weight, fc = ev.model.fc.weight.detach(), ev.model.fc
    scale = fc.std if units == "sd" else torch.ones_like(fc.std)
    rng = np.random.default_rng(seed)
    hits: Dict[str, List[bool]] = {name: [] for name in EDITS}
    changed: Dict[str, List[bool]] = {name: [] for name in EDITS}
    images = 0
    for i in rows:
        objects = ev.source.object_map(int(i))
        maps = ev.maps(np.array([i]), feature_rows)
        logits = ev.model.decide(maps)[0]
        pred, runner_up = logits.topk(2).indices.tolist()
        others = [c for c in range(len(logits)) if c not in (pred, runner_up)]
        other = int(others[rng.integers(len(others))]) if others else None
        if not _positive(weight, pred):
            continue
        images += 1
        region = grid_region(box_region(objects.labels.shape, bounding_box(objects.mask(objects.class_object))),
                             maps.shape[-2:])
        z_pooled = ((ev.model.pool(maps) - fc.mean) / fc.std)[0]  # what the final layer weighs
        for name, plan in _edit_plan(weight, z_pooled, pred, runner_up, other).items():
            if plan is None:
                continue
            signs, intended = plan
            edited = int(ev.model.decide(edit_maps(maps, scale, region, {m: s * beta for m, s in signs.items()}))
                         .argmax())
            hits[name].append(edited == intended)
            changed[name].append(edited != pred)
    out: Dict[str, object] = {"beta": beta, "units": units, "images": images}
    for name in EDITS:
        out[name] = {"to_intended": round(float(np.mean(hits[name])), 4) if hits[name] else None,
                     "changed": round(float(np.mean(changed[name])), 4) if changed[name] else None}
    return out


@torch.no_grad()
def heatmap_panels(ev: SpatialEvaluation, rows: np.ndarray, feature_rows, count: int, k: int) -> Dict[str, np.ndarray]:
    """For the first ``count`` of ``rows``: the image, the class object's mask, the predicted class, the
    k concepts contributing most to it and their maps (standardised, upsampled), the class heatmap and
    Grad-CAM's (of the black-box head, else of the SALF-CBM head)."""
    rows = np.asarray(rows[:count])
    if not len(rows):
        return {}
    images, masks, preds, tops, concept_maps, heat, cams = [], [], [], [], [], [], []
    weight = ev.model.fc.weight.detach()
    cam = ev.gradcam.get("gradcam_probe") or next(iter(ev.gradcam.values()), None)
    for i in rows:
        image = ev.source.load(int(i)).convert("RGB")
        objects = ev.source.object_map(int(i))
        size = objects.labels.shape
        maps = ev.maps(np.array([i]), feature_rows)
        z = ev.model.standardised(maps)
        pred = int(ev.model.decide(maps).argmax())
        contributions = weight[pred] * z.mean(dim=(2, 3))[0]
        top = contributions.topk(k).indices
        images.append(np.asarray(image.resize((size[1], size[0]))))
        masks.append(objects.mask(objects.class_object))
        preds.append(pred)
        tops.append(top.numpy())
        concept_maps.append(upsample(z[:, top], size)[0].numpy())
        heat.append(upsample(class_heatmaps(z, weight, [pred]), size)[0].numpy())
        if cam is not None:
            x = ev.preprocess(image)[None]
            cams.append(upsample(torch.from_numpy(cam(x, [pred])), size)[0].numpy())
    out = {"rows": rows, "images": np.stack(images), "masks": np.stack(masks), "predictions": np.array(preds),
           "labels": np.asarray(ev.source.labels)[rows], "concepts": np.stack(tops),
           "concept_maps": np.stack(concept_maps).astype(np.float16), "class_heatmaps": np.stack(heat).astype(np.float16)}
    if cams:
        out["gradcam"] = np.stack(cams).astype(np.float16)
    return out
