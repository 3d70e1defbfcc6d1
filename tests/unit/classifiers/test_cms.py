"""Concept Matrix Search against a literal transcription of Algorithm 1, and on the simulator."""

import numpy as np
import pytest

from sparse_cbm.classifiers.cms import ConceptMatrixSearch, cms_scores, concept_matrix_search
from sparse_cbm.storage.rows import NpyRows
from sparse_cbm.simulate import planted_world
from tests.reference import concept_matrix_search_loop


def random_inputs(n, num_concepts, num_classes, dim, seed):
    rng = np.random.default_rng(seed)
    shift = rng.standard_normal(dim)  # a shared direction, like CLIP's cones: cosines mostly positive
    images = (rng.standard_normal((n, dim)) + shift).astype(np.float16)
    concepts = (rng.standard_normal((num_concepts, dim)) + shift).astype(np.float16)
    classes = (rng.standard_normal((num_classes, dim)) + shift).astype(np.float32) * rng.uniform(0.5, 3)
    return images, concepts, classes


@pytest.mark.parametrize("n,num_concepts,num_classes,dim,seed", [
    (30, 25, 7, 16, 0), (17, 40, 3, 8, 1), (40, 12, 12, 24, 2), (5, 60, 2, 32, 3), (23, 9, 5, 4, 4)])
@pytest.mark.parametrize("method", ["factored", "direct"])
def test_matches_algorithm_1_loop(n, num_concepts, num_classes, dim, seed, method):
    images, concepts, classes = random_inputs(n, num_concepts, num_classes, dim, seed)
    ref_pred, ref_scores = concept_matrix_search_loop(images, concepts, classes)
    pred = concept_matrix_search(images, concepts, classes, batch_size=7, method=method)
    assert pred.dtype == np.int64 and pred.shape == (n,)
    # tolerance-aware: our class scores within float32 error of the best reference score...
    chosen = ref_scores[np.arange(n), pred]
    assert np.all(chosen >= ref_scores.max(axis=1) - 1e-5)
    # ...and exactly the same class wherever the reference has no near-tie (here: everywhere)
    top2 = np.sort(ref_scores, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 1e-4
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(pred[clear], ref_pred[clear])
    cms = ConceptMatrixSearch(concepts, classes)
    np.testing.assert_allclose(cms.scores(images, method=method), ref_scores, atol=2e-5)


def test_one_batch_scores_and_top_k():
    images, concepts, classes = random_inputs(12, 30, 8, 16, 5)
    _, ref_scores = concept_matrix_search_loop(images, concepts, classes)
    np.testing.assert_allclose(cms_scores(images, concepts, classes), ref_scores, atol=2e-5)
    pred, top = ConceptMatrixSearch(concepts, classes).predict(images, batch_size=5, k=3)
    assert top.shape == (12, 3)
    np.testing.assert_array_equal(top[:, 0], pred)
    np.testing.assert_array_equal(top, np.argsort(-ref_scores, axis=1)[:, :3])


def test_batch_size_does_not_matter_and_reads_npy_rows(tmp_path):
    images, concepts, classes = random_inputs(50, 20, 6, 8, 6)
    np.save(tmp_path / "images.npy", images)
    whole = concept_matrix_search(images, concepts, classes, batch_size=1000)
    for batch_size in (1, 7, 50):
        np.testing.assert_array_equal(concept_matrix_search(images, concepts, classes, batch_size), whole)
    np.testing.assert_array_equal(concept_matrix_search(NpyRows(tmp_path / "images.npy"), concepts, classes, 16),
                                  whole)
    mapped = np.load(tmp_path / "images.npy", mmap_mode="r")
    np.testing.assert_array_equal(concept_matrix_search(mapped, concepts, classes, 16), whole)


def test_far_above_chance_on_the_simulator():
    world = planted_world(num_classes=10, num_concepts=60, concepts_per_class=4, dim=64, seed=0)
    images, labels, _ = world.split(1000, 1)
    pred = concept_matrix_search(images.astype(np.float16), world.concept_text, world.class_text, batch_size=256)
    assert (pred == labels).mean() > 0.6  # chance: 0.1


@pytest.mark.parametrize("method", ["factored", "direct"])
def test_float64_ranking_under_a_wide_modality_gap(method):
    """With a wide gap every cos(V_k, T_m) is ~0.999 and classes differ by 1e-8..1e-5: ranking
    with the plain float32 formula disagrees with float64 on ~0.4% of these images (measured);
    the centred form must agree on all."""
    world = planted_world(num_classes=50, num_concepts=300, concepts_per_class=4, dim=64, gap=3.0, seed=0)
    images = world.split(1000, 1)[0].astype(np.float16)

    def unit(a):
        a = np.asarray(a, dtype=np.float64)
        return a / np.linalg.norm(a, axis=1, keepdims=True)
    V = unit(images) @ unit(world.concept_text).T
    T = unit(world.class_text) @ unit(world.concept_text).T
    truth = unit(V) @ unit(T).T
    assert truth.max() - truth.min() < 0.01  # the hard case: every score in a narrow band
    pred, top = ConceptMatrixSearch(world.concept_text, world.class_text).predict(images, 128, k=3, method=method)
    np.testing.assert_array_equal(pred, truth.argmax(axis=1))
    np.testing.assert_array_equal(top, np.argsort(-truth, axis=1, kind="stable")[:, :3])
    scores = ConceptMatrixSearch(world.concept_text, world.class_text).scores(images[:100], method=method)
    np.testing.assert_array_equal(scores.argmax(axis=1), truth[:100].argmax(axis=1))


def test_rejects_bad_arguments():
    images, concepts, classes = random_inputs(4, 5, 3, 8, 7)
    with pytest.raises(ValueError, match="method"):
        concept_matrix_search(images, concepts, classes, method="fast")
    with pytest.raises(ValueError, match="dimension"):
        concept_matrix_search(images, concepts, classes[:, :4])
    with pytest.raises(ValueError, match="batch_size"):
        concept_matrix_search(images, concepts, classes, batch_size=0)
