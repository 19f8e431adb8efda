"""A region index on disk, built in-process or on Ray Data.

Directory format (version 1)::

    DIR/manifest.json          what the rows were made from (below)
    DIR/source.parquet         the files indexed, in order
    DIR/bank.pt                the candidate boundaries (torch.save, weights_only)
    DIR/shards/part-00000.parquet ...

``manifest.json``: ``version``, ``model`` (how to load it: the command line's model
options, or ``"python object"``; it never grants trust: unpickling a model needs the
caller's own ``trust_pickle``), ``model_digest`` (SHA-256 of every parameter and
buffer), ``layer``, ``data`` (path and loading options), ``items`` (images in the
source), ``shard_size``, ``bank`` (boundaries asked for), ``bank_size`` (sampled),
``pilot``, ``per_origin``, ``seed``, ``feature_shape``, ``classes``, ``bank_sha256``,
``source_sha256`` (of ``source.parquet``: name, size and modification time of every
file read, in order, checked before images are read again), ``shards`` (SHA-256 of
every shard, once the build is complete: each shard is checked when read) and
``checksum`` (of the rest of the manifest: a hand-edited manifest is refused).
Shard ``k`` holds the readable items ``k * shard_size .. (k + 1) * shard_size - 1``,
one row each: ``item`` (int64), ``name`` (string), ``prediction`` (int32), ``margin``
(float32), ``signs`` (bit-packed side signs, ``ceil(bank / 8)`` bytes) and ``values``
(float16 side values, ``2 * bank`` bytes). Every file is written to a temporary name and
renamed, so a file that exists is complete; an interrupted build resumes from the shards
that exist, and a shard written twice (a retried task) is the same file. The manifest is
written when the bank exists and again, with the shards' checksums, when all are done.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..core.errors import UserError, first_line
from ..core.index import Bank, IndexRows, IndexWorker, RegionIndex, sample_bank
from ..core.interpreter import RepresentativeInterpreter
from ..core.split import resolve_layer
from .io import model_digest
from .loading import ImageSource
from .outputs import atomic_path, claim_folder, remove_temporaries, write_json

__all__ = ["INDEX_VERSION", "IndexedImages", "LoadedIndex", "build_index", "load_index",
           "manifest_model", "model_digest", "read_manifest"]

INDEX_VERSION = 1
ENGINES = ("local", "ray")


def _shard_path(out: Path, k: int) -> Path:
    return out / "shards" / f"part-{k:05d}.parquet"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_shard(path: Path, items: list[int], names: list[str], rows: IndexRows) -> str:
    """Write a shard atomically; returns the SHA-256 of what was written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({
        "item": pa.array(items, pa.int64()),
        "name": pa.array(names, pa.string()),
        "prediction": pa.array(rows.predictions.numpy().astype(np.int32)),
        "margin": pa.array(rows.margins.numpy().astype(np.float32)),
        "signs": pa.array([r.tobytes() for r in rows.signs.numpy()], pa.binary()),
        "values": pa.array([r.tobytes() for r in rows.values.view(torch.int16).numpy()],
                           pa.binary()),
    })
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
        digest = _sha256(tmp)
    return digest


