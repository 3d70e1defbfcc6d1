"""The ``dvc exp show`` one-liner that fits 120 columns: the experiment's name, the params that differ
between the rows shown, and the headline metrics (``headline.*`` of ``metrics/evaluate.json``: test top-1,
precision@k of the explanations, NEC). Plain ``dvc exp show`` has about 400 columns.

``--only-changed`` hides the params and metrics that no row changes; ``--keep`` holds the headline even so;
``--drop`` removes every other metric and every dependency's hash, keeping only the params, whose names
start with a top-level key of params.yaml (read from the schema, so a new section is never missed), or
with ``params.yaml:`` where a metric has the same name (``params.yaml:loss``).
``sparse-cbm docs`` writes it into docs/usage.md."""

from __future__ import annotations

import shlex
from typing import List

from pydantic import BaseModel

HEADLINE = r"^headline\."


def _param_names() -> str:
    """A regex of params' column names: ``seed``, ``loss``, ``train.<...>`` for each top-level key of the schema."""
    from sparse_cbm_app.params import Params

    scalars, sections = [], []
    for name, field in Params.model_fields.items():
        annotation = field.annotation
        (sections if isinstance(annotation, type) and issubclass(annotation, BaseModel) else scalars).append(name)
    return f"({'|'.join(scalars)})$|({'|'.join(sections)})\\."


def exp_show_command() -> List[str]:
    # every column but these; a param whose name a metric also has is shown as params.yaml:<name> (loss)
    drop = f"^(?!Experiment$|Created$|headline\\.|(params\\.yaml:)?({_param_names()}))"
    return ["dvc", "exp", "show", "--only-changed", "--keep", HEADLINE, "--drop", drop]


def exp_show_block(_root=None) -> str:
    return "```bash\n" + " ".join(shlex.quote(a) for a in exp_show_command()) + "\n```"
