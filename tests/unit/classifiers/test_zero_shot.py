"""Zero-shot and classification by descriptions against straightforward references, and on the simulator."""

import numpy as np
import pytest

from sparse_cbm.simulate import planted_world
from sparse_cbm.classifiers.descriptions import classify_by_descriptions, description_scores
from sparse_cbm.classifiers.zero_shot import (class_text_embeddings,
                                  zero_shot_predict, zero_shot_scores)


def unit(x):
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_template_ensemble(rng):
    prompts = rng.standard_normal((4, 6, 16)) * rng.uniform(0.5, 5, size=(4, 6, 1))
    expected = np.stack([unit(sum(unit(prompts[t, c]) for t in range(4)) / 4) for c in range(6)])
    out = class_text_embeddings(prompts.astype(np.float16))
    assert out.shape == (6, 16) and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=2e-3)  # float16 input
    np.testing.assert_allclose(class_text_embeddings(prompts), expected, atol=1e-6)
    with pytest.raises(ValueError, match="templates, classes, dim"):
        class_text_embeddings(prompts[0])


def test_zero_shot_matches_reference(rng):
    images, classes = rng.standard_normal((40, 16)) * 3, rng.standard_normal((9, 16))
    ref = unit(images) @ unit(classes).T
    np.testing.assert_allclose(zero_shot_scores(images, classes), ref, atol=1e-6)
    pred, top5 = zero_shot_predict(images.astype(np.float32), classes, batch_size=7)
    np.testing.assert_array_equal(pred, ref.argmax(axis=1))
    np.testing.assert_array_equal(top5, np.argsort(-ref, axis=1)[:, :5])
    assert pred.dtype == np.int64 and top5.dtype == np.int64
    assert (top5 == pred[:, None]).any(axis=1).all()
    pred1, none = zero_shot_predict(images, classes, k=1)
    assert none is None
    np.testing.assert_array_equal(pred1, pred)


def test_top_k_narrower_than_k_with_few_classes(rng):
    pred, top = zero_shot_predict(rng.standard_normal((10, 8)), rng.standard_normal((3, 8)), batch_size=4)
    assert top.shape == (10, 3)
    np.testing.assert_array_equal(top[:, 0], pred)


def description_reference(images, descriptions, owner, num_classes):
    scores = np.full((len(images), num_classes), -np.inf)
    for k, image in enumerate(images):
        for c in range(num_classes):
            cosines = [float(unit(image) @ unit(e)) for e, o in zip(descriptions, owner) if o == c]
            if cosines:
                scores[k, c] = sum(cosines) / len(cosines)
    return scores


def test_descriptions_match_reference_and_skip_classes_without(rng):
    num_classes = 7
    owner = np.array([0, 0, 1, 3, 3, 3, 4, 5, 5, 6, 0, 1])  # class 2 has no description
    descriptions = rng.standard_normal((len(owner), 16)).astype(np.float16)
    images = rng.standard_normal((60, 16)).astype(np.float16)
    images[:10] = descriptions[0]  # nothing can make class 2 win
    ref = description_reference(images, descriptions, owner, num_classes)
    scores = description_scores(images, descriptions, owner, num_classes)
    assert np.isneginf(scores[:, 2]).all()
    np.testing.assert_allclose(scores[:, [0, 1, 3, 4, 5, 6]], ref[:, [0, 1, 3, 4, 5, 6]], atol=1e-5)
    pred, top5 = classify_by_descriptions(images, descriptions, owner, num_classes, batch_size=8)
    np.testing.assert_array_equal(pred, ref.argmax(axis=1))
    assert not (pred == 2).any() and not (top5 == 2).any()
    assert (top5 == pred[:, None]).any(axis=1).all()


def test_descriptions_argument_checks(rng):
    emb = rng.standard_normal((3, 8))
    with pytest.raises(ValueError, match="one entry per description"):
        classify_by_descriptions(emb, emb, [0, 1], 3)
    with pytest.raises(ValueError, match=r"\[0, num_classes=3\)"):
        classify_by_descriptions(emb, emb, [0, 1, 3], 3)
    with pytest.raises(ValueError, match="no class has a description"):
        classify_by_descriptions(emb, emb[:0], np.zeros(0, dtype=np.int64), 3)


def test_far_above_chance_on_the_simulator():
    world = planted_world(num_classes=10, num_concepts=60, concepts_per_class=4, dim=64, seed=0)
    images, labels, _ = world.split(1000, 1)
    images = images.astype(np.float16)
    pred, top5 = zero_shot_predict(images, world.class_text, batch_size=128)
    assert (pred == labels).mean() > 0.6  # chance: 0.1
    assert (top5 == labels[:, None]).any(axis=1).mean() > (pred == labels).mean()
    # descriptions: one per (class, owned concept), "the class, which has the concept"
    owner, concept = np.nonzero(world.class_concepts)
    descriptions = unit(world.class_text[owner] + world.concept_text[concept])
    pred, _ = classify_by_descriptions(images, descriptions, owner, 10, batch_size=128)
    assert (pred == labels).mean() > 0.6
