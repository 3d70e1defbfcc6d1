"""The same bottleneck under every objective, final layer and form, measured the same way, each beside
a random-concept control. See docs/methods.md#the-compare-grid.

Each CBL is trained once and shared by both final layers (the dense one trained with it, the sparse
one fitted afterwards on its frozen activations, ``fit_sparse_final_layer``).
"""

from __future__ import annotations

import copy
import itertools
import logging
import sys
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from tqdm import tqdm

from sparse_cbm.bottleneck.config import TrainParams, check_combination, objective_label
from sparse_cbm.bottleneck.final_layer import StandardizedLinear, nec
from sparse_cbm.bottleneck.model import ConceptBottleneck
from sparse_cbm.bottleneck.train import sparse_path, train_bottleneck
from sparse_cbm.classifiers.cbm import BottleneckClassifier
from sparse_cbm.datasets.base import Attribute
from sparse_cbm.datasets.corruptions import CORRUPTED_TEST
from sparse_cbm.evaluation.concept_quality import concept_auroc, concept_quality, match_annotations
from sparse_cbm.evaluation.intervention import POLICIES, fit_intervention_values, intervention_curves, summarize_curves

log = logging.getLogger(__name__)
ANEC = 5.0


def random_concept_embeddings(concept_embeddings: np.ndarray, seed: int) -> np.ndarray:
    """As many random embeddings as concepts, Gaussian with the concepts' mean and covariance."""
    real = np.asarray(concept_embeddings, dtype=np.float64)
    real = real / np.linalg.norm(real, axis=1, keepdims=True)
    rng = np.random.default_rng([seed, 7_919])
    cov = np.cov(real, rowvar=False) if len(real) > 1 else np.eye(real.shape[1]) * 1e-2
    return rng.multivariate_normal(real.mean(axis=0), cov, size=len(real), method="eigh").astype(np.float32)


def top1(model: ConceptBottleneck, embeddings, labels: np.ndarray, batch_size: int = 4096) -> float:
    pred = BottleneckClassifier(model, list(range(model.num_concepts))).predict(embeddings, batch_size, k=1)[0]
    return float((pred == np.asarray(labels)).mean()) if len(labels) else float("nan")


def with_layer(model: ConceptBottleneck, layer) -> ConceptBottleneck:
    out = copy.deepcopy(model)
    out.fc = StandardizedLinear(layer.weight, layer.bias, layer.mean, layer.std)
    return out.eval()


def _variants(base: TrainParams, losses, forms) -> List[Tuple[str, TrainParams]]:
    out = []
    for loss, form in itertools.product(losses, forms):
        params = base.model_copy(update={"form": form, "final_layer": "dense"})
        try:
            check_combination(loss, params)
        except ValueError as exc:
            log.warning("compare: skipping %s with form %s: %s", loss, form, exc)
            continue
        out.append((loss, params))
    return out


@dataclass
class CompareData:
    """What the grid is trained and measured on: the concepts' text embeddings, the concepts, the
    classes' count, CLIP's logit scale, (embeddings, labels) of train, val and test, and the test
    split's attribute annotations (``None``: the dataset has none) with the attributes they name, and
    the corrupted test split where there is one."""

    concept_embeddings: np.ndarray
    concepts: Sequence[str]
    num_classes: int
    logit_scale: float
    train: Tuple[Any, np.ndarray]
    val: Tuple[Any, np.ndarray]
    test: Tuple[Any, np.ndarray]
    annotations: Optional[np.ndarray] = None
    attributes: Sequence[Attribute] = ()
    corrupted: Optional[Tuple[Any, np.ndarray, Optional[np.ndarray]]] = None  # test_corrupted's (embeddings,
    # labels, annotations), when the cache has it


@dataclass
class CompareSettings:
    """The grid (``losses`` x ``forms`` x ``final_layers``), the train params every cell shares, and
    how it is measured (``quality``: the keywords of ``concept_quality``)."""

    losses: Sequence[str]
    final_layers: Sequence[str]
    forms: Sequence[str]
    params: TrainParams
    seed: int
    device: str = "cpu"
    random_control: bool = True
    batch_size: int = 4096
    quality: Optional[Dict[str, Any]] = None


