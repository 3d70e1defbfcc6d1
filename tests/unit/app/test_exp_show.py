"""docs/usage.md's `dvc exp show` one-liner: which columns its --drop and --keep leave (DVC matches each column
name with re.match; the pipeline tier runs it on real experiments at 120 columns)."""

from __future__ import annotations

import re

from sparse_cbm_app.cli.exp_show import exp_show_command


def kept(column: str) -> bool:
    cmd = exp_show_command()
    drop, keep = cmd[cmd.index("--drop") + 1], cmd[cmd.index("--keep") + 1]
    return bool(re.match(keep, column)) or not re.match(drop, column)


def test_params_and_the_headline_stay_and_everything_else_goes():
    for column in ("Experiment", "Created", "headline.top1", "headline.precision_at_k", "headline.nec", "loss",
                   "params.yaml:loss", "seed", "threads", "train.cbl.lr", "dataset.name", "spatial.sparse.lam", "compare.losses"):
        assert kept(column), column
    for column in ("test.cbm.top1", "concept_quality.cbm.auroc", "train_top1", "metrics/train.json:loss", "metrics/evaluate.json:loss", "params.yaml", "test_corrupted.test.cbm.top1",
                   "metrics/compare.json:dataset", "configs.l1-paper-dense.top1", "data/model", "stages/train.py",
                   "sparse_cbm/bottleneck", "params/checked/train.json", "nec", "State"):
        assert not kept(column), column