def _read_shard(path: Path, bank: int, sha256: str) -> tuple[list[int], IndexRows]:
    """A shard's items and rows, after checking its bytes against ``sha256`` (its names
    are read when asked for: :class:`ShardColumn`)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"the index shard {path} cannot be read ({exc.strerror})") from exc
    if hashlib.sha256(data).hexdigest() != sha256:
        raise UserError(f"the index shard {path} is corrupt (its checksum does not match "
                        "the manifest); delete it and run `repinterp index` again to "
                        "rebuild it")
    try:
        t = pq.read_table(pa.BufferReader(data))
        n = t.num_rows
        signs = _fixed_rows(t.column("signs"), n, math.ceil(bank / 8), np.uint8)
        values = _fixed_rows(t.column("values"), n, bank, np.float16)
        rows = IndexRows(torch.from_numpy(t.column("prediction").to_numpy().astype(np.int64)),
                         torch.from_numpy(t.column("margin").to_numpy().astype(np.float32)),
                         torch.from_numpy(signs), torch.from_numpy(values))
        items = t.column("item").to_pylist()
    except Exception as exc:  # noqa: BLE001 - pyarrow and numpy raise many types
        raise _corrupt(path, exc) from exc
    return items, rows


def _fixed_rows(column, n: int, width: int, dtype) -> np.ndarray:
    """A binary column whose every value is ``width`` items of ``dtype``, as one
    ``[n, width]`` array read from the column's data buffer (no Python objects)."""
    arr = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    offsets = np.frombuffer(arr.buffers()[1], np.int32)[arr.offset:arr.offset + n + 1]
    size = width * np.dtype(dtype).itemsize
    if n and not np.array_equal(np.diff(offsets), np.full(n, size)):
        raise ValueError(f"values of {np.diff(offsets).min()}..{np.diff(offsets).max()} "
                         f"bytes, expected {size}")
    data = np.frombuffer(arr.buffers()[2], np.uint8)[offsets[0]:offsets[0] + n * size]
    return data.view(dtype).reshape(n, width).copy()


@dataclass
class _Job:
    """Everything a worker needs to index shards: picklable, sent once per worker."""

    out: str
    source: ImageSource
    load_model: Callable[[], nn.Module]
    layer: str
    bank: dict
    shard_size: int
    batch_size: int | None
    device: str | None

    def worker(self) -> IndexWorker:
        return IndexWorker(self.load_model(), self.layer, Bank.from_dict(self.bank),
                           batch_size=self.batch_size, device=self.device)

    def run(self, worker: IndexWorker, k: int) -> str:
        """Index shard ``k`` and write it; returns its SHA-256."""
        start = k * self.shard_size
        images, items, names = self.source.read(start, start + self.shard_size)
        if items:
            rows = worker.rows(images)
        else:
            empty = len(self.bank["working_biases"])
            rows = IndexRows(torch.empty(0, dtype=torch.long), torch.empty(0),
                             torch.empty(0, math.ceil(empty / 8), dtype=torch.uint8),
                             torch.empty(0, empty, dtype=torch.float16))
        return _write_shard(_shard_path(Path(self.out), k), items, names, rows)


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
        raise UserError("engine='ray' needs Ray: pip install 'repinterp[ray]'") from None
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


def build_index(model: nn.Module, layer: str | nn.Module, source: ImageSource,
                out: str | os.PathLike, *, bank: int = 1024, pilot: int = 2000,
                per_origin: int = 50, seed: int = 0, shard_size: int = 4096,
                engine: str = "local",
                workers: int | None = None, ray_address: str | None = None,
                load_model: Callable[[], nn.Module] | None = None,
                model_description: Any = "python object", batch_size: int | None = None,
                device: str | None = None, progress: bool = True) -> Path:
    """Build (or resume) the region index of every image of ``source`` in ``out``.

    A pilot sample of ``pilot`` images (drawn with ``seed``) is fitted and ``bank``
    boundaries are sampled from it (:func:`repinterp.core.index.sample_bank`); then every
    shard of ``shard_size`` images is indexed by ``engine``: ``"local"`` in this process,
    ``"ray"`` on Ray Data (an actor per worker, each building the model once with
    ``load_model``; ``ray_address`` joins a running cluster, else a local Ray starts with
    ``workers`` CPUs). Shards already in ``out`` are kept (resume); the manifest must
    then match. Returns ``out``.
    """
    if engine not in ENGINES:
        raise UserError(f"engine must be one of {ENGINES}, got {engine!r}")
    if bank < 1 or pilot < 2 or shard_size < 1:
        raise UserError("bank and shard_size must be >= 1 and pilot >= 2")
    layer = resolve_layer(model, layer)                  # a name, also for a module
    inputs = [getattr(source, "path", None)]
    with claim_folder(out, "index", inputs) as claimed:
        _build(model, layer, source, claimed, bank=bank, pilot=pilot,
               per_origin=per_origin, seed=seed, shard_size=shard_size, engine=engine,
               workers=workers, ray_address=ray_address, load_model=load_model,
               model_description=model_description, batch_size=batch_size,
               device=device, progress=progress)
    return Path(out)


