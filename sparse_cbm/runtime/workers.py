"""Embedding stages as N worker processes, each a share of the rows: launched by PyTorch's own launcher.

A stage that embeds (``embed_images``, ``embed_prompted``, ``embed_features``) runs as one process, or as
``processes`` workers that ``torchrun`` (``torch.distributed.elastic``) starts: N processes on one machine,
one per GPU, or across nodes with a rendezvous. Worker ``rank`` of ``world`` embeds the rows of
``shard(...)``, a run of whole batches, and writes them at their final offsets of the scratch array that
every worker shares, so the output is byte-identical whatever N is. The workers meet twice a split through a
gloo process group (``barrier``): after the leader (rank 0) has prepared the scratch folder, and after every
shard is done, before the leader publishes the cache.

Two ways in:

* the param ``processes: N`` (N > 1): the stage process launches N workers of itself with
  ``elastic_launch`` (what ``torchrun --standalone --nproc-per-node N`` does) and waits; a worker that dies
  fails the stage with a ``WorkerFailedError`` that names its rank and how it ended;
* a user's own ``torchrun ... -m stages.<stage> ...`` (several GPUs, several nodes, SLURM): every worker finds
  its rank in torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), whatever the param says.
"""

from __future__ import annotations

import datetime
import logging
import os
import signal
import sys
import uuid
from dataclasses import dataclass
from typing import List, Sequence, Tuple

from sparse_cbm.errors import SparseCbmError

log = logging.getLogger(__name__)

# Set by a stage that launched its own workers: they run under its stage lock and do not take it again.
LAUNCHED_BY = "SPARSE_CBM_LAUNCHED_BY"
# How long a worker waits at a meeting for the slowest shard (a shard of ImageNet on a slow node takes hours).
MEETING_TIMEOUT = datetime.timedelta(days=2)


class WorkerFailedError(SparseCbmError):
    """A worker process of a sharded stage died or failed."""


@dataclass
class Workers:
    """This process's place among the workers of a stage: rank ``rank`` of ``world`` (``local_rank`` of
    ``local_world`` on this node). One process alone is rank 0 of 1 and its meetings return at once."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        """Wait until every worker gets here (one process alone: return)."""

    def meet(self, value: object) -> list:
        """Wait until every worker gets here; every worker's ``value``, in rank order."""
        return [value]

    def run_record(self, device: str) -> dict:
        """What the manifest of a cache records of the run that made it: how many workers, on which devices."""
        devices = self.meet(str(device))
        return {"processes": self.world, "devices": devices}

    def describe(self) -> str:
        return "1 process" if self.world == 1 else f"worker {self.rank} of {self.world}"


class TorchWorkers(Workers):
    """The workers of a torchrun launch, meeting through a gloo process group (CPU or GPU workers alike:
    the meetings carry no tensors worth a GPU collective)."""

    def _group(self):
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo", rank=self.rank, world_size=self.world, timeout=MEETING_TIMEOUT)
        return dist

    def barrier(self) -> None:
        self._group().barrier()

    def meet(self, value: object) -> list:
        out: list = [None] * self.world
        self._group().all_gather_object(out, value)
        return out


def under_torchrun() -> bool:
    """Whether torchrun (or another launcher that sets its environment) started this process."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ


def current_workers() -> Workers:
    """This process's place: from torchrun's environment, or rank 0 of 1."""
    if not under_torchrun():
        return Workers()
    env = os.environ
    world = int(env["WORLD_SIZE"])
    local_world = int(env.get("LOCAL_WORLD_SIZE", world))
    kind = TorchWorkers if world > 1 else Workers
    return kind(int(env["RANK"]), world, int(env.get("LOCAL_RANK", 0)), local_world)


def shard(count: int, batch_size: int, rank: int, world: int) -> Tuple[int, int]:
    """Rows ``[lo, hi)`` of ``count`` that worker ``rank`` of ``world`` computes: a run of whole batches, so
    that every batch holds the rows it holds in a one-process run (and so gives the same bytes)."""
    if batch_size < 1 or world < 1 or not 0 <= rank < world:
        raise ValueError(f"shard: batch_size {batch_size}, rank {rank}, world {world}")
    batches = -(-count // batch_size)
    lo, hi = batches * rank // world, batches * (rank + 1) // world
    return min(lo * batch_size, count), min(hi * batch_size, count)


def shards(count: int, batch_size: int, world: int) -> List[Tuple[int, int]]:
    return [shard(count, batch_size, r, world) for r in range(world)]


def worker_device(spec: str, workers: Workers) -> str:
    """The device a worker runs on: ``cuda``/``auto`` become ``cuda:<local rank>`` when several workers
    share a node's GPUs; anything else is as asked."""
    if workers.world > 1 and spec in ("cuda", "auto"):
        import torch

        if torch.cuda.is_available():
            return f"cuda:{workers.local_rank % torch.cuda.device_count()}"
    return spec


def _how_it_ended(failure) -> str:
    """A worker's end, from torch elastic's ``ProcessFailure``: the signal that killed it, or its exit code."""
    return f"killed by {failure.signal_name()}" if failure.exitcode < 0 else f"exit code {failure.exitcode}"


def launch(stage: str, argv: Sequence[str], processes: int) -> None:
    """Run ``python -m stages.<stage> <argv>`` as ``processes`` workers on this machine (torchrun's
    ``--standalone`` rendezvous) and wait for them; raise ``WorkerFailedError`` naming the first worker
    that failed. The caller holds the stage lock; the workers know it (``LAUNCHED_BY``)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=processes, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.5)
    os.environ[LAUNCHED_BY] = f"{stage}:{os.getpid()}"
    log.info("%s: launching %d worker processes (torchrun --standalone --nproc-per-node %d)", stage, processes,
             processes)
    try:
        elastic_launch(config, entrypoint=sys.executable)("-m", f"stages.{stage}", *argv)
    except ChildFailedError as exc:
        # the agent stops the other workers with SIGTERM once one fails: name the one that failed first
        rank, failure = min(exc.failures.items(),
                            key=lambda kv: (kv[1].exitcode == -signal.SIGTERM, kv[1].timestamp, kv[0]))
        others = sorted(set(exc.failures) - {rank})
        raise WorkerFailedError(
            f"worker {rank} of {processes} (pid {failure.pid}) failed: {_how_it_ended(failure)}"
            + (f"; workers {others} were stopped with it" if others else "")
            + ". Every finished batch is kept in the scratch folder: rerun the stage and it resumes the "
              "unfinished shards only.") from None
    finally:
        os.environ.pop(LAUNCHED_BY, None)


def owns_stage_lock(stage: str) -> bool:
    """Whether this process should take the stage's lock: not when the stage process that launched it
    holds it, and under a user's torchrun only the first worker (rank 0): the lock file may sit on a
    filesystem that every node shares."""
    if os.environ.get(LAUNCHED_BY, "").startswith(f"{stage}:"):
        return False
    return current_workers().rank == 0