def compare_bottlenecks(data: CompareData, settings: CompareSettings) -> List[Dict[str, Any]]:
    """One record per (loss, form, final layer): see the module docstring."""
    concept_embeddings, concepts, num_classes, logit_scale = (data.concept_embeddings, data.concepts,
                                                              data.num_classes, data.logit_scale)
    train, val, test, annotations, attributes = data.train, data.val, data.test, data.annotations, data.attributes
    losses, final_layers, forms, params, seed, device = (settings.losses, settings.final_layers, settings.forms,
                                                         settings.params, settings.seed, settings.device)
    random_control, batch_size, quality = settings.random_control, settings.batch_size, settings.quality
    control_embeddings = random_concept_embeddings(concept_embeddings, seed) if random_control else None
    records = []
    variants = _variants(params, losses, forms)
    bar = tqdm(variants, desc="compare grid", unit="configuration", file=sys.stderr)
    for loss, variant in bar:
        label = objective_label(loss, variant)
        bar.set_postfix_str(f"{label}, {variant.form} form", refresh=False)
        log.info("compare: %s, %s form", label, variant.form)
        real = _fit(concept_embeddings, num_classes, logit_scale, train, val, test, loss, variant, seed, device,
                    final_layers, batch_size)
        control = _fit(control_embeddings, num_classes, logit_scale, train, val, test, loss, variant, seed, device,
                       final_layers, batch_size) if control_embeddings is not None else None
        for layer, (model, anec) in real.items():
            record: Dict[str, Any] = {"loss": loss, "objective": label, "form": variant.form, "final_layer": layer,
                                      "top1": round(top1(model, test[0], test[1], batch_size), 4),
                                      "nec": round(nec(model.fc.weight), 2), "anec5": anec,
                                      "units": len(model.units)}
            if annotations is not None:
                classifier = BottleneckClassifier(model, concepts)
                matched = match_annotations(classifier.concepts, attributes)
                summary = concept_quality(classifier, test[0], test[1], annotations, matched,
                                          train_embeddings=train[0], batch_size=batch_size, seed=seed,
                                          **(quality or {}))["summary"]
                record.update(auroc=summary["auroc"], precision_at_k=summary["precision_at_k"],
                              intervention=summary.get("intervention"), deletion=summary.get("deletion"))
            if data.corrupted is not None:
                record[CORRUPTED_TEST] = _corrupted(model, concepts, data, train, batch_size, seed, quality)
            if control is not None:
                record["random_concepts_top1"] = round(top1(control[layer][0], test[0], test[1], batch_size), 4)
                record["random_concepts_anec5"] = control[layer][1]
            records.append(record)
    return records


def config_name(record: Dict[str, Any]) -> str:
    """A grid record's name, its key in ``metrics/compare.json``: ``l1-faithful-sparse`` (loss, form, final
    layer), so that ``dvc metrics diff`` names the configuration a change belongs to."""
    return f"{record['loss']}-{record['form']}-{record['final_layer']}"


def keyed_records(records: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """``metrics/compare.json``'s grid: ``configs``, the records by name, and ``grid``, their names in the order
    the grid ran them (JSON written with sorted keys loses it; a list of names is no metric to DVC)."""
    names = [config_name(r) for r in records]
    if len(set(names)) != len(names):
        raise ValueError("two grid records share a name: " + ", ".join(names))
    return {"configs": dict(zip(names, records)), "grid": names}


def _corrupted(model: ConceptBottleneck, concepts, data: CompareData, train, batch_size: int, seed: int,
               quality: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """Top-1 on the corrupted test split and, where it is annotated, the concepts' mean AUROC and the
    intervention curves' summary there (not the rest of ``concept_quality``: nothing else is reported)."""
    embeddings, labels, annotations = data.corrupted
    out: Dict[str, Any] = {"top1": round(top1(model, embeddings, labels, batch_size), 4)}
    matched = match_annotations(concepts, data.attributes)
    if annotations is None or not len(matched):
        return out
    classifier = BottleneckClassifier(model, concepts)
    options = {"max_k": 10, "policies": POLICIES, **(quality or {})}
    values = fit_intervention_values(classifier, train[0], matched.concept_index, batch_size)
    curves = intervention_curves(classifier, embeddings, labels, annotations, matched.attribute_index, values,
                                 options["max_k"], options["policies"], batch_size, seed)
    aurocs = concept_auroc(classifier, embeddings, annotations, matched, batch_size)["auroc"].dropna()
    out.update(auroc=round(float(aurocs.mean()), 4) if len(aurocs) else None,
               intervention=summarize_curves(curves))
    return out


def _fit(concept_embeddings, num_classes, logit_scale, train, val, test, loss, params, seed, device, final_layers,
         batch_size) -> Dict[str, Tuple[ConceptBottleneck, Optional[float]]]:
    """The CBL trained once; the dense model, the sparse one, and the test top-1 at NEC closest to 5."""
    result = train_bottleneck(concept_embeddings, num_classes, logit_scale, train, val, loss=loss, params=params,
                              seed=seed, device=device)
    dense = result.model.cpu().eval()
    path = sparse_path(dense, train, val, params, seed, "cpu")
    anec = round(top1(with_layer(dense, path.choose(ANEC)), test[0], test[1], batch_size), 4)
    out = {}
    if "dense" in final_layers:
        out["dense"] = (dense, anec)
    if "sparse" in final_layers:
        out["sparse"] = (with_layer(dense, path.choose_within(params.sparse.kept_nec())), anec)
    return out
