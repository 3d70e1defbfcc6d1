"""The concept filter (the paper's step 2, after Label-free CBM), vectorised.

Steps, in order, each with its cutoff:

1. ``length``: concepts longer than ``max_length`` characters;
2. ``class_name``: a class's own name, in any case, with or without an article;
3. ``class_similarity``: cosine similarity to any class name above the cutoff;
4. ``concept_similarity``: of two concepts more similar than the cutoff, the one with
   the lower mean similarity to all concepts (the less general one). Concepts are
   visited from the most general down; one is dropped when a more general kept concept
   is too close to it, so a chain a~b~c with a the most general keeps a and c;
5. ``presence`` (optional): concepts whose presence score (mean of the top-k CLIP
   image similarities) is below the cutoff.

Similarity is a weighted sum over text spaces: the sentence-transformers model alone,
or ``(st + 3 clip) / 4`` as in Label-free CBM. A concept is removed for every class
it was linked to; every removal is logged with what it was too close to.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from sparse_cbm.concepts.text import class_key
from sparse_cbm.errors import ConceptFilterError

log = logging.getLogger(__name__)

STEPS = ("length", "class_name", "class_similarity", "concept_similarity", "presence")
Encode = Callable[[Sequence[str]], np.ndarray]  # texts -> unit-norm float32 rows
BLOCK = 2048


@dataclass
class MixedSpace:
    """Concept and class embeddings in one or more text spaces, mixed by weight."""

    weights: List[float]
    concepts: List[np.ndarray]
    classes: List[np.ndarray]

    @classmethod
    def encode(cls, spaces: Sequence[Tuple[float, Encode]], concepts: Sequence[str],
               classes: Sequence[str]) -> "MixedSpace":
        return cls([w for w, _ in spaces], [enc(concepts) for _, enc in spaces],
                   [enc(classes) for _, enc in spaces])

    def subset(self, idx: np.ndarray) -> "MixedSpace":
        return MixedSpace(self.weights, [e[idx] for e in self.concepts], self.classes)

    @staticmethod
    def _mix(weights: List[float], lefts: List[np.ndarray], rights: List[np.ndarray]) -> np.ndarray:
        total = None
        for w, a, b in zip(weights, lefts, rights):
            part = a @ b.T
            if w != 1.0:
                part *= w
            total = part if total is None else np.add(total, part, out=total)
        return total

    def concept_class(self, rows: slice) -> np.ndarray:
        return self._mix(self.weights, [e[rows] for e in self.concepts], self.classes)

    def concept_concept(self, rows: slice) -> np.ndarray:
        return self._mix(self.weights, [e[rows] for e in self.concepts], self.concepts)

    def __len__(self) -> int:
        return len(self.concepts[0])


def class_similarity_matches(sim_rows: Callable[[slice], np.ndarray], n: int,
                             cutoff: float) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(too_close, nearest class, its similarity) for each of ``n`` concepts, from the
    concept x class similarity matrix given a block of rows at a time."""
    nearest = np.zeros(n, dtype=np.int64)
    best = np.zeros(n, dtype=np.float32)
    for lo in range(0, n, BLOCK):
        sims = np.asarray(sim_rows(slice(lo, lo + BLOCK)))
        nearest[lo:lo + BLOCK] = sims.argmax(axis=1)
        best[lo:lo + BLOCK] = sims[np.arange(len(sims)), nearest[lo:lo + BLOCK]]
    return best > cutoff, nearest, best


