"""The same bottleneck under every objective, final layer and form, measured the same way, each beside
a random-concept control. See docs/methods.md#the-compare-grid.

Each CBL is trained once and shared by both final layers (the dense one trained with it, the sparse
one fitted afterwards on its frozen activations, ``fit_sparse_final_layer``).
"""

from __future__ import annotations

import copy
import itertools
import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from sparse_cbm.bottleneck.config import TrainParams, check_combination, objective_label
from sparse_cbm.bottleneck.model import ConceptBottleneck, StandardizedLinear
from sparse_cbm.bottleneck.train import sparse_path, train_bottleneck
from sparse_cbm.classifiers.cbm import BottleneckClassifier
from sparse_cbm.datasets.base import Attribute
from sparse_cbm.evaluation.concept_quality import concept_quality, match_annotations

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


def nec(model: ConceptBottleneck) -> float:
    """Non-zero final-layer weights per class."""
    return float((model.fc.weight.detach() != 0).sum()) / model.num_classes


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


def compare_bottlenecks(concept_embeddings: np.ndarray, concepts: Sequence[str], num_classes: int,
                        logit_scale: float, train: Tuple[Any, np.ndarray], val: Tuple[Any, np.ndarray],
                        test: Tuple[Any, np.ndarray], *, losses: Sequence[str], final_layers: Sequence[str],
                        forms: Sequence[str], params: TrainParams, seed: int, device: str = "cpu",
                        random_control: bool = True, annotations: Optional[np.ndarray] = None,
                        attributes: Sequence[Attribute] = (), batch_size: int = 4096,
                        quality: Optional[Dict[str, Any]] = None) -> List[Dict[str, Any]]:
    """One record per (loss, form, final layer): see the module docstring."""
    control_embeddings = random_concept_embeddings(concept_embeddings, seed) if random_control else None
    records = []
    for loss, variant in _variants(params, losses, forms):
        label = objective_label(loss, variant)
        log.info("compare: %s, %s form", label, variant.form)
        real = _fit(concept_embeddings, num_classes, logit_scale, train, val, test, loss, variant, seed, device,
                    final_layers, batch_size)
        control = _fit(control_embeddings, num_classes, logit_scale, train, val, test, loss, variant, seed, device,
                       final_layers, batch_size) if control_embeddings is not None else None
        for layer, (model, anec) in real.items():
            record: Dict[str, Any] = {"loss": loss, "objective": label, "form": variant.form, "final_layer": layer,
                                      "top1": round(top1(model, test[0], test[1], batch_size), 4),
                                      "nec": round(nec(model), 2), "anec5": anec,
                                      "units": len(model.units)}
            if annotations is not None:
                classifier = BottleneckClassifier(model, concepts)
                summary = concept_quality(classifier, test[0], test[1], annotations,
                                          match_annotations(classifier.concepts, attributes),
                                          train_embeddings=train[0], batch_size=batch_size, seed=seed,
                                          **(quality or {}))["summary"]
                record.update(auroc=summary["auroc"], precision_at_k=summary["precision_at_k"],
                              intervention=summary.get("intervention"), deletion=summary.get("deletion"))
            if control is not None:
                record["random_concepts_top1"] = round(top1(control[layer][0], test[0], test[1], batch_size), 4)
                record["random_concepts_anec5"] = control[layer][1]
            records.append(record)
    return records


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
        out["sparse"] = (with_layer(dense, path.choose_within(params.sparse.target_nec)), anec)
    return out
