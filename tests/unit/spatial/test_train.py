"""SALF-CBM's training (``spatial.train.train_spatial``) on a small constructed world whose local
similarities P are a known function of the feature maps, so the 1 x 1 convolution can learn them."""

import numpy as np
import pytest
import torch

from sparse_cbm.bottleneck.config import SpatialSparseParams
from sparse_cbm.spatial.checkpoint import load_spatial, save_spatial
from sparse_cbm.spatial.train import local_similarities, train_spatial

C, M, GRID, N_TRAIN, N_VAL = 4, 3, 3, 24, 12
SPARSE = SpatialSparseParams(path_points=4, max_epochs=10, target_nec=3.0, batch_size=64)


def world(seed=0):
    """Feature maps (N, C * 3 * 3) with one planted concept per channel (the fourth channel is noise);
    class 1 has more of concept 0, class 0 more of concept 1. A sorted random subset of the
    train images has prompted copies whose embedding at grid cell (h, w) is [f_0, f_1, f_2, 1] there:
    its cosine with concept m (the m-th unit vector) rises with channel m at that cell."""
    rng = np.random.default_rng(seed)

    def split(n):
        labels = np.arange(n) % 2
        f = rng.random((n, C, GRID, GRID)).astype(np.float32)
        f[:, 0] += 0.6 * labels[:, None, None]  # class 1: more of concept 0; class 0: more of concept 1
        f[:, 1] += 0.6 * (1 - labels)[:, None, None]
        return f, labels.astype(np.int64)

    (train, labels), (val, val_labels) = split(N_TRAIN), split(N_VAL)
    prompted_rows = np.sort(rng.choice(N_TRAIN, size=16, replace=False))
    cells = train[prompted_rows, :M].transpose(0, 2, 3, 1).reshape(len(prompted_rows) * GRID * GRID, M)
    prompted = np.concatenate([cells, np.ones((len(cells), 1), np.float32)], axis=1)  # (n * K, d), row-major cells
    concepts = np.eye(M, M + 1, dtype=np.float32)
    return (train.reshape(N_TRAIN, -1), labels, (val.reshape(N_VAL, -1), val_labels), prompted, prompted_rows,
            concepts)


def run(seed=0, epochs=8, batch_size=8, world_seed=0, pooling="mean"):
    features, labels, val, prompted, prompted_rows, concepts = world(world_seed)
    return train_spatial(features, (C, GRID, GRID), prompted, prompted_rows, concepts, labels, val, 2, grid=GRID,
                         pooling=pooling, epochs=epochs, batch_size=batch_size, lr=0.05, sparse=SPARSE, seed=seed)


@pytest.fixture(scope="module")
def trained():
    return run()


def test_shapes_steps_and_the_sparse_path(trained):
    model = trained.model
    assert model.conv.weight.shape == (M, C, 1, 1) and model.fc.weight.shape == (2, M)
    assert not model.training
    assert [s["step"] for s in trained.steps] == list(range(8 * 2))  # 16 prompted images in batches of 8
    assert [s["epoch"] for s in trained.steps] == [e for e in range(1, 9) for _ in range(2)]
    assert all(-1 <= s["cos3"] <= 1 for s in trained.steps)
    necs = [p["nec"] for p in trained.sparse_path]
    assert len(necs) >= 2 and necs == sorted(necs) and necs[0] < necs[-1]  # lambda decreasing, denser
    assert (model.fc.weight != 0).sum(1).float().mean() <= SPARSE.target_nec
    assert trained.p_mean.shape == trained.p_std.shape == (M,)
    assert trained.p_mean.dtype == trained.p_std.dtype == np.float32 and trained.seconds > 0


def test_softmax_pooling_trains_and_its_sparse_layer_is_fitted_on_softmax_pooled_maps():
    trained = run(pooling="softmax", epochs=2)
    model = trained.model
    assert model.pooling == "softmax" and (model.fc.weight != 0).sum(1).float().mean() <= SPARSE.target_nec
    features = torch.from_numpy(world()[0][:4]).reshape(4, C, GRID, GRID)
    maps = model.concept_maps(features)
    flat = maps.flatten(2)
    assert torch.allclose(model(features).pooled, (flat.softmax(-1) * flat).sum(-1))


def test_non_negative_keeps_every_final_weight_at_or_above_zero(trained):
    features, labels, val, prompted, prompted_rows, concepts = world()
    signed = trained.model.fc.weight
    assert (signed < 0).any()  # concept 1 marks class 0: the paper's signed layer counts it against class 1
    positive = train_spatial(features, (C, GRID, GRID), prompted, prompted_rows, concepts, labels, val, 2, grid=GRID,
                             pooling="mean", epochs=8, batch_size=8, lr=0.05,
                             sparse=SPARSE.model_copy(update={"non_negative": True})).model.fc.weight
    assert (positive >= 0).all() and (positive > 0).any()


