"""Normalising concept text: what counts as the same concept, and as a class's own name."""

from __future__ import annotations

import re
import unicodedata

_ARTICLE = re.compile(r"^(?:a|an|the)\s+", re.IGNORECASE)
_EDGE_PUNCT = " \t\r\n.,;:!?\"'`*_()[]{}<>-–—•·"


def normalize_concept(text: str) -> str:
    """Lower case, underscores to spaces, one space between words, no leading article,
    no punctuation at either end: ``"The_Big  Wheel."`` -> ``"big wheel"``."""
    text = unicodedata.normalize("NFKC", str(text)).replace("_", " ")
    text = re.sub(r"\s+", " ", text).strip(_EDGE_PUNCT).lower()
    previous = None
    while previous != text:
        previous = text
        text = _ARTICLE.sub("", text).strip(_EDGE_PUNCT)
    return text


def class_key(name: str) -> str:
    """The form under which a concept is the class name itself ("A Dog" == "dog")."""
    return normalize_concept(name)


def lookup_terms(class_name: str) -> list[str]:
    """ConceptNet terms for a class: each word, and the whole name when it has several words.

    ``"golden retriever"`` -> ``["golden_retriever", "golden", "retriever"]``;
    slashes and commas separate words like spaces do.
    """
    words = [w for w in re.split(r"[\s/,;]+", normalize_concept(class_name)) if w]
    terms = (["_".join(words)] if len(words) > 1 else []) + words
    return list(dict.fromkeys(terms))
