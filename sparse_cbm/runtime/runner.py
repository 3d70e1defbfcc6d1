"""How a stage module runs: its paths from its command line, logging to stderr, timing, and one clear line
on a known error."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
from typing import Callable, Optional, Sequence

from sparse_cbm.errors import SparseCbmError
from sparse_cbm.runtime.lock import stage_lock
from sparse_cbm.runtime.workers import owns_stage_lock

log = logging.getLogger("sparse_cbm")


def stage_paths(stage: str, argv: Optional[Sequence[str]], *names: str) -> argparse.Namespace:
    """The paths a stage reads and writes, each a required ``--<name>`` option of ``python -m
    stages.<stage>`` (``argv``; None: the process's). dvc.yaml's ``vars`` name every path once and
    each stage's ``cmd`` passes them, so no stage writes a path of the pipeline itself."""
    parser = argparse.ArgumentParser(prog=f"python -m stages.{stage}",
                                     description=f"Stage {stage} (its paths as dvc.yaml passes them).")
    for name in names:
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, required=True, metavar="PATH")
    return parser.parse_args(argv)


def configure_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for name in ("sparse_cbm", "stages"):
        logging.getLogger(name).setLevel(level)


def run_stage(name: str, body: Callable[[], None]) -> None:
    """Run a stage's body under its lock (``runtime.lock``); exit 2 with ``<name>: error: ...`` on a SparseCbmError
    (another live process running the stage is one), 130 on Ctrl-C. The workers of a sharded stage
    (``runtime.workers``) run under the lock of the process that launched them, or of their first worker."""
    configure_logging()
    started = time.perf_counter()
    log.info("stage %s: start", name)
    try:
        lock = stage_lock(name) if owns_stage_lock(name) else contextlib.nullcontext()
        with lock:  # one writer at a time, even beside an orphan of a killed `dvc repro`
            body()
    except SparseCbmError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"{name}: interrupted after {time.perf_counter() - started:.1f} s; "
              f"nothing half-written was published, and a rerun resumes.", file=sys.stderr)
        sys.exit(130)
    log.info("stage %s: done in %.1f s, peak RSS %d MiB", name, time.perf_counter() - started, peak_rss_mib())


def peak_rss_mib() -> int:
    """This process's peak resident memory (Linux reports ``ru_maxrss`` in KiB, macOS in bytes)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak / 2**20 if sys.platform == "darwin" else peak / 1024)
