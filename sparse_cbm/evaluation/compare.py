"""The same bottleneck under every objective, measured the same way, beside a random-concept control.

For each loss of the grid: train the CBM with the run's ``train`` params (each objective keeps
its own default for ``ce_to_cbl: auto``), then on the test split its top-1 and the concept
metrics of ``concept_quality`` where annotations exist. The **random-concept control**
(VLG-CBM's point: a CBM on random concepts can classify as well as one on real ones) trains the
same configuration on as many random text embeddings, drawn from a Gaussian with the mean and
covariance of the real concept embeddings (so they lie where CLIP's text embeddings lie, modality
gap included) and seeded: what the concepts' meaning adds is the difference between the two.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from sparse_cbm.bottleneck.config import TrainParams, objective_label
from sparse_cbm.bottleneck.train import train_bottleneck
from sparse_cbm.classifiers.cbm import BottleneckClassifier
from sparse_cbm.datasets.base import Attribute
from sparse_cbm.evaluation.concept_quality import concept_quality, match_annotations

log = logging.getLogger(__name__)


def random_concept_embeddings(concept_embeddings: np.ndarray, seed: int) -> np.ndarray:
    """As many random embeddings as concepts, Gaussian with the concepts' mean and covariance."""
    real = np.asarray(concept_embeddings, dtype=np.float64)
    real = real / np.linalg.norm(real, axis=1, keepdims=True)
    rng = np.random.default_rng([seed, 7_919])
    cov = np.cov(real, rowvar=False) if len(real) > 1 else np.eye(real.shape[1]) * 1e-2
    return rng.multivariate_normal(real.mean(axis=0), cov, size=len(real), method="eigh").astype(np.float32)


def _top1(classifier: BottleneckClassifier, embeddings, labels: np.ndarray, batch_size: int) -> float:
    pred = classifier.predict(embeddings, batch_size=batch_size, k=1)[0]
    return float((pred == np.asarray(labels)).mean()) if len(labels) else float("nan")


def compare_objectives(concept_embeddings: np.ndarray, concepts: Sequence[str], num_classes: int,
                       logit_scale: float, train: Tuple[Any, np.ndarray], val: Tuple[Any, np.ndarray],
                       test: Tuple[Any, np.ndarray], *, losses: Sequence[str], params: TrainParams, seed: int,
                       device: str = "cpu", random_control: bool = True,
                       annotations: Optional[np.ndarray] = None, attributes: Sequence[Attribute] = (),
                       batch_size: int = 4096, quality: Optional[Dict[str, Any]] = None) -> List[Dict[str, Any]]:
    """One record per loss: its label, test top-1, the concept metrics (annotated datasets) and the
    random-concept control's test top-1."""
    matched = match_annotations(concepts, attributes) if annotations is not None else None
    control_embeddings = random_concept_embeddings(concept_embeddings, seed) if random_control else None
    records = []
    for loss in losses:
        label = objective_label(loss, params)
        log.info("compare: training %s on the concepts%s", label, " and on random ones" if random_control else "")
        result = train_bottleneck(concept_embeddings, num_classes, logit_scale, train, val, loss=loss,
                                  params=params, seed=seed, device=device)
        model = BottleneckClassifier(result.model.cpu(), concepts, f"CBM ({label})")
        record: Dict[str, Any] = {"loss": loss, "objective": label,
                                  "top1": round(_top1(model, test[0], test[1], batch_size), 4)}
        if matched is not None:
            summary = concept_quality(model, test[0], test[1], annotations, matched, train_embeddings=train[0],
                                      batch_size=batch_size, seed=seed, **(quality or {}))["summary"]
            record.update(auroc=summary["auroc"], precision_at_k=summary["precision_at_k"],
                          intervention=summary.get("intervention"), deletion=summary.get("deletion"))
        if control_embeddings is not None:
            control = train_bottleneck(control_embeddings, num_classes, logit_scale, train, val, loss=loss,
                                       params=params, seed=seed, device=device)
            record["random_concepts_top1"] = round(
                _top1(BottleneckClassifier(control.model.cpu(), concepts), test[0], test[1], batch_size), 4)
        records.append(record)
    return records
