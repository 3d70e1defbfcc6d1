"""The classifiers compared by the evaluate stage, one protocol (``base.Classifier``) for all.

The import order below is the order of every table and figure.
"""

from sparse_cbm.classifiers.base import (CLASSIFIERS, Classifier, ConceptClassifier, ConceptScorer,  # noqa: F401
                                         EvaluationInputs, build_classifiers, register)
from sparse_cbm.classifiers import cbm, cms, zero_shot, descriptions, linear_probe  # noqa: E402,F401
