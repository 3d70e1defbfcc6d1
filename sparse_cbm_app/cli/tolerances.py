"""How far a metric may move when the pipeline reruns on another machine of our kind: the measured
spread that ``sparse-cbm verify`` judges outputs by, and that ``sparse-cbm spread`` measures.

The spread of one metric (a numeric leaf of a metrics file, named by its path: ``test.cbm.top1``,
``configs.cos3-faithful-dense.nec``) is measured from reruns of the committed pipeline:

* **machine**: the largest distance from the committed value over reruns that change nothing but how
  the machine computes (another kernel set, another thread count);
* **seed**: the range over the committed run and reruns with other seeds (the same world drawn again,
  every weight initialised again).

A metric is **chaotic** when the machine moves it more than the seed does: a last-bit difference in
how a sum is taken grows into a difference as large as a new seed makes, so one number can only be
judged against the seed distribution. Every metric's **tolerance** is ``MARGIN`` times the larger of
the two: a rerun passes when it lands as near as another machine or another seed would put it, and
a change that moves a metric further fails. A metric that moved in no rerun has tolerance 0 and must
match exactly; one with no measurement (a metric added since) must match exactly too, and the check
says so and how to measure it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence, Tuple

import yaml

SPREAD_FILE = "reproduce/spread.json"   # committed; written by `sparse-cbm spread`
MARGIN = 1.5                            # tolerance = MARGIN x max(machine spread, seed spread)
MACHINE, SEED = "machine", "seed"


# ---------------------------------------------------------------- metrics files as leaves

def parse_metrics(path: str, text: str) -> Any:
    suffix = Path(path).suffix.lower()
    if suffix in (".yaml", ".yml"):
        return yaml.safe_load(text)
    if suffix == ".toml":
        import tomllib

        return tomllib.loads(text)
    return json.loads(text)


def leaves(value: Any, prefix: str = "") -> Iterator[Tuple[str, Any]]:
    """(dotted path, value) of every leaf: ``test.cbm.top1``, ``configs.l1-faithful-sparse.nec``."""
    if isinstance(value, Mapping):
        if not value and prefix:
            yield prefix, {}
        for key in value:
            yield from leaves(value[key], f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, list):
        if not value:
            yield prefix, []
        for i, item in enumerate(value):
            yield from leaves(item, f"{prefix}[{i}]")
    else:
        yield prefix, value


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def difference(a: float, b: float) -> float:
    if a == b or (math.isnan(a) and math.isnan(b)):
        return 0.0
    diff = abs(a - b)
    return math.inf if math.isnan(diff) else diff   # nan on one side only: never within a tolerance


# ---------------------------------------------------------------- the measurement

@dataclass(frozen=True)
class Spread:
    machine: float
    seed: float

    @property
    def chaotic(self) -> bool:
        return self.machine > self.seed

    @property
    def tolerance(self) -> float:
        """MARGIN x the larger spread; 0 (exact) when a rerun lost the metric or made it a non-number."""
        largest = max(self.machine, self.seed)
        return float(f"{MARGIN * largest:.4g}") if math.isfinite(largest) else 0.0


def measure(committed: Mapping[str, Any], runs: Mapping[str, Mapping[str, Any]],
            kinds: Mapping[str, str]) -> Dict[str, Dict[str, Spread]]:
    """{metrics file: {leaf: Spread}} of every numeric leaf of the committed metrics files.

    ``committed``: {file: parsed metrics} as committed; ``runs``: {configuration: {file: parsed
    metrics}} of the reruns; ``kinds``: {configuration: MACHINE | SEED}. A leaf a rerun lacks, or
    that is not a number there, counts as moved without bound (inf): such a metric can only match
    exactly."""
    out: Dict[str, Dict[str, Spread]] = {}
    for path, value in committed.items():
        base = {k: v for k, v in leaves(value) if is_number(v)}
        seen = {name: dict(leaves(run[path])) if path in run else {} for name, run in runs.items()}
        table: Dict[str, Spread] = {}
        for key, v0 in base.items():
            machine, seeds = 0.0, [float(v0)]
            for name, values in seen.items():
                v = values.get(key)
                if not is_number(v):
                    if kinds[name] == MACHINE:
                        machine = math.inf
                    else:
                        seeds.append(math.inf)
                elif kinds[name] == MACHINE:
                    machine = max(machine, difference(float(v0), float(v)))
                else:
                    seeds.append(float(v))
            finite = [s for s in seeds if not math.isnan(s)]
            seed = (max(finite) - min(finite)) if finite else 0.0
            table[key] = Spread(machine, seed if not math.isnan(seed) else math.inf)
        out[path] = table
    return out


# ---------------------------------------------------------------- the committed file

@dataclass(frozen=True)
class Tolerances:
    """The committed measurement: per metrics file and leaf, its spread and tolerance."""

    spreads: Mapping[str, Mapping[str, Spread]]
    about: Mapping[str, Any]

    def tolerance(self, path: str, key: str) -> Optional[float]:
        spread = self.spreads.get(path, {}).get(key)
        return None if spread is None else spread.tolerance

    @classmethod
    def empty(cls) -> "Tolerances":
        return cls({}, {})

    @classmethod
    def parse(cls, text: str) -> "Tolerances":
        data = json.loads(text)
        spreads = {path: {key: Spread(_float(e["machine"]), _float(e["seed"])) for key, e in table.items()}
                   for path, table in data.get("metrics", {}).items()}
        return cls(spreads, data.get("measured", {}))


def _float(value: Any) -> float:
    return math.inf if value == "inf" else float(value)


def _json_number(value: float) -> Any:
    return "inf" if math.isinf(value) else float(f"{value:.6g}")


def dumps(spreads: Mapping[str, Mapping[str, Spread]], measured: Mapping[str, Any],
          outputs: Mapping[str, Mapping[str, bool]]) -> str:
    """The committed file: what was measured, on what, and every metric's spread and tolerance."""
    data = {
        "about": "Written by `sparse-cbm spread`; read by `sparse-cbm verify` (docs/reproducibility.md). Per metrics "
                 f"file and leaf: machine (largest move over reruns on other kernel sets and thread counts), seed "
                 f"(range over seeds), chaotic (machine > seed) and tolerance ({MARGIN:g} x the larger).",
        "measured": dict(measured),
        "outputs_reproduced_exactly": {k: dict(v) for k, v in outputs.items()},
        "metrics": {path: {key: {"machine": _json_number(s.machine), "seed": _json_number(s.seed),
                                 "chaotic": s.chaotic, "tolerance": _json_number(s.tolerance)}
                           for key, s in table.items()}
                    for path, table in spreads.items()},
    }
    return json.dumps(data, indent=1, sort_keys=False) + "\n"


def summarise(spreads: Mapping[str, Mapping[str, Spread]]) -> Sequence[Tuple[str, int, int, int, int, str]]:
    """Per metrics file: (file, metrics, moved by the machine, moved by the seed, chaotic, the most chaotic)."""
    rows = []
    for path, table in spreads.items():
        chaotic = sorted(((s.machine - s.seed, k) for k, s in table.items() if s.chaotic), reverse=True)
        worst = ", ".join(f"{k} (machine {table[k].machine:.3g}, seed {table[k].seed:.3g})" for _, k in chaotic[:3])
        rows.append((path, len(table), sum(s.machine > 0 for s in table.values()),
                     sum(s.seed > 0 for s in table.values()), len(chaotic), worst))
    return rows
