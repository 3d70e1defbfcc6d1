"""The ``attributes`` world of ``shapes``: 20 classes with invented names, each defined by a rule.

A rule is a conjunction of two attribute values ("star and red": any texture, any size,
any background the other rules leave it). The rules overlap in their attributes, as
CUB's species do ("red" takes part in four rules, "star" in four), and were chosen so
that every class keeps several full attribute combinations that satisfy its rule and no
other (``EXCLUSIVE``): an image is drawn from those, so it satisfies exactly its own
class's rule and the class is a function of its attributes. Texture and size take part
in no rule: they vary inside every class, like the attributes of CUB that do not tell
species apart.

The class names are nonce words: CLIP, given only a name, can only guess. Whatever
explains a class has to come through its concepts.
"""

from __future__ import annotations

import itertools
from typing import Dict, List, Tuple

import numpy as np

from sparse_cbm.datasets.shapes_world import ALL_VALUES, ATTRIBUTES, ShapesWorld, concept

Rule = Tuple[Tuple[str, str], Tuple[str, str]]

RULES: Dict[str, Rule] = {
    "blicket": (("colour", "blue"), ("background", "white")),
    "dax": (("shape", "star"), ("background", "black")),
    "wug": (("shape", "circle"), ("colour", "green")),
    "toma": (("shape", "square"), ("background", "grey")),
    "fep": (("shape", "star"), ("colour", "green")),
    "zav": (("shape", "star"), ("colour", "red")),
    "kiki": (("shape", "star"), ("background", "pink")),
    "bouba": (("colour", "red"), ("background", "pink")),
    "gazzer": (("shape", "circle"), ("background", "black")),
    "tulver": (("shape", "circle"), ("colour", "red")),
    "moxa": (("shape", "square"), ("background", "white")),
    "pilk": (("colour", "green"), ("background", "black")),
    "quemp": (("shape", "triangle"), ("background", "grey")),
    "snib": (("colour", "red"), ("background", "black")),
    "trell": (("shape", "triangle"), ("colour", "blue")),
    "vosk": (("colour", "green"), ("background", "pink")),
    "yupple": (("shape", "square"), ("colour", "blue")),
    "zeeb": (("colour", "blue"), ("background", "grey")),
    "glim": (("shape", "circle"), ("background", "pink")),
    "nurf": (("shape", "triangle"), ("background", "white")),
}


def satisfies(attrs: Dict[str, object], rule: Rule) -> bool:
    return all(attrs[a] == v for a, v in rule)


def _exclusive_combinations() -> Dict[str, List[Dict[str, str]]]:
    combos = [dict(zip(ATTRIBUTES, values)) for values in itertools.product(*(ALL_VALUES[a] for a in ATTRIBUTES))]
    out = {}
    for name, rule in RULES.items():
        out[name] = [c for c in combos if satisfies(c, rule)
                     and not any(satisfies(c, other) for o, other in RULES.items() if o != name)]
    return out


EXCLUSIVE = _exclusive_combinations()


def rule_concepts(name: str) -> List[str]:
    """The two concepts of a class's rule: true of every image of the class, and what defines it."""
    return [concept(a, v) for a, v in RULES[name]]


def constant_concepts(name: str) -> List[str]:
    """Every concept true of every image of the class: its rule's, and values the other rules force."""
    combos = EXCLUSIVE[name]
    return [concept(a, v) for a in ATTRIBUTES for v in ALL_VALUES[a] if all(c[a] == v for c in combos)]


def rule_text(name: str) -> str:
    """"star and red": the rule of a class, for people."""
    return " and ".join(concept(a, v) for a, v in RULES[name])


class RuleWorld(ShapesWorld):
    name = "rules-v1"

    def __init__(self):
        self.classes = list(RULES)

    def decided_by_object(self, label: int) -> bool:
        return all(a != "background" for a, _ in RULES[self.classes[label]])

    def attributes(self, label: int, rng: np.random.Generator) -> Dict[str, object]:
        """One of the class's exclusive combinations, uniformly."""
        combos = EXCLUSIVE[self.classes[label]]
        return dict(combos[int(rng.integers(len(combos)))])


# Candidate concepts of the kind ConceptNet returns for the rule words: associations, not
# things the images show (RelatedTo / AtLocation / UsedFor edges). No image is annotated with them.
ASSOCIATES: Dict[str, Tuple[str, ...]] = {
    "red": ("blood", "fire truck", "anger", "ketchup"),
    "green": ("grass", "envy", "money", "frog"),
    "blue": ("ocean", "sadness", "jeans", "sapphire"),
    "circle": ("orbit", "wedding ring", "friendship", "pizza"),
    "square": ("chessboard", "town square", "window", "cardboard box"),
    "triangle": ("musical instrument", "pyramid", "trigonometry", "warning sign"),
    "star": ("night sky", "celebrity", "sun", "galaxy"),
    "solid": ("rock", "ice cube", "brick", "metal"),
    "striped": ("zebra", "tiger", "barcode", "candy cane"),
    "dotted": ("ladybug", "dice", "dalmatian", "sewing"),
    "white background": ("snow", "paper sheet", "wedding dress", "milk"),
    "black background": ("night", "outer space", "ink", "coal"),
    "grey background": ("cloud", "elephant", "concrete", "pigeon"),
    "pink background": ("flamingo", "bubblegum", "piglet", "cherry blossom"),
    "small": ("ant", "seed", "pebble", "crumb"),
    "large": ("whale", "mountain", "skyscraper", "giant"),
}
GENERIC = ("object", "thing", "geometry", "drawing", "picture", "art", "toy", "game", "mathematics", "school",
           "child", "paper", "pencil", "design", "symbol", "logo", "decoration", "kindergarten", "puzzle", "sticker")
CONCEPTS_FILE = "data/concept_files/shapes_attributes_concepts.csv"


def candidate_concept_rows() -> List[Tuple[str, str]]:
    """(class, concept) rows of the world's candidate concepts ("" = shared by every class): per class
    the concepts true of all its images (its rule's and any value the other rules force: what an
    expert, or an LLM asked for a class's features, would list); shared by every class, the attribute
    words no class is defined by (texture, size), ConceptNet-like associations of every attribute
    word, distractors the world does not have, and generic words. 112 distinct concepts, 16 of them
    annotated, 96 that no image shows.

    The associations are shared rather than linked to classes on purpose: linked, they drown
    classification by descriptions (one association per rule word took it from 0.62 to 0.20 on the
    test split), since this CLIP has never seen their words."""
    from sparse_cbm.datasets.shapes_text import DISTRACTORS

    rows: List[Tuple[str, str]] = []
    linked = set()
    for name in RULES:
        own = constant_concepts(name)
        linked.update(own)
        rows += [(name, c) for c in own]
    every = [concept(a, v) for a in ATTRIBUTES for v in ALL_VALUES[a]]
    rows += [("", c) for c in every if c not in linked]
    rows += [("", a) for c in every for a in ASSOCIATES[c]]
    rows += [("", c) for c in (*DISTRACTORS, *GENERIC)]
    return rows


def concept_list_csv() -> str:
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["class", "concept"])
    writer.writerows(candidate_concept_rows())
    return buf.getvalue()


def main(argv=None) -> None:
    import argparse

    from sparse_cbm.runtime.atomic import atomic_write_text

    parser = argparse.ArgumentParser(description="Write the attributes world's candidate concepts (class,concept CSV).")
    parser.add_argument("--out", default=CONCEPTS_FILE)
    args = parser.parse_args(argv)
    atomic_write_text(args.out, concept_list_csv())
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
