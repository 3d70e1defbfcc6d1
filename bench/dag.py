"""Benchmark of the whole default DAG: every stage's wall time and peak RSS, in one run.

In a fresh clone of HEAD (commit what you want measured), each stage of ``dvc.yaml`` is rerun in
the file's order, which is the DAG's, with ``dvc repro --force --single-item <stage>``, each as its
own child process: its wall time and the peak resident size of its largest process (``wait4``'s
``ru_maxrss``: DVC's own, about 0.8 GB, or the stage's Python when it is larger) are printed, then the whole DAG's
time against the target (8 minutes on our 2-core machine, issue 19). Each stage's time includes
DVC's own start-up and hashing (a few seconds), as ``dvc repro`` does. Nothing else should run on
the machine meanwhile: two pipelines on two cores slow each other 4-20x.

Usage: python bench/dag.py [--profile quick] [--stages concepts,embed_images] [--target-min 8]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sparse_cbm_app.cli.repo import clone_at, env_for_children, git  # noqa: E402

# a tiny run for the unit tier (tests/unit/test_bench.py): one stage that takes a second
SMOKE_ARGS = ["--stages", "concepts", "--target-min", "8"]


def stages_in_order(work: Path) -> list:
    return list(yaml.safe_load((work / "dvc.yaml").read_text(encoding="utf-8"))["stages"])


def run_stage(work: Path, stage: str, env: dict) -> tuple:
    """(seconds, peak RSS in MiB of the stage's largest process, its stderr: the stage's log) of one forced
    stage; a failed stage ends the benchmark with its log's tail."""
    started = time.perf_counter()
    proc = subprocess.Popen(["dvc", "repro", "--force", "--single-item", stage], cwd=work, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        sys.exit(f"dvc repro --force --single-item {stage} failed ({proc.returncode}):\n{err[-3000:]}")
    return seconds, usage.ru_maxrss / 1024, err


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default=None, help="apply this params profile first (default: params.yaml)")
    parser.add_argument("--stages", default=None, help="comma-separated stages (default: every stage)")
    parser.add_argument("--target-min", type=float, default=8.0, help="the whole DAG's target, minutes")
    args = parser.parse_args(argv)
    sha = git(["rev-parse", "HEAD"], REPO).stdout.strip()
    env = {**env_for_children(), "DVC_NO_ANALYTICS": "1"}
    with tempfile.TemporaryDirectory(prefix="bench-dag-") as tmp:
        work = clone_at(REPO, sha, Path(tmp) / "work")
        if args.profile:
            subprocess.run([sys.executable, "-m", "sparse_cbm_app.cli", "params", "apply", args.profile], cwd=work,
                           env=env, check=True, capture_output=True)
        stages = args.stages.split(",") if args.stages else stages_in_order(work)
        print(f"commit {sha[:10]}, {'profile ' + args.profile if args.profile else 'params.yaml'}, "
              f"{os.cpu_count()} CPUs; each stage forced, alone, in DAG order:")
        total, peak = 0.0, 0.0
        for stage in stages:
            seconds, rss, _ = run_stage(work, stage, env)
            total, peak = total + seconds, max(peak, rss)
            print(f"  {stage:<18} {seconds:8.1f} s | peak RSS {rss:7.0f} MiB", flush=True)
    verdict = "met" if total <= 60 * args.target_min else "missed"
    print(f"whole: {total:.1f} s = {int(total // 60)} min {total % 60:.0f} s for {len(stages)} stages | largest peak "
          f"RSS {peak:.0f} MiB | target {args.target_min:g} min: {verdict}")


if __name__ == "__main__":
    main()