def _build(model: nn.Module, layer: str, source: ImageSource, out: Path, *, bank: int,
           pilot: int, per_origin: int, seed: int, shard_size: int, engine: str,
           workers: int | None, ray_address: str | None,
           load_model: Callable[[], nn.Module] | None, model_description: Any,
           batch_size: int | None, device: str | None, progress: bool) -> None:
    """:func:`build_index` in the claimed (locked, repinterp's) folder ``out``."""
    digest = model_digest(model)
    listing = source.listing() if hasattr(source, "listing") else None
    manifest = {"version": INDEX_VERSION, "model": model_description,
                "model_digest": digest, "layer": layer,
                "data": asdict(source) if is_dataclass(source) else {
                    "source": type(source).__name__},
                "items": len(source), "shard_size": shard_size, "bank": bank,
                "pilot": pilot, "per_origin": per_origin, "seed": seed}
    old = read_manifest(out) if (out / "manifest.json").exists() else None
    if old is not None:
        for key in ("version", "model_digest", "layer", "data", "items", "shard_size",
                    "bank", "pilot", "per_origin", "seed"):
            if old.get(key) != manifest[key]:
                raise UserError(f"{out} holds an index with another {key} "
                                f"({old.get(key)!r}); choose another folder or delete it")
        _check_source(out, old, source)
        boundaries = _read_bank(out, old)
        manifest = old
    else:
        if listing is not None:
            manifest["source_sha256"] = _write_listing(out / "source.parquet", listing)
        gen = torch.Generator().manual_seed(int(seed))
        picks = sorted(torch.randperm(len(source), generator=gen)[:pilot].tolist())
        reads = [source.read(i, i + 1) for i in picks]
        images = torch.cat([r[0] for r in reads if r[1]])
        interp = RepresentativeInterpreter(model, layer, seed=seed, progress=False,
                                           batch_size=batch_size, device=device).fit(images)
        boundaries = sample_bank(interp, bank, per_origin, seed)
        manifest.update(layer=interp.layer_, bank_size=len(boundaries),
                        feature_shape=list(interp.feature_shape_),
                        classes=int(interp.logits_.shape[1]))
        with atomic_path(out / "bank.pt") as tmp:
            torch.save(boundaries.to_dict(), tmp)
            manifest["bank_sha256"] = _sha256(tmp)
        _write_manifest(out, manifest)
    _remove_leftovers(out)                               # a killed writer's, earlier
    shards = math.ceil(len(source) / shard_size)
    recorded = manifest.get("shards") or [None] * shards
    todo = [k for k in range(shards) if not _shard_path(out, k).exists()]
    job = _Job(str(out), source, load_model or (lambda: model), manifest["layer"],
               boundaries.to_dict(), shard_size, batch_size, device)
    if engine == "ray":
        sums = _run_ray(job, todo, workers or os.cpu_count() or 1, ray_address, progress)
    else:
        sums = {}
        if todo:
            worker = job.worker()
            for k in tqdm(todo, desc="index", unit="shard", disable=not progress,
                          leave=False):
                sums[k] = job.run(worker, k)
    _remove_leftovers(out)                               # a worker killed mid-write
    # shards kept from an interrupted build are hashed here (they were renamed into
    # place whole); a completed build's recorded sums are kept as they are
    final = [sums.get(k) or recorded[k] or _sha256(_shard_path(out, k))
             for k in range(shards)]
    if final != manifest.get("shards"):
        manifest["shards"] = final
        _write_manifest(out, manifest)


def _remove_leftovers(out: Path) -> None:
    """Delete the temporary files of shard writers that were killed mid-write (a
    restarted worker writes the shard again, under a new temporary name)."""
    remove_temporaries(out / "shards", "*.tmp*")


