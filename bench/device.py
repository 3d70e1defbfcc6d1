"""The device check: the default DAG on a GPU, against the committed CPU run, in one script.

For a GPU machine when one is lent (``bench/device.sh`` runs this with its defaults). In a fresh
clone of HEAD, with ``backbone.device`` and ``train.device`` set to ``--device``:

* every stage is rerun in DAG order, each alone (``dvc repro --force --single-item``, as
  ``bench/dag.py`` does): its wall time and peak RSS, then the whole DAG's time against the target
  (8 minutes on one GPU, issue 23);
* every stage that declares metrics (``meta.reproduce`` in dvc.yaml) is judged as ``sparse-cbm
  verify`` judges a rerun: its metrics files against the committed ones (the CPU run), each number
  within its measured spread (``reproduce/spread.json``); a device's kernels are another machine,
  so exact equality is not expected, and a metric further off than another seed would put it fails;
* ``embed_images``' own logged throughput on train against a bare forward of the same backbone at
  the same batch on the same device, in this process (target >= 0.8).

``--given filter`` copies a stage's outputs (its outs in the committed dvc.lock) from this checkout's
workspace into the clone instead of running it, for a machine that lacks what the stage needs (the
filter's MiniLM package is 91 MB, more than a device machine's upload takes): run ``dvc repro
<stage>`` here first, and ``dvc status`` says whether they match the lock. Its metrics are then
judged only through the stages downstream that ran.

Exit status 1 when a metric moved beyond its spread. ``--device cpu`` checks the script itself on
any machine (the smoke run of tests/unit/test_bench.py: one stage).

Usage: python bench/device.py [--device cuda] [--stages embed_images,train] [--given filter]
       [--num-workers 15] [--target-min 8] [--forward-batches 20] [--save-metrics DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.dag import run_stage, stages_in_order  # noqa: E402
from sparse_cbm_app.cli.lockcheck import judge_by_metrics, outputs, tolerances  # noqa: E402
from sparse_cbm_app.cli.repo import clone_at, env_for_children, git, reader  # noqa: E402
from sparse_cbm_app.cli.tolerances import SPREAD_FILE, Tolerances  # noqa: E402

# a tiny run for the unit tier (tests/unit/test_bench.py): one stage, on the CPU
SMOKE_ARGS = ["--device", "cpu", "--stages", "concepts", "--forward-batches", "1"]
RATE = re.compile(r"train \([^)]*\): (\d+) images in [\d.]+ s \(([\d.]+) img/s\)")  # image_cache.py's log line


def on_device(work: Path, device: str, env: dict, num_workers=None) -> None:
    """``backbone.device`` and ``train.device`` of the clone's params.yaml set to ``device`` (a profile),
    and ``backbone.num_workers`` to ``num_workers`` when given."""
    profile = work / ".dvc" / "tmp" / "device-profile.yaml"
    profile.parent.mkdir(parents=True, exist_ok=True)
    backbone = {"device": device, **({} if num_workers is None else {"num_workers": num_workers})}
    profile.write_text(yaml.safe_dump({"backbone": backbone, "train": {"device": device}}))
    subprocess.run([sys.executable, "-m", "sparse_cbm_app.cli", "params", "apply", str(profile)], cwd=work, env=env,
                   check=True, capture_output=True)


def copy_given(source: Path, work: Path, stages: list) -> None:
    """Each of ``stages``' outs in ``work``'s dvc.lock, copied from the checkout ``source`` into ``work``."""
    lock = yaml.safe_load((work / "dvc.lock").read_text(encoding="utf-8"))["stages"]
    for stage in stages:
        if stage not in lock:
            sys.exit(f"bench/device.py: --given {stage}: no such stage in dvc.lock ({', '.join(lock)})")
        for path, out in outputs(lock[stage]).items():
            src, dst = source / path, work / path
            if not src.exists():
                sys.exit(f"bench/device.py: --given {stage}: {path} is not in this checkout: run "
                         f"`dvc repro {stage}` here first")
            files = sum(1 for f in src.rglob("*") if f.is_file()) if src.is_dir() else 1
            if out.get("nfiles") not in (None, files):
                sys.exit(f"bench/device.py: --given {stage}: {path} holds {files} files, the lock "
                         f"{out['nfiles']}: run `dvc repro {stage}` here first")
            if dst.is_dir():
                shutil.rmtree(dst)
            dst.parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)


def bare_forward(work: Path, device: str, batches: int) -> float:
    """Images/s of the params' backbone on ``device``: ``batches`` forwards of random tensors at the
    stage's batch size, after one warm-up, synchronised."""
    import torch

    from sparse_cbm.clip.backbone import load_backbone
    from sparse_cbm_app.params import load_params

    params = load_params(work / "params.yaml")
    bb = params.backbone
    with contextlib.chdir(work):  # the params' paths are the project's
        backbone = load_backbone(bb.model, bb.pretrained, device=device, precision=bb.precision)
    x = torch.randn(bb.batch_size, *backbone.blank_input.shape)
    sync = torch.cuda.synchronize if backbone.device.type == "cuda" else (lambda: None)
    with torch.no_grad():
        backbone.encode_images(x)
        sync()
        started = time.perf_counter()
        for _ in range(batches):
            backbone.encode_images(x)
        sync()
    return batches * bb.batch_size / (time.perf_counter() - started)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="where the stages compute (backbone.device, train.device)")
    parser.add_argument("--stages", default=None, help="comma-separated stages (default: every stage)")
    parser.add_argument("--given", default="", help="comma-separated stages whose outputs are copied from this "
                        "checkout instead of run (run `dvc repro <stage>` here first)")
    parser.add_argument("--num-workers", type=int, default=None, help="backbone.num_workers for the run: DataLoader "
                        "processes drawing the images (default: params.yaml's; with 0, the H200 run was bound by "
                        "drawing images in the stage's own process)")
    parser.add_argument("--save-metrics", default=None, help="copy the metrics files the run rewrote into this folder")
    parser.add_argument("--target-min", type=float, default=8.0, help="the whole DAG's target, minutes")
    parser.add_argument("--forward-batches", type=int, default=20, help="batches timed in the bare forward")
    args = parser.parse_args(argv)
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit(f"bench/device.py: --device {args.device} but torch {torch.__version__} sees no CUDA device: run "
                 "it on a GPU machine, or with --device cpu to check the script")
    name = torch.cuda.get_device_name(torch.device(args.device)) if args.device.startswith("cuda") else "CPU"
    sha = git(["rev-parse", "HEAD"], REPO).stdout.strip()
    env = {**env_for_children(), "DVC_NO_ANALYTICS": "1"}
    with tempfile.TemporaryDirectory(prefix="bench-device-") as tmp:
        work = clone_at(REPO, sha, Path(tmp) / "work")
        on_device(work, args.device, env, args.num_workers)
        given = [s for s in args.given.split(",") if s]
        copy_given(REPO, work, given)
        stages = [s for s in (args.stages.split(",") if args.stages else stages_in_order(work)) if s not in given]
        print(f"commit {sha[:10]}, params.yaml with backbone.device and train.device {args.device} ({name}), torch "
              f"{torch.__version__}; each stage forced, alone, in DAG order"
              + (f" ({', '.join(given)}: outputs copied from the checkout, not run)" if given else "") + ":")
        total, peak, logs, before = 0.0, 0.0, {}, written(work)
        for stage in stages:
            seconds, rss, logs[stage] = run_stage(work, stage, env)
            total, peak = total + seconds, max(peak, rss)
            print(f"  {stage:<18} {seconds:8.1f} s | peak RSS {rss:7.0f} MiB", flush=True)
        verdict = "met" if total <= 60 * args.target_min else "missed"
        print(f"whole: {total:.1f} s = {int(total // 60)} min {total % 60:.0f} s for {len(stages)} stages | largest "
              f"peak RSS {peak:.0f} MiB | target {args.target_min:g} min: {verdict}")
        rewritten = {path for path, stamp in written(work).items() if before.get(path) != stamp}
        if args.save_metrics:
            Path(args.save_metrics).mkdir(parents=True, exist_ok=True)
            for path in sorted(p for p in rewritten if (work / p).exists()):
                shutil.copy2(work / path, Path(args.save_metrics) / path.replace("/", "__"))
        failed = judge(work, stages, rewritten)
        rate = RATE.search(logs.get("embed_images", ""))
        if "embed_images" in logs and not rate:
            print("embed_images ran but logged no rate on train: no throughput line")
        if rate:
            bare = bare_forward(work, args.device, args.forward_batches)
            print(f"embed_images on train: {float(rate.group(2)):.1f} img/s ({rate.group(1)} images) | bare forward "
                  f"{bare:.1f} img/s | ratio {float(rate.group(2)) / bare:.2f} (target >= 0.8)")
    if failed:
        sys.exit(1)


