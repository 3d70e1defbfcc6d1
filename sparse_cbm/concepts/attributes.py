"""Concepts from a dataset's own annotations (``concepts.source: attributes``).

The bottleneck's concepts are the dataset's annotated attributes, named by their
concept phrases (CUB's ``has_wing_color::blue`` is "blue wing", shapes' ``colour::red``
is "red"): the classic supervised-concept setting (Koh et al., *Concept Bottleneck
Models*, ICML 2020), where every concept can be checked against the truth. A class is
linked to the attributes present in at least ``class_share`` of its training images
(so classification by descriptions has something to describe); attributes linked to no
class are shared by every class, so the bottleneck holds every annotated attribute.
"""

from __future__ import annotations

from typing import Dict, List

import numpy as np

from sparse_cbm.concepts.table import SHARED
from sparse_cbm.datasets.base import DatasetSplits
from sparse_cbm.errors import ConceptSourceError


def attribute_concept_rows(dataset: DatasetSplits, class_share: float) -> List[Dict]:
    """Concept rows (class_index, concept, source, relation) from the train split's annotations."""
    train = dataset.splits["train"]
    annotations = train.annotations()
    if not dataset.attributes or annotations is None:
        raise ConceptSourceError(f"concepts.source is 'attributes' but dataset '{dataset.name}' has no annotated "
                                 f"attributes. Use a dataset that has them (shapes, cub), or another source.")
    labels = np.asarray(train.labels)
    rows: List[Dict] = []
    linked = np.zeros(len(dataset.attributes), dtype=bool)
    for c in range(len(dataset.classes)):
        mine = annotations[labels == c]
        if not len(mine):
            continue
        share = mine.mean(axis=0)
        for k in np.flatnonzero(share >= class_share):
            rows.append({"class_index": c, "concept": dataset.attributes[k].concept, "source": "attributes",
                         "relation": f"present in {share[k]:.0%} of the class's train images"})
            linked[k] = True
    for k in np.flatnonzero(~linked):
        rows.append({"class_index": SHARED, "concept": dataset.attributes[k].concept, "source": "attributes",
                     "relation": "linked to no class"})
    return rows