def _write_listing(path: Path, listing: list[tuple[str, int, int]]) -> str:
    """Write the source listing as Parquet; returns its SHA-256."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    names, sizes, times = zip(*listing, strict=True) if listing else ((), (), ())
    table = pa.table({"name": pa.array(names, pa.string()),
                      "size": pa.array(sizes, pa.int64()),
                      "mtime_ns": pa.array(times, pa.int64())})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
        return _sha256(tmp)


def _check_source(out: Path, manifest: dict, source: Any) -> None:
    """Refuse a source that is not what was indexed: the first file added, removed or
    changed (size or modification time) since, by name."""
    import pyarrow.parquet as pq
    if "source_sha256" not in manifest or not hasattr(source, "listing"):
        return
    path = out / "source.parquet"
    if not path.is_file() or _sha256(path) != manifest["source_sha256"]:
        raise UserError(f"{path} is missing or corrupt; rebuild the index")
    t = pq.read_table(path)
    then = list(zip(t.column("name").to_pylist(), t.column("size").to_pylist(),
                    t.column("mtime_ns").to_pylist(), strict=True))
    now = source.listing()
    if now == then:
        return
    where = f"the images indexed in {out} changed since `repinterp index`"
    old_names = {n for n, _, _ in then}
    new_names = {n for n, _, _ in now}
    for k, (a, b) in enumerate(zip(then, now, strict=False)):
        if a == b:
            continue
        if b[0] not in old_names:
            raise UserError(f"{where}: {b[0]} was added; rebuild the index")
        if a[0] not in new_names:
            raise UserError(f"{where}: {a[0]} was removed; rebuild the index")
        if a[0] == b[0]:
            raise UserError(f"{where}: {a[0]} was modified; rebuild the index")
        raise UserError(f"{where}: item {k} was {a[0]}, now {b[0]}; rebuild the index")
    extra = now[len(then):] or then[len(now):]
    verb = "added" if len(now) > len(then) else "removed"
    raise UserError(f"{where}: {extra[0][0]} was {verb}; rebuild the index")


_MANIFEST_FIELDS = {"version": int, "model": (dict, str), "model_digest": str,
                    "layer": str, "data": dict, "items": int, "shard_size": int,
                    "bank": int, "bank_size": int, "pilot": int, "per_origin": int,
                    "seed": int, "feature_shape": list, "classes": int,
                    "bank_sha256": str, "checksum": str}


def _manifest_checksum(m: dict) -> str:
    body = {k: v for k, v in m.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _write_manifest(out: Path, manifest: dict) -> None:
    manifest["checksum"] = _manifest_checksum(manifest)
    write_json(out / "manifest.json", manifest)


def read_manifest(out: str | os.PathLike) -> dict:
    """The manifest of the index in ``out``, checked (no shard is read)."""
    out = Path(out)
    path = out / "manifest.json"
    if not path.is_file():
        raise UserError(f"{out} is not a region index (no manifest.json); build one with "
                        "`repinterp index`")
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} is corrupt ({first_line(exc)})") from exc
    if not isinstance(m, dict) or m.get("version") != INDEX_VERSION:
        raise UserError(f"{path} is not a version {INDEX_VERSION} index manifest")
    for key, kind in _MANIFEST_FIELDS.items():
        if key not in m:
            raise UserError(f"{path} has no {key!r}: it was edited, or written by an older "
                            "repinterp; rebuild the index")
        if not isinstance(m[key], kind) or isinstance(m[key], bool):
            raise UserError(f"{path}: {key!r} has the wrong type "
                            f"({type(m[key]).__name__}); rebuild the index")
    if m["checksum"] != _manifest_checksum(m):
        raise UserError(f"{path} was edited after the index was built (its checksum does "
                        "not match); rebuild the index")
    return m


def _read_bank(out: Path, manifest: dict) -> Bank:
    path = out / "bank.pt"
    if not path.is_file() or _sha256(path) != manifest["bank_sha256"]:
        raise UserError(f"{path} is missing or corrupt (its checksum does not match the "
                        "manifest); rebuild the index")
    try:
        return Bank.from_dict(torch.load(path, weights_only=True))
    except Exception as exc:  # noqa: BLE001 - truncated, not a bank
        raise UserError(f"{path} is corrupt ({first_line(exc)})") from exc


class IndexedImages:
    """The indexed images in row order, read from their source when asked for (a
    report reads only the members it shows)."""

    def __init__(self, source: ImageSource, items: list[int]):
        self.source, self.items = source, items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, idx):
        if isinstance(idx, int) or (isinstance(idx, torch.Tensor) and idx.ndim == 0):
            i = self.items[int(idx)]
            return self.source.read(i, i + 1)[0][0]
        return torch.stack([self[int(i)] for i in idx])


def manifest_model(manifest: dict, *, trust_pickle: bool = False,
                   archs: dict | None = None) -> nn.Module:
    """The model an index manifest names. The manifest says which model, never whether
    to trust it: unpickling needs the caller's own ``trust_pickle``."""
    from .loading import load_model
    if not isinstance(manifest["model"], dict):
        raise UserError("the index was built from a Python model: give the model "
                        "(arch=NAME with weights=FILE, or model_file=FILE)")
    spec = {k: manifest["model"].get(k) for k in ("arch", "weights", "num_classes",
                                                 "model_file")}
    return load_model(archs=archs, trust_pickle=trust_pickle, **spec)


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
            raise UserError("engine='ray' needs Ray: pip install 'repinterp[ray]'") from None
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


