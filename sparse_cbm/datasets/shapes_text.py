"""Words of the ``shapes`` world: image captions and the ground-truth concepts.

Every attribute value has one short concept phrase: the shape ("circle"), the
colour ("red"), the texture ("striped"), the background ("grey background") and
the size ("small"). A class is true of the concepts of its class attributes for
every one of its images; the other attributes' concepts are true for some images
of every class; the distractors (``DISTRACTORS``) are words the world does not
have, so they are false for every image.

Rebuild the committed concept list with::

    python -m sparse_cbm.datasets.shapes_text --out data/concept_files/shapes_concepts.csv
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from sparse_cbm.runtime.atomic import atomic_write_text
from sparse_cbm.datasets.shapes_world import (ALL_VALUES, ATTRIBUTE_VALUES, ATTRIBUTES, SHAPES_DEFAULTS, class_name,
                                              class_table, concept)
DISTRACTORS = ("yellow", "orange", "purple", "hexagon", "pentagon", "heart",
               "checkered", "wooden", "wheels", "feathers", "fur", "leaves")
DEFAULT_CLASS_ATTRIBUTES = SHAPES_DEFAULTS.class_attributes
CONCEPTS_FILE = "data/concept_files/shapes_concepts.csv"
_TEMPLATES = ("a photo of a {}.", "a {}.", "{}", "an image of a {}.", "a picture of a {}.")
# Words no caption ever holds, each meaning one attribute value (synonyms and near-synonyms): a CLIP
# whose text tower knows language places them nearest that value's concept; one that learnt words
# from the captions alone cannot.
UNSEEN_WORDS: Dict[str, Tuple[str, ...]] = {
    "red": ("crimson", "scarlet"), "green": ("emerald", "grass-coloured"), "blue": ("azure", "navy"),
    "circle": ("round disc", "ring"), "square": ("box", "quadrilateral"),
    "triangle": ("three-sided figure", "wedge"), "star": ("five-pointed figure", "asterisk"),
    "solid": ("plain", "uniformly coloured"), "striped": ("banded", "with stripes"),
    "dotted": ("polka-dot", "spotted"), "small": ("tiny", "little"), "large": ("big", "huge"),
    "white background": ("snow-white backdrop", "pale backdrop"),
    "black background": ("dark backdrop", "pitch-black backdrop"),
    "grey background": ("gray backdrop", "ash-coloured backdrop"),
    "pink background": ("rose-coloured backdrop", "salmon backdrop"),
}
_BACKGROUND_PHRASES = ("on a {} background", "with a {} background")


def attribute_concepts() -> List[str]:
    """Every attribute concept of the world, attribute by attribute, in a fixed order."""
    return [concept(a, v) for a in ATTRIBUTES for v in ALL_VALUES[a]]


def image_concepts(attrs: Mapping[str, object]) -> List[str]:
    """The attribute concepts true of one image: its shape, colour, texture, background and size."""
    return [concept(a, str(attrs[a])) for a in ATTRIBUTES]


def class_concepts(class_attrs: Mapping[str, object]) -> List[str]:
    """The concepts true of every image of a class: those of its class attributes."""
    return [concept(a, str(class_attrs[a])) for a in ATTRIBUTES if a in class_attrs]


def class_concept_table(class_attributes: Sequence[str] = DEFAULT_CLASS_ATTRIBUTES) -> Dict[str, List[str]]:
    """Ground truth, class name -> the concepts true of every image of that class."""
    return {class_name(c): class_concepts(c) for c in class_table(class_attributes)}


def concept_list_rows(class_attributes: Sequence[str] = DEFAULT_CLASS_ATTRIBUTES,
                      distractors: Sequence[str] = DISTRACTORS) -> List[Tuple[str, str]]:
    """(class, concept) rows: per class its own concepts, then the concepts of the attributes
    that vary inside every class (true for some of its images), then the distractors."""
    varying = [concept(a, v) for a in ATTRIBUTES if a not in class_attributes for v in ALL_VALUES[a]]
    rows = []
    for name, own in class_concept_table(class_attributes).items():
        rows += [(name, c) for c in [*own, *varying, *distractors]]
    return rows


def concept_list_csv(class_attributes: Sequence[str] = DEFAULT_CLASS_ATTRIBUTES,
                     distractors: Sequence[str] = DISTRACTORS) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["class", "concept"])
    writer.writerows(concept_list_rows(class_attributes, distractors))
    return buf.getvalue()


def write_concept_list(path: str | Path = CONCEPTS_FILE,
                       class_attributes: Sequence[str] = DEFAULT_CLASS_ATTRIBUTES,
                       distractors: Sequence[str] = DISTRACTORS) -> Path:
    """Write the attribute-word concept list with distractors, a CSV with columns class,concept."""
    atomic_write_text(path, concept_list_csv(class_attributes, distractors))
    return Path(path)


def caption(attrs: Mapping[str, object], rng: Optional[np.random.Generator] = None, drop: float = 0.0) -> str:
    """A caption of an image from its attributes.

    Without ``rng``: "a small red striped circle on a grey background". With ``rng``: a
    template, an order of the adjectives and a background phrase are drawn, and each
    attribute is left out with probability ``drop`` (at least one stays; a missing
    shape reads "shape"). The same attributes and rng state give the same caption.
    """
    if rng is None:
        return (f"a {attrs['size']} {attrs['colour']} {attrs['texture']} {attrs['shape']} "
                f"on a {attrs['background']} background")
    keep = {a: bool(rng.random() >= drop) for a in ATTRIBUTES}
    if not any(keep.values()):
        keep[ATTRIBUTES[int(rng.integers(len(ATTRIBUTES)))]] = True
    adjectives = [str(attrs[a]) for a in ("size", "colour", "texture") if keep[a] and attrs.get(a)]
    words = [adjectives[k] for k in rng.permutation(len(adjectives))]
    words.append(str(attrs["shape"]) if keep["shape"] else "shape")
    if keep["background"]:
        phrase = _BACKGROUND_PHRASES[int(rng.integers(len(_BACKGROUND_PHRASES)))]
        words.append(phrase.format(attrs["background"]))
    template = _TEMPLATES[int(rng.integers(len(_TEMPLATES)))]
    return template.format(" ".join(words))


def ringed_caption(obj: Optional[Mapping[str, object]], background: str, rng: np.random.Generator,
                   drop: float = 0.0) -> str:
    """The caption of an image with a ring drawn around one place: what is inside the ring. An
    object (its size only when it has one: the small others of a scene have none) on the
    background, or, when the ring circles no object, the background alone ("a grey background")."""
    if obj is None:
        template = _TEMPLATES[int(rng.integers(len(_TEMPLATES)))]
        return template.format(f"{background} background")
    return caption({**obj, "background": background, "size": obj.get("size", "")}, rng, drop)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description="Write the shapes concept list (class,concept CSV).")
    parser.add_argument("--out", default=CONCEPTS_FILE)
    parser.add_argument("--class-attributes", nargs="+", default=list(DEFAULT_CLASS_ATTRIBUTES),
                        choices=list(ATTRIBUTE_VALUES))
    args = parser.parse_args(argv)
    path = write_concept_list(args.out, args.class_attributes)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