def dedupe_similar(sim_rows: Callable[[slice], np.ndarray], n: int,
                   cutoff: float) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy removal of near-duplicates on a symmetric similarity matrix given by row blocks.

    Concepts are visited from the highest mean similarity to the others down (ties by
    position); one is dropped when an earlier kept concept is more similar than the
    cutoff. Returns (keep, near, near_similarity): for a dropped concept, the most similar
    earlier kept concept. The matrix is never held whole, and there is no loop over pairs:
    the greedy order is resolved in rounds, each deciding every concept whose earlier
    neighbours are all decided (the rounds number the longest chain of near-duplicates).
    """
    mean = np.zeros(n, dtype=np.float64)
    heads, tails, values = [], [], []
    above = np.empty((min(BLOCK, n), n), dtype=bool)
    for lo in range(0, n, BLOCK):
        sims = np.asarray(sim_rows(slice(lo, lo + BLOCK)))
        rows = np.arange(lo, lo + len(sims))
        mean[rows] = (sims.sum(axis=1, dtype=np.float64) - sims[np.arange(len(rows)), rows]) / max(n - 1, 1)
        mask = np.greater(sims, cutoff, out=above[:len(sims)])
        r, c = np.divmod(np.flatnonzero(mask), n)  # (flatnonzero is ten times faster than nonzero)
        upper = c > rows[r]  # each pair once: the matrix is symmetric
        heads.append(rows[r[upper]])
        tails.append(c[upper])
        values.append(np.asarray(sims[r[upper], c[upper]], dtype=np.float32))
    a = np.concatenate(heads) if heads else np.zeros(0, np.int64)
    b = np.concatenate(tails) if tails else np.zeros(0, np.int64)
    v = np.concatenate(values) if values else np.zeros(0, np.float32)

    order = np.lexsort((np.arange(n), -mean))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    later = np.where(rank[a] > rank[b], a, b)  # each pair: the concept visited later, and the earlier one
    earlier = np.where(rank[a] > rank[b], b, a)

    KEPT, DROPPED = 1, 2
    state = np.zeros(n, dtype=np.int8)
    state[np.setdiff1d(np.arange(n), later)] = KEPT  # no earlier neighbour: kept
    while (state == 0).any():
        before = state[earlier]
        has_kept = np.zeros(n, dtype=bool)
        has_kept[later[before == KEPT]] = True
        has_open = np.zeros(n, dtype=bool)
        has_open[later[before == 0]] = True
        undecided = state == 0
        state[undecided & has_kept] = DROPPED
        state[undecided & ~has_kept & ~has_open] = KEPT

    keep = state == KEPT
    near = np.full(n, -1, dtype=np.int64)
    near_sim = np.full(n, np.nan, dtype=np.float32)
    mask = keep[earlier] & ~keep[later]
    h, t, s = later[mask], earlier[mask], v[mask]
    best = np.lexsort((rank[t], -s, h))  # per dropped concept: most similar, then earliest
    first = best[np.unique(h[best], return_index=True)[1]]
    near[h[first]], near_sim[h[first]] = t[first], s[first]
    return keep, near, near_sim


@dataclass
class FilterResult:
    kept: pd.DataFrame  # rows of the concept table whose concept survived
    removed: pd.DataFrame  # concept, step, near, similarity
    counts: Dict[str, int]
    vocabulary: List[str]  # the kept concepts, unique, in bottleneck order


def filter_concepts(table: pd.DataFrame, classes: Sequence[str], spaces: Sequence[Tuple[float, Encode]], *,
                    max_length: int, class_similarity: float, concept_similarity: float,
                    presence: Optional[Callable[[Sequence[str]], np.ndarray]] = None,
                    presence_cutoff: Optional[float] = None) -> FilterResult:
    """Run the steps of the module docstring on a concept table (see ``concepts.table``)."""
    vocab = np.array(list(dict.fromkeys(table["concept"])), dtype=object)
    alive = np.ones(len(vocab), dtype=bool)
    removed: List[dict] = []
    counts = {"input": len(vocab)}

    def drop(step: str, mask: np.ndarray, near=None, sims=None) -> None:
        idx = np.flatnonzero(alive)[mask]
        for k, i in enumerate(idx):
            removed.append({"concept": vocab[i], "step": step,
                            "near": None if near is None else near[k],
                            "similarity": None if sims is None else round(float(sims[k]), 6)})
        alive[idx] = False
        counts[step] = len(idx)
        log.info("filter %-18s removed %5d, %5d left", step, len(idx), int(alive.sum()))

    lengths = np.array([len(c) for c in vocab], dtype=np.int64)
    drop("length", lengths[alive] > max_length)

    keys = {class_key(c): c for c in reversed(classes)}
    hit = [keys.get(c) for c in vocab[alive]]
    drop("class_name", np.array([h is not None for h in hit], dtype=bool),
         near=[h for h in hit if h is not None])

    space = MixedSpace.encode(spaces, list(vocab[alive]), list(classes))
    close, nearest, best = class_similarity_matches(space.concept_class, len(space), class_similarity)
    drop("class_similarity", close, near=[classes[j] for j in nearest[close]], sims=best[close])

    space = space.subset(np.flatnonzero(~close))
    keep, near, near_sim = dedupe_similar(space.concept_concept, len(space), concept_similarity)
    survivors = vocab[alive]
    drop("concept_similarity", ~keep, near=list(survivors[near[~keep]]), sims=near_sim[~keep])

    if presence is not None and presence_cutoff is not None and alive.any():
        scores = presence(list(vocab[alive]))
        low = scores < presence_cutoff
        drop("presence", low, sims=scores[low])
    else:
        counts["presence"] = 0

    counts["kept"] = int(alive.sum())
    if not alive.any():
        steps = ", ".join(f"{s} {counts.get(s, 0)}" for s in STEPS)
        raise ConceptFilterError(f"no concept survived the filter: {counts['input']} in, removed by step: {steps}. "
                                 f"Loosen filter.max_length / class_similarity / concept_similarity "
                                 f"(or presence.cutoff), or give more concepts.")
    kept_set = set(vocab[alive])
    kept = table[table["concept"].isin(kept_set)].reset_index(drop=True)
    log_frame = pd.DataFrame(removed, columns=["concept", "step", "near", "similarity"])
    return FilterResult(kept=kept, removed=log_frame, counts=counts, vocabulary=[c for c in vocab if c in kept_set])
