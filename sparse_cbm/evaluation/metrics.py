"""Classification metrics as JSON-ready dictionaries (rounded floats, None where undefined).

A class with no test images has no recall (per-class accuracy) and no F1: they are
None and left out of the macro averages, which run over the classes that have test
images. A class with test images that is never predicted has precision 0.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np

DIGITS = 6


def _num(x: float) -> Optional[float]:
    return None if x is None or not np.isfinite(x) else round(float(x), DIGITS)


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """int64 (C, C): row = true class, column = predicted class."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if len(y) and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(f"{name} must lie in [0, num_classes={num_classes}), got values from {y.min()} "
                             f"to {y.max()}")
    return np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes)


def classification_report(y_true, y_pred, top5=None, *, num_classes: int,
                          with_confusion: bool = True) -> Dict[str, Any]:
    """Top-1 (and top-5 when ``top5`` (N, k) is given), macro precision / recall / F1 and
    balanced accuracy, per-class support, accuracy, precision, F1, and the confusion matrix
    (nested lists; ``with_confusion=False`` leaves it out: it has C^2 entries)."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D of the same length, got {y_true.shape} and {y_pred.shape}")
    cm = confusion_matrix(y_true, y_pred, num_classes)
    tp = np.diag(cm).astype(np.float64)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    has = support > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(has, tp / support, np.nan)
        precision = np.where(predicted > 0, tp / predicted, np.where(has, 0.0, np.nan))
        f1 = np.where(has, np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0),
                      np.nan)
    n = len(y_true)
    report: Dict[str, Any] = {
        "n": n,
        "num_classes": num_classes,
        "classes_without_test_images": int((~has).sum()),
        "top1": _num(tp.sum() / n) if n else None,
        "macro_precision": _num(precision[has].mean()) if has.any() else None,
        "macro_recall": _num(recall[has].mean()) if has.any() else None,
        "macro_f1": _num(f1[has].mean()) if has.any() else None,
        "per_class": [{"class_index": c, "support": int(support[c]), "accuracy": _num(recall[c]),
                       "precision": _num(precision[c]), "f1": _num(f1[c])} for c in range(num_classes)],
    }
    report["balanced_accuracy"] = report["macro_recall"]
    if top5 is not None:
        top5 = np.asarray(top5, dtype=np.int64)
        if top5.ndim != 2 or len(top5) != n:
            raise ValueError(f"top5 must have shape (N, k) with N={n}, got {top5.shape}")
        report["top5"] = _num((top5 == y_true[:, None]).any(axis=1).mean()) if n else None
    if with_confusion:
        report["confusion_matrix"] = cm.tolist()
    return report