def written(work: Path) -> dict:
    """Every declared metrics file of the clone -> its modification time (None when absent)."""
    declared = tolerances(yaml.safe_load((work / "dvc.yaml").read_text()) or {})
    paths = {path for tol in declared.values() for path in tol.metrics}
    return {path: (work / path).stat().st_mtime_ns if (work / path).exists() else None for path in paths}


def judge(work: Path, stages: list, rewritten: set) -> bool:
    """Print each rerun stage's metrics against the committed ones, by their measured spread; True when
    one moved beyond it. A stage whose metrics files the run did not rewrite (they come from a stage
    downstream that did not run) is said to be not judged, never passed."""
    declared = tolerances(yaml.safe_load((work / "dvc.yaml").read_text()) or {})
    text = reader(work, "HEAD")(SPREAD_FILE)
    measured = Tolerances.parse(text) if text else Tolerances.empty()
    failed = False
    for stage in [s for s in stages if s in declared]:
        stale = [path for path in declared[stage].metrics if path not in rewritten]
        if stale:
            print(f"  {stage:<18} not judged: {', '.join(stale)} not rewritten by the stages run")
            continue
        ok, how = judge_by_metrics(declared[stage], reader(work, "HEAD"), reader(work, None), measured)
        failed = failed or not ok
        print(f"  {stage:<18} {'within spread' if ok else 'MOVED'}: {how}")
    if not any(s in declared for s in stages):
        print("no stage run declares metrics: nothing compared with the committed run")
    return failed


if __name__ == "__main__":
    main()
