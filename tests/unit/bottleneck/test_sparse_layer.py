"""The sparse final layer: glm-saga against scikit-learn, NEC and the choice of a path point, the
layer's arithmetic, the path on the planted-concept simulator, seeding, the disk table and streaming."""

import math
import warnings

import numpy as np
import pytest
import torch

from sparse_cbm.bottleneck.final_layer import StandardizedLinear, nec
from sparse_cbm.bottleneck.model import ConceptBottleneck
from sparse_cbm.bottleneck.saga_rows import BlockLoader, DiskTable
from sparse_cbm.bottleneck.sparse_layer import (PathPoint, SparsePath, Standardised, accuracy_at_nec,
                                                activation_stats, bottleneck_activations, fit_sparse_path, top1)
from sparse_cbm.simulate import planted_world
from sparse_cbm.storage.rows import NpyRows


def identity(x):
    return x


# ---------------------------------------------------------------------------------------------
# glm-saga reaches scikit-learn's solution


def multinomial_problem(n=600, d=20, c=4, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((c, d)) * (rng.random((c, d)) < 0.3) * 2
    x = rng.standard_normal((n, d)) * rng.uniform(0.5, 3, d) + rng.uniform(-2, 2, d)
    z = (x - x.mean(0)) / x.std(0) @ w.T
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    y = np.array([rng.choice(c, p=row) for row in p])
    return x.astype(np.float32), y


def objective(x, y, w, b, lam, alpha):
    """glm-saga's objective in float64: mean cross-entropy + lam (alpha |W|_1 + (1 - alpha) / 2 |W|^2)."""
    z = x @ w.T + b
    z = z - z.max(1, keepdims=True)
    ce = -(z[np.arange(len(y)), y] - np.log(np.exp(z).sum(1))).mean()
    return ce + lam * alpha * np.abs(w).sum() + 0.5 * lam * (1 - alpha) * (w ** 2).sum()


def test_glm_saga_reaches_scikit_learns_elastic_net_solution():
    from sklearn.linear_model import LogisticRegression

    x, y = multinomial_problem()
    n, alpha, lam = len(y), 0.99, 0.02
    path = fit_sparse_path(identity, (x, y), None, 4, alpha=alpha, lambdas=[lam], max_epochs=3000, tol=1e-7,
                           batch_size=32, lr=0.1, seed=0)
    p = path.points[0]
    assert p.converged
    xs = (x.astype(np.float64) - path.mean.double().numpy()) / path.std.double().numpy()
    # scikit-learn minimises C * sum_i CE_i + alpha |W|_1 + (1 - alpha) / 2 |W|^2 (intercept unpenalised):
    # divided by C * N it is glm-saga's objective when 1 / (C * N) = lambda. Multinomial is its loss for
    # three or more classes; l1_ratio with solver="saga" is its elastic net (``penalty`` is deprecated in 1.8).
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no deprecated argument, no ConvergenceWarning
        sk = LogisticRegression(C=1 / (lam * n), l1_ratio=alpha, solver="saga", tol=1e-10, max_iter=100_000).fit(xs, y)
    w_glm, b_glm = p.weight.double().numpy(), p.bias.double().numpy()
    w_sk, b_sk = sk.coef_, sk.intercept_

    f_glm, f_sk = objective(xs, y, w_glm, b_glm, lam, alpha), objective(xs, y, w_sk, b_sk, lam, alpha)
    assert abs(f_glm - f_sk) < 1e-8, (f_glm, f_sk)
    # The same non-zero pattern, and scikit-learn's smallest kept weight is not a borderline one.
    assert np.array_equal(w_glm != 0, w_sk != 0)
    assert 5 < (w_sk != 0).sum() < w_sk.size and np.abs(w_sk[w_sk != 0]).min() > 2e-3
    # The softmax is unchanged by adding one vector v to every class's weights; along that direction only
    # the L2 term curves the objective, by mu = lam (1 - alpha) per entry, so an objective gap delta allows
    # a shift |v_j| up to sqrt(2 delta / (mu C)) = 5e-3 for delta = 1e-8. Away from it (weights centred
    # over the classes, which fix the probabilities) float32 SAGA agrees to 1e-4.
    assert np.abs(w_glm - w_sk).max() < 5e-3
    centred = lambda w: w - w.mean(0, keepdims=True)  # noqa: E731
    assert np.abs(centred(w_glm) - centred(w_sk)).max() < 1e-4
    assert np.abs(centred(b_glm[:, None]) - centred(b_sk[:, None])).max() < 1e-4


def test_max_lambda_is_glm_sagas():
    from glm_saga.elasticnet import maximum_reg_loader

    x, y = multinomial_problem(n=300, d=12, c=3, seed=1)
    stats = activation_stats(identity, x, y, 3, batch_size=64)
    prep = Standardised(identity, stats.mean.float(), stats.std.float())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = maximum_reg_loader(BlockLoader(x, y, 64, shuffle=False), group=False, preprocess=prep)
    assert stats.max_reg == pytest.approx(theirs, rel=1e-5)
    np.testing.assert_allclose(stats.mean.numpy(), x.astype(np.float64).mean(0), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(stats.std.numpy(), x.astype(np.float64).std(0, ddof=1), rtol=1e-9)


# ---------------------------------------------------------------------------------------------
# NEC and the choice of a point


def point(weight, val, lam=1.0):
    w = torch.tensor(weight, dtype=torch.float32)
    return PathPoint(lam=lam, nec=nec(w), train_top1=val, val_top1=val, weight=w, bias=torch.zeros(2),
                     converged=True, seconds=0.0, train_loss=0.0, val_loss=0.0)


@pytest.fixture()
def hand_path():
    points = [point([[0, 0, 0, 0], [0, 0, 0, 0]], 0.5, 4.0),  # NEC 0
              point([[1, 0, 0, 0], [0, 2, -3, 0]], 0.9, 3.0),  # NEC 1.5
              point([[1, 0.5, 0, 0], [0, 2, -3, 4]], 0.8, 2.0),  # NEC 2.5
              point([[1, 0, 0, 7], [0, 2, -3, 4]], 0.9, 1.0)]  # NEC 2.5
    return SparsePath(points=points, mean=torch.zeros(4), std=torch.ones(4), alpha=0.99, max_lambda=4.0,
                      table="memory")


def test_nec_counts_non_zero_weights_per_class(hand_path):
    assert [p.nec for p in hand_path.points] == [0.0, 1.5, 2.5, 2.5]
    assert hand_path.choose(2.5).nec == 2.5


def test_choose_closest_then_best_val_then_sparser(hand_path):
    assert hand_path.index_closest(0.2) == 0
    assert hand_path.index_closest(2.4) == 3  # P2 and P3 equally close: P3 has the better val top-1
    assert hand_path.index_closest(2.0) == 1  # P1, P2, P3 equally close; P1 and P3 tie on val: the sparser
    assert hand_path.index_closest(9.0) == 3
    assert torch.equal(hand_path.choose(2.4).weight, hand_path.points[3].weight)


def test_vlg_rule_takes_the_first_point_reaching_the_target_and_truncates(hand_path):
    assert hand_path.index_vlg(2.0) == 2
    layer = hand_path.choose_vlg(2.0)
    assert layer.nec == 2.0
    assert torch.equal(layer.weight, torch.tensor([[1, 0, 0, 0], [0, 2, -3, 4.0]]))  # the 4 largest |w|: 0.5 goes
    assert hand_path.index_vlg(3.0) == 3  # none reaches it: the last point


# ---------------------------------------------------------------------------------------------
# The layer


def random_layer(c=5, d=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(c, d, generator=g) * (torch.rand(c, d, generator=g) < 0.4)
    return StandardizedLinear(w, torch.randn(c, generator=g), torch.randn(d, generator=g) * 3,
                       torch.rand(d, generator=g) + 0.5)


def test_logits_and_contributions():
    layer = random_layer()
    a = torch.randn(7, 12, generator=torch.Generator().manual_seed(1)) * 4
    expected = ((a.double() - layer.mean.double()) / layer.std.double()) @ layer.weight.double().T + layer.bias.double()
    logits = layer(a).detach()
    torch.testing.assert_close(logits.double(), expected, rtol=1e-5, atol=1e-5)
    classes = logits.argmax(1)
    contrib = layer.contributions(a, classes)
    assert contrib.shape == a.shape
    rows = torch.arange(7)
    torch.testing.assert_close(contrib.sum(1), logits[rows, classes] - layer.bias[classes], rtol=1e-5, atol=1e-5)
    assert bool((contrib[:, layer.weight[classes[0]] == 0][0] == 0).all())  # no weight, no contribution
    w, b = layer.folded()
    torch.testing.assert_close(a @ w.T + b, logits, rtol=1e-4, atol=1e-4)
    assert layer.nec == int((layer.weight != 0).sum()) / 5
    assert set(layer.class_concepts(0)) == set(torch.nonzero(layer.weight[0]).flatten().tolist())


def test_state_dict_round_trip_through_safetensors(tmp_path):
    safetensors = pytest.importorskip("safetensors.torch")
    layer = random_layer()
    safetensors.save_file(layer.state_dict(), tmp_path / "layer.safetensors")
    back = StandardizedLinear.from_state_dict(safetensors.load_file(tmp_path / "layer.safetensors"))
    a = torch.randn(3, 12)
    assert torch.equal(back(a), layer(a))
    bad = layer.state_dict()
    bad["mean"] = bad["mean"][:5]
    with pytest.raises(ValueError, match="inconsistent"):
        StandardizedLinear.from_state_dict(bad)


# ---------------------------------------------------------------------------------------------
# The path on the planted-concept simulator


@pytest.fixture(scope="module")
def world():
    w = planted_world(num_classes=10, num_concepts=60, concepts_per_class=4, dim=64, seed=0)
    model = ConceptBottleneck(w.concept_text, 10, 100.0)
    with torch.no_grad():
        model.cbl.weight.copy_(torch.eye(60))  # the CBL passes CLIP's concept scores through
    return w, bottleneck_activations(model), w.split(2000, 1), w.split(500, 2), w.split(500, 3)


@pytest.fixture(scope="module")
def planted_path(world):
    torch.set_num_threads(2)
    w, act, train, val, _ = world
    return fit_sparse_path(act, train[:2], val[:2], 10, seed=0)


def test_path_finds_the_planted_concepts(world, planted_path):
    w, act, _, _, test = world
    path = planted_path
    necs = [p.nec for p in path.points]
    assert necs[0] <= 0.2 and necs[-1] > 20  # from (nearly) empty at the maximum lambda to dense
    assert all(b >= a - 0.5 for a, b in zip(necs, necs[1:]))  # NEC grows along the path
    layer = path.choose(4.0)
    assert 3.5 <= layer.nec <= 4.5  # each class owns 4 concepts
    test_top1 = top1(layer, act, test[:2])
    assert test_top1 > 0.8  # chance 0.1
    planted = [np.isin(layer.class_concepts(c), np.flatnonzero(w.class_concepts[c])).mean() for c in range(10)]
    assert np.mean(planted) > 0.8  # the kept concepts are mostly the class's own
    at5 = accuracy_at_nec(path, act, test[:2], 5.0)
    assert abs(at5.nec - 5.0) == min(abs(p.nec - 5.0) for p in path.points) and at5.top1 > 0.8
    vlg = accuracy_at_nec(path, act, test[:2], 5.0, rule="vlg")
    assert vlg.nec == 5.0 and vlg.top1 > 0.8


def small_fit(world, **kw):
    _, act, train, val, _ = world
    return fit_sparse_path(act, train[:2], val[:2], 10, **{"path_points": 4, "max_epochs": 3, "epsilon": 0.05,
                                                            "batch_size": 128, **kw})


def weights(path):
    return [(p.weight, p.bias) for p in path.points]


def same(a, b):
    return len(a) == len(b) and all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b))


def test_seeded(world):
    first = small_fit(world, seed=3)
    assert same(weights(first), weights(small_fit(world, seed=3)))
    assert not same(weights(first), weights(small_fit(world, seed=4)))  # the seed orders the blocks


def test_disk_table_gives_the_memory_tables_weights(world):
    memory = small_fit(world, table="memory")
    disk = small_fit(world, table="disk")
    assert (memory.table, disk.table) == ("memory", "disk")
    assert same(weights(memory), weights(disk))
    assert [p.val_top1 for p in memory.points] == [p.val_top1 for p in disk.points]


def test_streams_npy_rows_a_batch_at_a_time(world, tmp_path):
    w, act, train, val, _ = world
    x16 = train[0].astype(np.float16)
    np.save(tmp_path / "train.npy", x16)
    asked = []

    def recording(x):
        asked.append(tuple(x.shape))
        return act(x)

    table_dir = tmp_path / "tables"
    table_dir.mkdir()
    rows = NpyRows(tmp_path / "train.npy")
    kw = {"path_points": 3, "max_epochs": 2, "epsilon": 0.05, "batch_size": 64}
    streamed = fit_sparse_path(recording, (rows, train[1]), val[:2], 10, table="auto", table_budget_bytes=1,
                               table_dir=table_dir, **kw)
    assert streamed.table == "disk" and list(table_dir.iterdir()) == []  # auto went to disk, and cleaned up
    assert max(s[0] for s in asked) == 64 and sum(s[0] for s in asked) > 3 * len(train[1])
    in_memory = fit_sparse_path(act, (x16, train[1]), val[:2], 10, table="memory", **kw)
    assert same(weights(streamed), weights(in_memory))


# ---------------------------------------------------------------------------------------------
# The pieces


def test_disk_table_reads_what_was_written(tmp_path):
    table = DiskTable(tmp_path / "t.f32", 10, 3)
    mirror = np.zeros((10, 3), dtype=np.float32)
    assert table.to("cpu") is table and table.cpu() is table
    assert torch.equal(table[torch.arange(10)], torch.zeros(10, 3))
    rng = np.random.default_rng(0)
    for idx in (torch.arange(2, 5), torch.tensor([7, 1, 2, 9]), torch.arange(0, 10)):
        values = torch.from_numpy(rng.standard_normal((len(idx), 3)).astype(np.float32))
        table[idx] = values
        mirror[idx.numpy()] = values.numpy()
        assert torch.equal(table[idx], values)
    assert np.array_equal(table[torch.tensor([9, 0, 4, 5, 6])].numpy(), mirror[[9, 0, 4, 5, 6]])
    with pytest.raises(IndexError):
        table[torch.tensor([10])]
    table.close()


def test_block_loader_shuffles_contiguous_blocks():
    x, y = np.arange(20, dtype=np.float32).reshape(10, 2), np.arange(10)
    loader = BlockLoader(x, y, 3, seed=0)
    passes = [[(int(idx[0]), len(idx)) for _, _, idx in loader] for _ in range(4)]
    for blocks in passes:
        assert sorted(blocks) == [(0, 3), (3, 3), (6, 3), (9, 1)]
    assert len({tuple(b) for b in passes}) > 1  # a fresh order each pass
    again = BlockLoader(x, y, 3, seed=0)
    assert passes == [[(int(idx[0]), len(idx)) for _, _, idx in again] for _ in range(4)]
    xb, yb, idx = next(iter(BlockLoader(x, y, 4, shuffle=False)))
    assert xb.dtype == torch.float32 and torch.equal(xb, torch.from_numpy(x[:4])) and torch.equal(yb, torch.arange(4))
    assert math.isclose(len(BlockLoader(x, y, 4, max_blocks=2)), 2)


def test_shared_scale_prefers_the_concept_whose_score_moves_more():
    """Two concepts carry the same class signal; one's raw score moves ten times less but is a little
    cleaner (a word CLIP barely finds in the image, whose score correlates: "child" for star).
    Standardised per concept the lasso takes the weak one; with one shared scale it costs ten times
    the weight, and the strong one wins."""
    rng = np.random.default_rng(0)
    n = 2000
    y = rng.integers(0, 2, n)
    signal = (2 * y - 1) + 0.3 * rng.standard_normal(n)
    noise = rng.standard_normal((n, 2))
    x = np.stack([signal + 0.1 * noise[:, 0], 0.1 * (signal + 0.01 * noise[:, 1])], axis=1).astype(np.float32)
    kw = dict(lambdas=[0.2], max_epochs=300, tol=1e-6, seed=0, nonneg=False)
    per_concept = fit_sparse_path(identity, (x, y), None, 2, **kw).points[0].weight.abs().sum(0)
    shared = fit_sparse_path(identity, (x, y), None, 2, scale="shared", **kw)
    weights = shared.points[0].weight.abs().sum(0)
    assert weights[0] > 0 and weights[1] == 0, weights
    assert per_concept[1] > 0 and per_concept[1] > per_concept[0], per_concept  # standardised: the weak one
    assert torch.allclose(shared.std, torch.full((2,), float(shared.std[0])))
    with pytest.raises(ValueError, match="scale must be one of concept, shared"):
        fit_sparse_path(identity, (x, y), None, 2, scale="rank", **kw)


def test_a_layer_that_uses_no_concept_is_refused_with_what_to_change(hand_path):
    from sparse_cbm.errors import TrainingError

    assert hand_path.require_concepts(2.0, "train", 100).nec == 1.5
    with pytest.raises(TrainingError, match=r"NEC 0, top-1 at chance\) on 100 train images.*next point already has "
                                            r"NEC 1.5 > 1; raise train.sparse.path_points"):
        hand_path.require_concepts(1.0, "train", 100)
    only_zero = SparsePath(points=hand_path.points[:1], mean=torch.zeros(4), std=torch.ones(4), alpha=0.99,
                           max_lambda=4.0, table="memory")
    with pytest.raises(TrainingError, match="lower spatial.sparse.epsilon or add train images"):
        only_zero.require_concepts(5.0, "spatial", 32)


def test_a_single_lambda_is_label_free_cbms_glm_saga_call():
    """``lam`` set: one point at lam / alpha, the weights of LF-CBM's own call (train_cbm.py:
    glm_saga(linear, loader, 0.1, n_iters, 0.99, epsilon=1, k=1, metadata={"max_reg": {"nongrouped": lam}}))
    on the same standardised rows, and that point is kept whatever its NEC."""
    from glm_saga.elasticnet import glm_saga

    from sparse_cbm.bottleneck.config import SparseLayerParams

    x, y = multinomial_problem(n=300, d=12, c=3, seed=2)
    params = SparseLayerParams(lam=0.02, target_nec=0.5, max_epochs=40, batch_size=64)
    assert params.path_arguments() == {"lambdas": [pytest.approx(0.02 / 0.99)], "max_nec": None}
    assert params.kept_nec() is None
    ours = fit_sparse_path(identity, (x, y), None, 3, alpha=params.alpha, **params.path_arguments(),
                           max_epochs=params.max_epochs, lr=params.lr, tol=params.tol, batch_size=params.batch_size,
                           seed=0, solver="glm-saga")
    assert len(ours.points) == 1 and ours.points[0].lam == pytest.approx(0.02 / 0.99)
    kept = ours.require_concepts(params.kept_nec(), "spatial", len(y))
    assert kept.nec == ours.points[0].nec > params.target_nec  # no NEC budget: LF-CBM keeps its one point
    torch.manual_seed(0)  # fit_sparse_path seeds torch before the loader's blocks are drawn
    linear = torch.nn.Linear(12, 3)
    linear.weight.data.zero_()
    linear.bias.data.zero_()
    prep = Standardised(identity, ours.mean, ours.std)
    loader = BlockLoader(x, y, 64, shuffle=True, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = glm_saga(linear, loader, params.lr, params.max_epochs, params.alpha, epsilon=1, k=1, do_zero=False,
                          metadata={"max_reg": {"nongrouped": 0.02}}, n_ex=len(y), n_classes=3, tol=params.tol,
                          preprocess=prep, verbose=False)["path"][0]
    assert float(theirs["lam"]) == pytest.approx(ours.points[0].lam)
    torch.testing.assert_close(ours.points[0].weight, theirs["weight"].float(), atol=1e-6, rtol=0)


def test_a_single_lambda_that_selects_nothing_is_refused_with_what_to_change():
    from sparse_cbm.errors import TrainingError

    x, y = multinomial_problem(n=200, d=8, c=3, seed=3)
    path = fit_sparse_path(identity, (x, y), None, 3, alpha=0.99, lambdas=[10.0], max_epochs=5, batch_size=64)
    assert path.points[0].nec == 0
    with pytest.raises(TrainingError, match=r"NEC 0, top-1 at chance\) at spatial.sparse.lam 9.9.*lower "
                                            r"spatial.sparse.lam, or set it to null"):
        path.require_concepts(None, "spatial", len(y))


# ---------------------------------------------------------------------------------------------
# Concepts shared by the classes: the group path, the columns it leaves, and the path on them


def test_the_group_path_is_glm_sagas_group_lasso_and_safe_for_a_column_of_zeros():
    """``group=True`` at one lambda gives the weights of glm-saga's own ``glm_saga(group=True)`` on the
    same standardised rows; its largest lambda is glm-saga's grouped ``maximum_reg``; a concept that
    never moves (a zero column, NaN under glm-saga's operator) gets weight 0, not NaN."""
    from glm_saga.elasticnet import glm_saga, maximum_reg

    x, y = multinomial_problem(n=300, d=10, c=3, seed=4)
    stats = activation_stats(identity, x, y, 3, batch_size=64)
    z = ((torch.as_tensor(x, dtype=torch.float64) - stats.mean) / stats.std).float()
    assert stats.largest_lambda(1.0, group=True) == pytest.approx(maximum_reg(z, torch.as_tensor(y), group=True))
    assert stats.largest_lambda(1.0) == pytest.approx(maximum_reg(z, torch.as_tensor(y), group=False))
    lam = 0.3 * stats.largest_lambda(0.99, group=True)
    ours = fit_sparse_path(identity, (x, y), None, 3, alpha=0.99, lambdas=[lam], max_epochs=30, batch_size=64,
                           seed=0, solver="glm-saga", group=True).points[0]
    torch.manual_seed(0)
    linear = torch.nn.Linear(10, 3)
    linear.weight.data.zero_()
    linear.bias.data.zero_()
    loader = BlockLoader(x, y, 64, shuffle=True, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = glm_saga(linear, loader, 0.1, 30, 0.99, epsilon=1, k=1, do_zero=False, group=True,
                          metadata={"max_reg": {"group": lam * 0.99}}, n_ex=len(y), n_classes=3, tol=1e-4,
                          preprocess=Standardised(identity, stats.mean.float(), stats.std.float()),
                          verbose=False)["path"][0]
    torch.testing.assert_close(ours.weight, theirs["weight"].float(), atol=1e-6, rtol=0)
    used = (ours.weight != 0).any(0)
    assert 0 < used.sum() < 10 and bool(((ours.weight != 0) == used).all())  # whole columns in or out

    flat = np.concatenate([x, np.full((len(x), 1), 2.0, dtype=np.float32)], axis=1)
    for solver in ("fast", "glm-saga"):
        point = fit_sparse_path(identity, (flat, y), None, 3, alpha=0.99, lambdas=[lam], max_epochs=5,
                                batch_size=64, solver=solver, group=True, nonneg=True).points[0]
        assert torch.isfinite(point.weight).all() and (point.weight[:, -1] == 0).all() and (point.weight >= 0).all()


def test_columns_keep_the_others_at_zero_and_are_the_path_on_those_concepts_alone():
    x, y = multinomial_problem(n=300, d=12, c=3, seed=5)
    columns = [1, 4, 5, 9]
    on_some = fit_sparse_path(identity, (x, y), None, 3, path_points=6, max_epochs=20, batch_size=64, seed=0,
                              columns=columns)
    alone = fit_sparse_path(identity, (x[:, columns], y), None, 3, path_points=6, max_epochs=20, batch_size=64, seed=0)
    others = [i for i in range(12) if i not in columns]
    for a, b in zip(on_some.points, alone.points):
        assert a.lam == pytest.approx(b.lam) and (a.weight[:, others] == 0).all()
        torch.testing.assert_close(a.weight[:, columns], b.weight, atol=1e-5, rtol=0)


def test_shared_concepts_keep_the_densest_group_point_within_k_then_fit_the_path_on_it():
    from sparse_cbm.bottleneck.shared_concepts import choose_shared
    from sparse_cbm.errors import TrainingError

    def point(used):
        w = torch.zeros(2, 5)
        w[0, used] = 1.0
        return PathPoint(lam=1.0, nec=0.0, train_top1=0.0, val_top1=0.0, weight=w, bias=torch.zeros(2), converged=True,
                         seconds=0.0, train_loss=0.0, val_loss=0.0)

    hand = SparsePath(points=[point([]), point([3]), point([0, 3]), point([0, 2, 3, 4])], mean=torch.zeros(5),
                      std=torch.ones(5), alpha=0.99, max_lambda=1.0, table="memory")
    assert choose_shared(lambda: hand, 3).tolist() == [0, 3]
    assert choose_shared(lambda: hand, 4).tolist() == [0, 2, 3, 4]
    with pytest.raises(TrainingError, match="raise sparse.shared_concepts"):
        choose_shared(lambda: SparsePath(points=[point([])], mean=torch.zeros(5), std=torch.ones(5), alpha=0.99,
                                         max_lambda=1.0, table="memory"), 3)
    jump = point([0, 1, 2, 4])  # from none to four concepts in one step: the two of largest norm
    jump.weight[1, [1, 4]] = torch.tensor([2.0, 3.0])
    assert choose_shared(lambda: SparsePath(points=[point([]), jump], mean=torch.zeros(5), std=torch.ones(5),
                                            alpha=0.99, max_lambda=1.0, table="memory"), 2).tolist() == [1, 4]

    from sparse_cbm.bottleneck.config import SparseLayerParams

    auto = SparseLayerParams()  # auto: one concept a class for CLIP's scores (faithful), off for free mixtures
    assert auto.shared_for(True, 20) == 20 and auto.shared_for(False, 20) is None
    assert SparseLayerParams(shared_concepts=7).shared_for(False, 20) == 7
    assert SparseLayerParams(shared_concepts=None).shared_for(True, 20) is None

    assert choose_shared(lambda: pytest.fail("no group path for 5 concepts"), 5, width=5) is None

    x, y = multinomial_problem(n=300, d=12, c=3, seed=6)
    path = fit_sparse_path(identity, (x, y), None, 3, path_points=8, max_epochs=20, batch_size=64, shared_concepts=3)
    used = [(p.weight != 0).any(0) for p in path.points]
    assert max(int(u.sum()) for u in used) <= 3 and int(used[-1].sum()) >= 1
    with pytest.raises(ValueError, match="not both"):
        fit_sparse_path(identity, (x, y), None, 3, shared_concepts=3, columns=[0, 1])
    with pytest.raises(ValueError, match="distinct concept indices"):
        fit_sparse_path(identity, (x, y), None, 3, columns=[0, 12])

    # non-negative weights leave a used concept at zero for some classes, so the group path's NEC
    # understates the concepts it uses: it stops on the concepts used, past max_concepts
    group = fit_sparse_path(identity, (x, y), None, 3, path_points=12, max_epochs=20, batch_size=64, group=True,
                            nonneg=True, max_concepts=4)
    counts = [int((p.weight != 0).any(0).sum()) for p in group.points]
    assert all(c <= 4 for c in counts[:-1]) and (counts[-1] > 4 or len(counts) == 12)