@dataclass
class LoadedIndex:
    """An index read from disk: the index, per row the source item and name, and the
    manifest."""

    index: RegionIndex | Any
    items: Sequence[int]
    names: Sequence[str]
    manifest: dict
    checked: ImageSource | None = field(default=None, repr=False)
    groups: RayGroups | None = field(default=None, repr=False)

    def close(self) -> None:
        """Stop the Ray actors holding the rows (``engine="ray"``); nothing otherwise."""
        if self.groups is not None:
            self.groups.close()
            self.groups = None

    def source(self) -> ImageSource:
        """The images the index was built from (the source that was checked against the
        index's listing, when one was: the folder is not listed twice)."""
        return self.checked or ImageSource(**self.manifest["data"])

    def images(self) -> IndexedImages:
        """The indexed images, in row order, read when asked for."""
        return IndexedImages(self.source(), self.items)


def load_index(path: str | os.PathLike, model: nn.Module | None = None, *,
               check_source: bool = False, engine: str = "local", workers: int = 2,
               ray_address: str | None = None) -> LoadedIndex:
    """The index in ``path``, every file checked against the manifest's checksums.
    With ``model``, checks that it is the model the index was built from; with
    ``check_source``, that the indexed images are still the files that were indexed
    (before they are read again, e.g. for a report).

    ``engine="local"`` reads every row into this process (a
    :class:`~repinterp.core.index.RegionIndex`); ``engine="ray"`` leaves them on
    ``workers`` Ray actors (a :class:`~repinterp.core.sharded.ShardedIndex` over
    :class:`RayGroups`; a local Ray, or the cluster at ``ray_address``): this process
    then holds the bank, the images' names and the regions, not the rows. Close it with
    :meth:`LoadedIndex.close`."""
    if engine not in ("local", "ray"):
        raise UserError(f"engine must be local or ray, got {engine!r}")
    out = Path(path)
    manifest = read_manifest(out)
    if model is not None and model_digest(model) != manifest["model_digest"]:
        raise UserError(f"the model does not match the index in {out} (built from "
                        f"{manifest['model']!r}, another set of weights)")
    bank = _read_bank(out, manifest)
    shards = math.ceil(manifest["items"] / manifest["shard_size"])
    missing = [k for k in range(shards) if not _shard_path(out, k).exists()]
    sums = manifest.get("shards")
    if missing or not isinstance(sums, list) or len(sums) != shards:
        raise UserError(f"the index in {out} is incomplete: {len(missing)} of {shards} "
                        "shards missing; run `repinterp index` again to resume")
    checked = None
    if check_source and "path" in manifest["data"]:
        checked = ImageSource(**manifest["data"])
        _check_source(out, manifest, checked)
    meta = {"seed": manifest["seed"], "index": str(out)}
    paths = [_shard_path(out, k) for k in range(shards)]
    counts = [_rows_in(p) for p in paths]
    if engine == "ray":
        for k, path in enumerate(paths):       # one shard's items at a time: checked, dropped
            _check_items(out, k, _read_column(path, "item"), manifest["shard_size"])
        groups = RayGroups(out, manifest, len(bank), workers, ray_address, counts)
        from ..core.sharded import ShardedIndex
        index: RegionIndex | Any = ShardedIndex(
            bank, tuple(manifest["feature_shape"]), groups, layer=manifest["layer"],
            meta=meta, classes=manifest["classes"])
    else:
        groups = None

        def parts():
            for k, path in enumerate(paths):
                items, rows = _read_shard(path, len(bank), str(sums[k]))
                _check_items(out, k, items, manifest["shard_size"])
                yield rows

        index = RegionIndex(bank, IndexRows.cat(parts(), sum(counts)),
                            tuple(manifest["feature_shape"]), layer=manifest["layer"],
                            meta=meta)
    return LoadedIndex(index, ShardColumn(paths, counts, "item"),
                       ShardColumn(paths, counts, "name"), manifest, checked, groups)


