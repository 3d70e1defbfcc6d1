"""Run one stage with every params access recorded: ``python -m tests.trace_stage <stage> <out.json> [args...]``
(``args``: the stage's own command-line arguments, its paths as dvc.yaml's ``cmd`` passes them).

``load_params`` is replaced by one that returns a recording proxy of the same Params: each
leaf read (``params.train.cbl.lr``) is recorded as its dotted key, and a whole section
dumped at once (``params.train.model_dump()``) as the section's key. The keys are written
to ``out.json`` when the stage ends, however it ends. Used by tests/pipeline/test_declared_reads.py.
"""

from __future__ import annotations

import json
import runpy
import sys
from typing import Any, Set

from pydantic import BaseModel

import sparse_cbm_app.params as params_module


class Recording:
    """A read-only view of a pydantic model that records the keys read through it."""

    def __init__(self, model: BaseModel, prefix: str, seen: Set[str]):
        object.__setattr__(self, "_model", model)
        object.__setattr__(self, "_prefix", prefix)
        object.__setattr__(self, "_seen", seen)

    def _key(self, name: str) -> str:
        return f"{self._prefix}.{name}" if self._prefix else name

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._model, name)
        if name in type(self._model).model_fields:
            if isinstance(value, BaseModel):
                return Recording(value, self._key(name), self._seen)
            self._seen.add(self._key(name))
        elif callable(value):  # model_dump and friends read the whole section
            self._seen.add(self._prefix or "<all>")
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("params are read-only in a stage")


def main(stage: str, out: str, args=()) -> int:
    seen: Set[str] = set()
    original = params_module.load_params
    params_module.load_params = lambda path="params.yaml": Recording(original(path), "", seen)
    sys.argv[1:] = list(args)  # what the stage parses (run_module replaces only argv[0])
    code = 0
    try:
        runpy.run_module(f"stages.{stage}", run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        with open(out, "w", encoding="utf-8") as fh:
            json.dump(sorted(seen), fh)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
