"""A region index on Ray: building its shards on Ray Data actors, and holding its rows
on Ray actors for the summary's greedy (:class:`RayGroups`)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..core.errors import UserError
from ..core.index import IndexRows
from .shards import _read_shard, _shard_path

if TYPE_CHECKING:
    from .index import _Job

__all__ = ["RayGroups"]


class _RayIndexer:
    """A Ray Data actor: holds the model (built once) and indexes whole shards."""

    def __init__(self, job: _Job):
        torch.set_num_threads(max(1, int(os.environ.get("REPINTERP_ACTOR_THREADS", "1"))))
        self.job = job
        self.worker = job.worker()

    def __call__(self, batch: dict) -> dict:
        shards = [int(k) for k in batch["shard"]]
        return {"shard": np.array(shards), "sha256": np.array(
            [self.job.run(self.worker, k) for k in shards])}


def _run_ray(job: _Job, todo: list[int], workers: int, address: str | None,
             progress: bool) -> dict[int, str]:
    """Index the shards ``todo`` on Ray Data; returns each one's SHA-256."""
    try:
        import ray
    except ImportError:
        raise UserError("{param} needs Ray: pip install 'repinterp[ray]'", param="engine",
                        api="engine='ray'") from None
    started = not ray.is_initialized()
    if started:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = progress
        ds = ray.data.from_items([{"shard": k} for k in todo])
        gpus = 1 if job.device and str(job.device).startswith("cuda") else 0
        # Ray Data restarts dead actors and retries their tasks by default
        # (max_restarts=-1, max_task_retries=-1)
        done = ds.map_batches(_RayIndexer, fn_constructor_kwargs={"job": job},
                              batch_size=1,
                              compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=1,
                              num_gpus=gpus).take_all()
        return {int(r["shard"]): str(r["sha256"]) for r in done}
    finally:
        if started:
            ray.shutdown()


class _RowGroupActor:
    """A Ray actor holding a contiguous run of an index's shards as one
    :class:`~repinterp.core.sharded.RowGroup` (read and checked where it runs)."""

    def __init__(self, out: str, shards: list[int], sums: list[str], bank: int,
                 offset: int, rows: int):
        from ..core.sharded import RowGroup
        parts = (_read_shard(_shard_path(Path(out), k), bank, s)[1]
                 for k, s in zip(shards, sums, strict=True))
        self.group = RowGroup(offset, IndexRows.cat(parts, rows), bank)
        self.seconds: dict[str, float] = {}

    def run(self, name: str, *args):
        import time
        start = time.perf_counter()
        try:
            return getattr(self.group, name)(*args)
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def usage(self) -> dict:
        """For the record: this worker's rows, peak resident memory (bytes) and the
        seconds spent per method."""
        import resource
        return {"rows": self.group.n, "seconds": dict(self.seconds),
                "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}

    def where(self) -> tuple[str, int]:
        """The node and process this actor runs in."""
        import ray
        return ray.get_runtime_context().get_node_id(), os.getpid()


#: RowGroup methods that change its state: replayed on a restarted actor
_MUTATING = {"start_class", "begin", "apply", "step", "prune_start", "prune_drop", "finish",
             "mark"}


class RayGroups:
    """:class:`~repinterp.core.sharded.ShardedIndex`'s ``call`` on Ray: one actor per
    worker, each holding a contiguous run of the index's shards. A worker that dies is
    restarted by Ray (it reads its shards again) and the driver replays the calls that
    built its state since the current class began, then asks again: the summary goes on
    with the same regions."""

    def __init__(self, out: Path, manifest: dict, bank_size: int, workers: int,
                 address: str | None, counts: list[int]):
        try:
            import ray
        except ImportError:
            raise UserError("{param} needs Ray: pip install 'repinterp[ray]'", param="engine",
                            api="engine='ray'") from None
        self.ray = ray
        self.started = not ray.is_initialized()
        if self.started:
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        shards = len(counts)
        cuts = np.linspace(0, shards, min(workers, shards) + 1).round().astype(int)
        actor = ray.remote(max_restarts=-1, max_task_retries=0, num_cpus=1)(_RowGroupActor)
        self.actors = []
        for a, b in zip(cuts[:-1], cuts[1:], strict=True):
            self.actors.append(actor.remote(
                str(out), list(range(int(a), int(b))),
                [str(x) for x in manifest["shards"][a:b]], bank_size, int(sum(counts[:a])),
                int(sum(counts[a:b]))))
        self.log: list[tuple[str, tuple]] = []
        self.restarts = 0

    def __call__(self, name: str, *args):
        if name == "start_class":
            self.log = []
        if name in _MUTATING:
            self.log.append((name, args))
        refs = [a.run.remote(name, *args) for a in self.actors]
        out = []
        for actor, ref in zip(self.actors, refs, strict=True):
            out.append(self._get(actor, ref, name, args))
        return out

    def _get(self, actor, ref, name: str, args: tuple):
        import time

        from ray.exceptions import ActorUnavailableError, RayActorError
        lost = (RayActorError, ActorUnavailableError)
        counted = False
        for _ in range(360):
            if ref is not None:
                try:
                    return self.ray.get(ref)
                except lost:
                    pass
            if not counted:
                self.restarts, counted = self.restarts + 1, True
            time.sleep(0.5)
            # the actor restarts (its shards read again): rebuild its state, ask again
            try:
                replay = self.log[:-1] if name in _MUTATING else self.log
                for n, a in replay:
                    self.ray.get(actor.run.remote(n, *a))
                ref = actor.run.remote(name, *args)
            except lost:
                ref = None
        raise UserError("a Ray worker holding index rows did not come back in 3 minutes")

    def usage(self) -> list[dict]:
        """Each worker's :meth:`_RowGroupActor.usage` (benchmarks)."""
        return self.ray.get([a.usage.remote() for a in self.actors])

    def close(self) -> None:
        for a in self.actors:
            self.ray.kill(a)
        self.actors = []
        if self.started:
            self.ray.shutdown()