def direct_p_statistics():
    _, _, _, prompted, prompted_rows, concepts = world()
    p = local_similarities(torch.from_numpy(prompted).reshape(len(prompted_rows), GRID * GRID, -1),
                           torch.from_numpy(concepts), GRID)
    flat = p.transpose(0, 1).reshape(M, -1).double()
    return flat.mean(1).numpy(), flat.std(1, unbiased=False).numpy()


def test_p_statistics_are_those_of_every_prompted_copy(trained):
    mean, std = direct_p_statistics()
    np.testing.assert_allclose(trained.p_mean, mean, rtol=0, atol=1e-6)
    np.testing.assert_allclose(trained.p_std, std, rtol=1e-5, atol=1e-6)


def test_the_maps_learn_p_and_the_final_layer_learns_the_classes(trained):
    first = np.mean([s["cos3"] for s in trained.steps if s["epoch"] == 1])
    assert trained.similarity > first + 0.1 and trained.similarity > 0.6
    assert trained.similarity == pytest.approx(np.mean([s["cos3"] for s in trained.steps if s["epoch"] == 8]))
    # concept m's map is made from feature channel m: the largest 1 x 1 weight of each row is on its own channel
    w = trained.model.conv.weight.detach()[:, :, 0, 0]
    assert w.argmax(1).tolist() == [0, 1, 2]
    features, labels, val, *_ = world()
    with torch.no_grad():
        out = trained.model(torch.from_numpy(features).reshape(N_TRAIN, C, GRID, GRID))
        pred = out.logits.argmax(1).numpy()
        val_pred = trained.model(torch.from_numpy(val[0]).reshape(N_VAL, C, GRID, GRID)).logits.argmax(1).numpy()
    assert (pred == labels).mean() >= 0.9 and (val_pred == val[1]).mean() >= 0.75
    # the final layer's standardisation is the pooled maps' statistics over every train image (not only the prompted)
    np.testing.assert_allclose(trained.model.fc.mean.numpy(), out.pooled.mean(0).numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(trained.model.fc.std.numpy(), out.pooled.std(0).numpy(), rtol=1e-3)


def test_same_seed_same_bytes_another_seed_another_model(trained):
    again = run()
    for name, tensor in trained.model.state_dict().items():
        assert tensor.numpy().tobytes() == again.model.state_dict()[name].numpy().tobytes(), name
    assert again.steps == trained.steps
    drop = lambda path: [{k: v for k, v in p.items() if k != "seconds"} for p in path]  # noqa: E731
    assert drop(again.sparse_path) == drop(trained.sparse_path)
    assert again.p_mean.tobytes() == trained.p_mean.tobytes() and again.p_std.tobytes() == trained.p_std.tobytes()
    other = run(seed=1)
    assert not torch.equal(other.model.conv.weight, trained.model.conv.weight)


def test_a_lone_image_left_at_the_end_of_an_epoch_is_no_step_but_counts_in_p():
    # 16 images in batches of 5: 5, 5, 5 and one left over, which the centred cos3 cannot score
    result = run(epochs=1, batch_size=5)
    assert len(result.steps) == 3
    mean, std = direct_p_statistics()  # but P's statistics count it (they once left it out)
    np.testing.assert_allclose(result.p_mean, mean, rtol=0, atol=1e-6)
    np.testing.assert_allclose(result.p_std, std, rtol=1e-5, atol=1e-6)


def test_the_trained_model_survives_its_checkpoint(trained, tmp_path):
    config = {"grid": GRID, "pooling": "mean", "feature_shape": [C, GRID, GRID], "concepts": ["a", "b", "c"],
              "classes": ["x", "y"], "concept_list_sha256": "sha"}
    save_spatial(tmp_path, trained.model, config)
    model, back = load_spatial(tmp_path, expect_concepts_sha256="sha")
    assert back == config
    x = torch.from_numpy(world()[0]).reshape(N_TRAIN, C, GRID, GRID)
    with torch.no_grad():
        assert torch.equal(model(x).logits, trained.model(x).logits)


def test_eq1_over_all_n_is_a_step_an_epoch_and_learns_the_maps():
    result = run(epochs=30, batch_size=None)
    assert [s["epoch"] for s in result.steps] == list(range(1, 31))  # one step over all 16 prompted images an epoch
    assert result.similarity > result.steps[0]["cos3"] + 0.1
    assert result.model.conv.weight.detach()[:, :, 0, 0].argmax(1).tolist() == [0, 1, 2]
    mean, std = direct_p_statistics()
    np.testing.assert_allclose(result.p_mean, mean, rtol=0, atol=1e-6)
    assert run(epochs=30, batch_size=None).model.conv.weight.detach().numpy().tobytes() == \
        result.model.conv.weight.detach().numpy().tobytes()


def held_out(early_stop=False, cutoff=None, world_seed=0):
    """Val's ringed copies, made as the train ones: every val image, [f_0, f_1, f_2, 1] at each cell."""
    from sparse_cbm.spatial.train import HeldOut

    _, _, (val, _), *_ = world(world_seed)
    cells = val.reshape(N_VAL, C, GRID, GRID)[:, :M].transpose(0, 2, 3, 1).reshape(N_VAL * GRID * GRID, M)
    prompted = np.concatenate([cells, np.ones((len(cells), 1), np.float32)], axis=1)
    return HeldOut(prompted, np.arange(N_VAL), early_stop=early_stop, cutoff=cutoff)


def run_held_out(epochs=8, lr=0.05, **kw):
    features, labels, val, prompted, prompted_rows, concepts = world()
    return train_spatial(features, (C, GRID, GRID), prompted, prompted_rows, concepts, labels, val, 2, grid=GRID,
                         pooling="mean", epochs=epochs, batch_size=8, lr=lr, sparse=SPARSE, seed=0,
                         held_out=held_out(**kw))


def test_label_free_early_stop_keeps_the_best_epoch_on_val():
    result = run_held_out(epochs=60, lr=0.3, early_stop=True)
    assert 1 <= result.kept_epoch < result.steps[-1]["epoch"] <= 60  # stopped at the first epoch that did not improve
    assert result.steps[-1]["epoch"] == result.kept_epoch + 1
    # the kept convolution is the one training had after kept_epoch epochs
    plain = run(epochs=result.kept_epoch)
    features, labels, val, prompted, prompted_rows, concepts = world()
    plain_lr = train_spatial(features, (C, GRID, GRID), prompted, prompted_rows, concepts, labels, val, 2, grid=GRID,
                             pooling="mean", epochs=result.kept_epoch, batch_size=8, lr=0.3, sparse=SPARSE, seed=0)
    assert torch.equal(result.model.conv.weight, plain_lr.model.conv.weight)
    assert not torch.equal(plain.model.conv.weight, plain_lr.model.conv.weight)
    assert result.val_similarity.shape == (M,) and (result.val_similarity > 0.5).all()
    # the reported train similarity is the kept epoch's, not the rejected one's
    assert result.similarity == pytest.approx(np.mean([s["cos3"] for s in result.steps
                                                       if s["epoch"] == result.kept_epoch]))


def test_label_free_cutoff_drops_the_concepts_below_it_on_val():
    from sparse_cbm.errors import TrainingError

    whole = run_held_out()
    assert whole.kept.tolist() == [0, 1, 2] and whole.kept_epoch == 8
    order = np.argsort(whole.val_similarity)
    cutoff = float(whole.val_similarity[order[0]] + whole.val_similarity[order[1]]) / 2  # between the two lowest
    cut = run_held_out(cutoff=cutoff)
    assert cut.kept.tolist() == sorted(order[1:].tolist())
    torch.testing.assert_close(cut.model.conv.weight, whole.model.conv.weight[torch.from_numpy(cut.kept)])
    assert cut.model.fc.weight.shape == (2, 2) and cut.p_mean.tolist() == whole.p_mean[cut.kept].tolist()
    with pytest.raises(TrainingError, match=r"spatial.cutoff 0.99 drops every concept \(the best val similarity is "
                                            r"0\.\d+\): lower spatial.cutoff"):
        run_held_out(cutoff=0.99)


def test_label_free_stop_refuses_fewer_than_two_val_copies():
    from sparse_cbm.errors import TrainingError
    from sparse_cbm.spatial.train import HeldOut

    features, labels, val, prompted, prompted_rows, concepts = world()
    one = held_out()
    lone = HeldOut(one.prompted[:GRID * GRID], one.rows[:1], early_stop=True)
    with pytest.raises(TrainingError, match=r"1 val image\(s\) is too few. Set spatial.val_images >= 2"):
        train_spatial(features, (C, GRID, GRID), prompted, prompted_rows, concepts, labels, val, 2, grid=GRID,
                      pooling="mean", epochs=2, batch_size=8, lr=0.05, sparse=SPARSE, held_out=lone)
    from sparse_cbm_app.params import deep_merge, default_params, validate_params

    with pytest.raises((ValueError, Exception), match="1 image scores nothing; set 0 \\(none\\) or at least 2"):
        validate_params(deep_merge(default_params(), {"spatial": {"val_images": 1}}))