class ShardColumn(Sequence):
    """One column of an index's shards (``"name"`` or ``"item"``) in row order, read from
    the shards when asked for: a summary's driver does not hold the names of millions of
    images. :meth:`take` reads each shard it needs once; single lookups keep the last
    few shards read."""

    def __init__(self, paths: list[Path], counts: list[int], column: str, keep: int = 4):
        self.paths, self.column, self.keep = list(paths), column, keep
        self.starts = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
        self._read: dict[int, list] = {}

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __eq__(self, other: object) -> bool:
        """Equal to a sequence of the same values (like the list it stands for)."""
        if not isinstance(other, Sequence) or len(other) != len(self):
            return False
        return self.take(range(len(self))) == list(other)

    __hash__ = None  # type: ignore[assignment]

    def _shard(self, k: int) -> list:
        if k not in self._read:
            if len(self._read) >= self.keep:
                self._read.pop(next(iter(self._read)))
            self._read[k] = _read_column(self.paths[k], self.column)
        return self._read[k]

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self.take(range(*i.indices(len(self))))
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"row {i} out of range for {len(self)} indexed images")
        k = int(np.searchsorted(self.starts, i, side="right")) - 1
        return self._shard(k)[i - int(self.starts[k])]

    def take(self, indices) -> list:
        """The values at ``indices`` (any order), each shard read once."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(idx) and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"rows out of range for {len(self)} indexed images")
        shard = np.searchsorted(self.starts, idx, side="right") - 1
        out: list = [None] * len(idx)
        order = np.argsort(shard, kind="stable")
        bounds = np.searchsorted(shard[order], np.arange(len(self.paths) + 1))
        for k in range(len(self.paths)):
            sel = order[bounds[k]:bounds[k + 1]]
            if len(sel):
                values = self._shard(k)
                for j, r in zip(sel.tolist(), (idx[sel] - self.starts[k]).tolist(),
                                strict=True):
                    out[j] = values[r]
        return out


def _check_items(out: Path, k: int, items: list[int], shard_size: int) -> None:
    lo, hi = k * shard_size, (k + 1) * shard_size
    if any(not lo <= i < hi for i in items) or items != sorted(set(items)):
        raise UserError(f"the index shard {_shard_path(out, k)} holds rows of another "
                        "shard or twice the same row; delete it and resume")


def _corrupt(path: Path, exc: Exception) -> UserError:
    return UserError(f"the index shard {path} is corrupt ({first_line(exc)}); delete it "
                     "and run `repinterp index` again to rebuild it")


def _rows_in(path: Path) -> int:
    """How many rows a shard holds (its footer only)."""
    import pyarrow.parquet as pq
    try:
        return pq.read_metadata(path).num_rows
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many types
        raise _corrupt(path, exc) from exc


def _read_column(path: Path, column: str) -> list:
    """One column of a shard (its rows are read where they are used; their bytes are
    checked there)."""
    import pyarrow.parquet as pq
    try:
        t = pq.read_table(path, columns=[column])
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many types
        raise _corrupt(path, exc) from exc
    return t.column(column).to_pylist()
