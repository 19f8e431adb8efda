"""A region index on Ray: building its shards on Ray Data actors, and holding its rows
on Ray actors for the summary's greedy (:class:`RayGroups`)."""
from __future__ import annotations

import contextlib
import os
import socket
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..core import defaults
from ..core.errors import UserError
from ..core.index import IndexRows
from .shards import read_shard, shard_path

if TYPE_CHECKING:
    from .index import ShardJob
    from .schema import IndexManifest

__all__ = ["RayGroups", "ray_session", "wait_for_cluster"]

#: restarts a Ray worker may have before the run stops (each one reads its shards again)
MAX_RESTARTS = 3


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UserError("{param} needs Ray: pip install 'repinterp[ray]'", param="engine",
                        api="engine='ray'") from None
    return ray


def wait_for_cluster(address: str, wait_s: float) -> None:
    """Return once something accepts TCP connections at ``address`` (HOST:PORT or
    ray://HOST:PORT; ``auto`` is Ray's own lookup), or raise a :class:`UserError`
    after ``wait_s`` seconds."""
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    host = host.strip("[]")
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with socket.create_connection((host, int(port)),
                                          timeout=max(0.1, min(2.0, wait_s))):
                return
        except OSError:
            if time.monotonic() >= deadline:
                raise UserError(f"no Ray cluster answers at {address} after {wait_s:g} s "
                                "(start one with `ray start --head`, or wait longer with "
                                "{param})", param="ray_wait") from None
            time.sleep(0.25)


def _local_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:                      # not on Linux
        return os.cpu_count() or 1


def capped_workers(workers: int, cpus: int, where: str) -> int:
    if workers > cpus:
        warnings.warn(f"{workers} Ray workers asked for, {cpus} CPUs {where}: using {cpus}",
                      stacklevel=3)
        return max(1, cpus)
    return workers


@contextlib.contextmanager
def ray_session(address: str | None, workers: int, wait_s: float = defaults.RAY_WAIT_S
                ) -> Iterator[tuple[Any, int]]:
    """Ray for a run: the one already initialised in this process, the cluster at
    ``address`` (reached within ``wait_s`` seconds, else a :class:`UserError`), or a
    local Ray started here with ``workers`` CPUs that listens on the loopback interface
    only (Ray's own single-machine mode, as on macOS; no dashboard) and is shut down on
    leaving. Yields the ``ray`` module and the number of workers to use: ``workers``
    capped at the CPUs Ray reports (with a warning), so that workers are not started
    that the machine cannot hold."""
    ray = _import_ray()
    started = not ray.is_initialized()
    if started:
        if address:
            wait_for_cluster(address, wait_s)
            try:
                ray.init(address=address, log_to_driver=False)
            except ConnectionError as exc:
                raise UserError(f"cannot join the Ray cluster at {address}: "
                                f"{exc}") from None
        else:
            workers = capped_workers(workers, _local_cpus(), "on this machine")
            _init_on_loopback(ray, workers)
    try:
        cpus = int(ray.cluster_resources().get("CPU", 0))
        yield ray, capped_workers(workers, cpus, "in the Ray cluster")
    finally:
        if started:
            ray.shutdown()


def _init_on_loopback(ray: Any, cpus: int) -> None:
    """``ray.init`` of a one-machine Ray whose every process binds 127.0.0.1: Ray's
    setting for this (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, read when Ray is
    imported) in the environment its processes inherit and in its loaded constant,
    both restored afterwards."""
    from ray._private import ray_constants
    key = ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR
    before_env, before = os.environ.get(key), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[key], ray_constants.ENABLE_RAY_CLUSTER = "0", False
    try:
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before
        if before_env is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before_env


class _RayIndexer:
    """A Ray Data actor: holds the model (built once) and indexes whole shards."""

    def __init__(self, job: ShardJob):
        torch.set_num_threads(max(1, int(os.environ.get("REPINTERP_ACTOR_THREADS", "1"))))
        self.job = job
        self.worker = job.worker()

    def __call__(self, batch: dict) -> dict:
        shards = [int(k) for k in batch["shard"]]
        return {"shard": np.array(shards), "sha256": np.array(
            [self.job.run(self.worker, k) for k in shards])}


