"""The linear probe on the simulator: learns, picks C on val, is deterministic, reads NpyRows."""

import numpy as np
import pytest

from sparse_cbm.classifiers.linear_probe import fit_linear_probe
from sparse_cbm.storage.rows import NpyRows
from sparse_cbm.simulate import planted_world


@pytest.fixture(scope="module")
def splits():
    world = planted_world(num_classes=10, num_concepts=60, concepts_per_class=4, dim=64, seed=0)
    return [tuple(world.split(n, seed)[:2]) for n, seed in ((600, 1), (300, 2), (300, 3))]


def test_learns_and_chooses_c_on_val(splits):
    train, val, test = splits
    probe = fit_linear_probe((train[0].astype(np.float16), train[1]), val, cs=(0.01, 1.0, 100.0), max_iter=500)
    assert probe.C in (0.01, 1.0, 100.0)
    assert set(probe.val_accuracy) == {0.01, 1.0, 100.0}
    assert probe.val_accuracy[probe.C] == max(probe.val_accuracy.values())
    assert probe.C == min(c for c, a in probe.val_accuracy.items() if a == max(probe.val_accuracy.values()))
    assert probe.iterations[0.01] < probe.iterations[100.0]
    pred = probe.predict(test[0], batch_size=64)[0]
    assert pred.dtype == np.int64 and (pred == test[1]).mean() > 0.6  # chance: 0.1
    top1, top5 = probe.predict(test[0], k=5, batch_size=64)
    np.testing.assert_array_equal(top1, pred)
    assert top5.shape == (len(pred), 5) and (top5[:, 0] == pred).all()
    np.testing.assert_array_equal(pred, probe.model.predict(test[0] / np.linalg.norm(test[0], axis=1,
                                                                                    keepdims=True)))


def test_deterministic_and_reads_rows(splits, tmp_path):
    train, val, test = splits
    np.save(tmp_path / "train.npy", train[0].astype(np.float16))
    a = fit_linear_probe((NpyRows(tmp_path / "train.npy"), train[1]), val, cs=(0.1, 1.0), max_iter=200)
    b = fit_linear_probe((train[0].astype(np.float16), train[1]), val, cs=(1.0, 0.1), max_iter=200)
    assert a.C == b.C and a.val_accuracy == b.val_accuracy
    np.testing.assert_array_equal(a.model.coef_, b.model.coef_)
    np.testing.assert_array_equal(a.predict(test[0])[0], b.predict(test[0])[0])


def test_subset_and_labels_outside_train(splits):
    train, val, test = splits
    keep = np.isin(train[1], [2, 5, 7])
    probe = fit_linear_probe((train[0][keep], train[1][keep]), val, cs=(1.0,), max_iter=200, max_train=100)
    assert probe.model.classes_.tolist() == [2, 5, 7] and len(probe.model.coef_) == 3
    assert set(probe.predict(test[0])[0].tolist()) <= {2, 5, 7}
    two = np.isin(train[1], [3, 8])  # two classes: scikit-learn keeps one row of weights
    probe = fit_linear_probe((train[0][two], train[1][two]), val, cs=(1.0,), max_iter=200)
    top1, top = probe.predict(test[0], k=5)
    assert top.shape == (len(top1), 2) and set(top1.tolist()) <= {3, 8}
    sub = test[0][np.isin(test[1], [3, 8])]
    np.testing.assert_array_equal(probe.predict(sub)[0], probe.model.predict(sub / np.linalg.norm(sub, axis=1,
                                                                                               keepdims=True)))


@pytest.mark.parametrize("kw,match", [({"cs": ()}, "cs"), ({"cs": (0.0, 1.0)}, "cs"), ({"max_iter": 0}, "max_iter")])
def test_argument_checks(splits, kw, match):
    train, val, _ = splits
    with pytest.raises(ValueError, match=match):
        fit_linear_probe(train, val, **kw)
