"""Classification metrics: values on a hand-checked example, a class with no test images, JSON output."""

import json

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score

from sparse_cbm.evaluation.metrics import classification_report, confusion_matrix


def per_class_4_undefined(report):
    return report["per_class"][4] == {"class_index": 4, "support": 0, "accuracy": None, "precision": None,
                                      "f1": None}


def test_hand_checked_example_with_an_empty_class():
    # class 3 has no test images (and is predicted once); class 2 is never predicted; class 4 neither
    y_true = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    y_pred = np.array([0, 0, 1, 1, 3, 0, 1, 1])
    top5 = np.array([[0, 1], [0, 1], [1, 0], [1, 2], [3, 1], [0, 1], [1, 2], [1, 0]])
    r = classification_report(y_true, y_pred, top5, num_classes=5)
    assert r["n"] == 8 and r["top1"] == 0.375 and r["top5"] == 0.75
    assert r["classes_without_test_images"] == 2
    assert per_class_4_undefined(r)
    per = r["per_class"]
    assert per[3] == {"class_index": 3, "support": 0, "accuracy": None, "precision": 0.0, "f1": None}  # 0 of 1
    assert per[0]["accuracy"] == round(2 / 3, 6) and per[0]["precision"] == round(2 / 3, 6)
    assert per[1]["accuracy"] == 0.5 and per[1]["precision"] == 0.25
    assert per[2] == {"class_index": 2, "support": 3, "accuracy": 0.0, "precision": 0.0, "f1": 0.0}
    labels = [0, 1, 2]  # macro over the classes with test images
    assert r["macro_recall"] == round(recall_score(y_true, y_pred, labels=labels, average="macro"), 6)
    assert r["balanced_accuracy"] == r["macro_recall"]
    assert r["macro_precision"] == round(precision_score(y_true, y_pred, labels=labels, average="macro",
                                                         zero_division=0), 6)
    assert r["macro_f1"] == round(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0), 6)
    assert r["confusion_matrix"] == [[2, 1, 0, 0, 0], [0, 1, 0, 1, 0], [1, 2, 0, 0, 0], [0] * 5, [0] * 5]
    json.dumps(r, allow_nan=False)  # strict JSON: no NaN anywhere


def test_confusion_matrix_matches_scikit_learn():
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 6, 200), rng.integers(0, 6, 200)
    from sklearn.metrics import confusion_matrix as sk_confusion
    np.testing.assert_array_equal(confusion_matrix(y_true, y_pred, 6), sk_confusion(y_true, y_pred, labels=range(6)))


def test_options_and_checks():
    r = classification_report([0, 1], [0, 1], num_classes=2, with_confusion=False)
    assert "confusion_matrix" not in r and "top5" not in r and r["top1"] == 1.0
    empty = classification_report([], [], np.zeros((0, 5)), num_classes=3)
    assert empty["top1"] is None and empty["macro_f1"] is None and empty["top5"] is None
    with pytest.raises(ValueError, match="num_classes=2"):
        classification_report([0, 2], [0, 1], num_classes=2)
    with pytest.raises(ValueError, match="same length"):
        classification_report([0, 1], [0], num_classes=2)
    with pytest.raises(ValueError, match="top5"):
        classification_report([0, 1], [0, 1], [[0], [1], [0]], num_classes=2)