def run_ray(job: ShardJob, todo: list[int], workers: int, address: str | None,
             progress: bool, wait_s: float = defaults.RAY_WAIT_S) -> dict[int, str]:
    """Index the shards ``todo`` on Ray Data; returns each one's SHA-256. A worker
    that dies is restarted at most :data:`MAX_RESTARTS` times; then the run stops."""
    with ray_session(address, workers, wait_s) as (ray, workers):
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = progress
        ds = ray.data.from_items([{"shard": k} for k in todo])
        gpus = 1 if job.device and str(job.device).startswith("cuda") else 0
        try:
            done = ds.map_batches(_RayIndexer, fn_constructor_kwargs={"job": job},
                                  batch_size=1,
                                  compute=ray.data.ActorPoolStrategy(size=workers),
                                  num_cpus=1, num_gpus=gpus, max_restarts=MAX_RESTARTS,
                                  max_task_retries=MAX_RESTARTS).take_all()
        except ray.exceptions.RayError as exc:
            if isinstance(exc.__cause__, UserError):          # a worker's own refusal
                raise exc.__cause__ from None
            raise _workers_died(exc, workers) from None
        return {int(r["shard"]): str(r["sha256"]) for r in done}


def _workers_died(exc: BaseException | None, workers: int) -> UserError:
    first = (str(exc).strip().splitlines() or [""])[0]
    return UserError(f"Ray workers kept dying ({type(exc).__name__}: {first}); each holds "
                     f"the model and a shard: use fewer than {workers} {{param}}, or a "
                     "smaller --shard-size", param="workers")


class _RowGroupActor:
    """A Ray actor holding a contiguous run of an index's shards as one
    :class:`~repinterp.core.sharded.RowGroup` (read and checked where it runs)."""

    def __init__(self, out: str, shards: list[int], sums: list[str], bank: int,
                 offset: int, rows: int):
        from ..core.sharded import RowGroup
        parts = (read_shard(shard_path(Path(out), k), bank, s)[1]
                 for k, s in zip(shards, sums, strict=True))
        self.group = RowGroup(offset, IndexRows.cat(parts, rows), bank)
        self.seconds: dict[str, float] = {}

    def run(self, name: str, *args):
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

    def __init__(self, out: Path, manifest: IndexManifest, bank_size: int, workers: int,
                 address: str | None, counts: list[int], wait_s: float = defaults.RAY_WAIT_S):
        self.session = contextlib.ExitStack()
        ray, workers = self.session.enter_context(ray_session(address, workers, wait_s))
        self.ray = ray
        try:
            self._start(out, manifest, bank_size, workers, counts)
        except BaseException:
            self.session.close()
            raise
        self.log: list[tuple[str, tuple]] = []
        self.restarts = 0
        self.lost = [0] * len(self.actors)      # each worker's restarts

    def _start(self, out: Path, manifest: IndexManifest, bank_size: int, workers: int,
               counts: list[int]) -> None:
        ray = self.ray
        shards = len(counts)
        cuts = np.linspace(0, shards, min(workers, shards) + 1).round().astype(int)
        actor = ray.remote(max_restarts=MAX_RESTARTS, max_task_retries=0,
                           num_cpus=1)(_RowGroupActor)
        self.actors = []
        for a, b in zip(cuts[:-1], cuts[1:], strict=True):
            self.actors.append(actor.remote(
                str(out), list(range(int(a), int(b))),
                [str(x) for x in manifest["shards"][a:b]], bank_size, int(sum(counts[:a])),
                int(sum(counts[a:b]))))

    def __call__(self, name: str, *args):
        if name == "start_class":
            self.log = []
        if name in _MUTATING:
            self.log.append((name, args))
        refs = [a.run.remote(name, *args) for a in self.actors]
        out = []
        for i, ref in enumerate(refs):
            out.append(self._get(i, ref, name, args))
        return out

    def _get(self, i: int, ref, name: str, args: tuple):
        from ray.exceptions import ActorUnavailableError, RayActorError
        actor = self.actors[i]
        lost = (RayActorError, ActorUnavailableError)
        counted, error = False, None
        for _ in range(360):
            if ref is not None:
                try:
                    return self.ray.get(ref)
                except lost as exc:
                    error = exc
            if not counted:
                self.restarts, counted = self.restarts + 1, True
                self.lost[i] += 1
                if self.lost[i] > MAX_RESTARTS:
                    raise _workers_died(error, len(self.actors))
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
        self.session.close()
