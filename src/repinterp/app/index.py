"""A region index on disk, built in-process or on Ray Data.

Directory format (version 2, :data:`repinterp.app.schema.MANIFEST_VERSION`)::

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
``source_sha256`` (of ``source.parquet``: name, size, modification time of every file
read, in order, and the SHA-256 of a file read whole, an array file; checked before
images are read again), ``shards`` (SHA-256 of every shard, once the build is complete:
each is checked when read), ``checksum`` (of the rest: a hand-edited manifest is
refused); typed :class:`repinterp.app.schema.IndexManifest`, checked when read.
Shard ``k`` holds the readable items ``k * shard_size .. (k + 1) * shard_size - 1``,
one row each: ``item`` (int64), ``name`` (string), ``prediction`` (int32), ``margin``
(float32), ``signs`` (bit-packed side signs, ``ceil(bank / 8)`` bytes) and ``values``
(float16 side values, ``2 * bank`` bytes). Every file is written to a temporary name and
renamed, so a file that exists is complete; an interrupted build resumes from the shards
that exist, and a shard written twice (a retried task) is the same file. The manifest is
written when the bank exists and again, with the shards' checksums, when all are done.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core import defaults
from ..core.errors import UserError, first_line
from ..core.index import Bank, IndexRows, IndexWorker, RegionIndex
from ..core.interpreter import RepresentativeInterpreter
from ..core.progress import progress_bar
from ..core.split import resolve_layer
from .index_ray import RayGroups, run_ray, wait_for_cluster
from .io import model_digest
from .listing import check_listing, with_digests, write_listing
from .loading import ImageSource
from .outputs import atomic_path, claim_folder, remove_temporaries, write_json
from .schema import MANIFEST_VERSION, IndexManifest, check_manifest, manifest_checksum
from .shards import (
    ShardColumn,
    check_items,
    file_sha256,
    read_column,
    read_shard,
    rows_in,
    shard_path,
    write_shard,
)

__all__ = ["INDEX_VERSION", "IndexedImages", "LoadedIndex", "RayGroups", "ShardColumn",
           "build_index", "load_index", "manifest_model", "model_digest", "read_manifest"]

INDEX_VERSION = MANIFEST_VERSION
ENGINES = ("local", "ray")


@dataclass
class ShardJob:
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
        return write_shard(shard_path(Path(self.out), k), items, names, rows)


def build_index(model: nn.Module, layer: str | nn.Module, source: ImageSource,
                out: str | os.PathLike, *, bank: int = 1024, pilot: int = 2000,
                per_origin: int = 50, seed: int = 0, shard_size: int = 4096,
                engine: str = "local",
                workers: int | None = None, ray_address: str | None = None,
                ray_wait: float = defaults.RAY_WAIT_S,
                load_model: Callable[[], nn.Module] | None = None,
                model_description: Any = "python object", batch_size: int | None = None,
                device: str | None = None, progress: bool = True) -> Path:
    """Build (or resume) the region index of every image of ``source`` in ``out``.

    A pilot sample of ``pilot`` images (drawn with ``seed``) is fitted and ``bank``
    boundaries are sampled from it (:meth:`RepresentativeInterpreter.sample_bank`); then every
    shard of ``shard_size`` images is indexed by ``engine``: ``"local"`` in this process,
    ``"ray"`` on Ray Data (an actor per worker, each building the model once with
    ``load_model``; ``ray_address`` joins a running cluster, else a local Ray starts with
    ``workers`` CPUs; a cluster that does not answer within ``ray_wait`` seconds is an
    error). Shards already in ``out`` are kept (resume); the manifest must
    then match. Returns ``out``.
    """
    if engine not in ENGINES:
        raise UserError(f"engine must be one of {ENGINES}, got {engine!r}")
    if bank < 1 or pilot < 2 or shard_size < 1:
        raise UserError("bank and shard_size must be >= 1 and pilot >= 2")
    layer = resolve_layer(model, layer)                  # a name, also for a module
    if engine == "ray" and ray_address:
        wait_for_cluster(ray_address, ray_wait)          # before anything is written
    with claim_folder(out, "index", [getattr(source, "path", None)]) as claimed:
        _build(model, layer, source, claimed, bank=bank, pilot=pilot,
               per_origin=per_origin, seed=seed, shard_size=shard_size, engine=engine,
               workers=workers, ray_address=ray_address, ray_wait=ray_wait,
               load_model=load_model,
               model_description=model_description, batch_size=batch_size,
               device=device, progress=progress)
    return Path(out)


def _build(model: nn.Module, layer: str, source: ImageSource, out: Path, *, bank: int,
           pilot: int, per_origin: int, seed: int, shard_size: int, engine: str,
           workers: int | None, ray_address: str | None, ray_wait: float,
           load_model: Callable[[], nn.Module] | None, model_description: Any,
           batch_size: int | None, device: str | None, progress: bool) -> None:
    """:func:`build_index` in the claimed (locked, repinterp's) folder ``out``."""
    digest = model_digest(model)
    listing = source.listing() if hasattr(source, "listing") else None
    manifest: IndexManifest = {"version": INDEX_VERSION, "model": model_description,
                "model_digest": digest, "layer": layer,
                "data": asdict(source) if isinstance(source, ImageSource) else {
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
        check_listing(out, old, source)
        boundaries = _read_bank(out, old)
        manifest = old
    else:
        if listing is not None:
            manifest["source_sha256"] = write_listing(out / "source.parquet",
                                                       with_digests(source, listing))
        gen = torch.Generator().manual_seed(int(seed))
        picks = sorted(torch.randperm(len(source), generator=gen)[:pilot].tolist())
        reads = [source.read(i, i + 1) for i in picks]
        images = torch.cat([r[0] for r in reads if r[1]])
        interp = RepresentativeInterpreter(model, layer, seed=seed, progress=False,
                                           batch_size=batch_size, device=device).fit(images)
        boundaries = interp.sample_bank(bank, per_origin, seed)
        manifest["layer"] = interp.layer_
        manifest["bank_size"] = len(boundaries)
        manifest["feature_shape"] = list(interp.feature_shape_)
        manifest["classes"] = int(interp.logits_.shape[1])
        with atomic_path(out / "bank.pt") as tmp:
            torch.save(boundaries.to_dict(), tmp)
            manifest["bank_sha256"] = file_sha256(tmp)
        _write_manifest(out, manifest)
    _remove_leftovers(out)                               # a killed writer's, earlier
    shards = math.ceil(len(source) / shard_size)
    recorded: list[str | None] = [*manifest.get("shards", [])] or [None] * shards
    todo = [k for k in range(shards) if not shard_path(out, k).exists()]
    job = ShardJob(str(out), source, load_model or (lambda: model), manifest["layer"],
                   boundaries.to_dict(), shard_size, batch_size, device)
    if engine == "ray":
        sums = run_ray(job, todo, workers or os.cpu_count() or 1, ray_address, progress,
                       ray_wait)
    else:
        sums = {}
        if todo:
            worker = job.worker()
            for k in progress_bar(todo, desc="index", unit="shard", enabled=progress):
                sums[k] = job.run(worker, k)
    _remove_leftovers(out)                               # a worker killed mid-write
    # shards kept from an interrupted build are hashed here (they were renamed into
    # place whole); a completed build's recorded sums are kept as they are
    final = [sums.get(k) or recorded[k] or file_sha256(shard_path(out, k))
             for k in range(shards)]
    if final != manifest.get("shards"):
        manifest["shards"] = final
        _write_manifest(out, manifest)


def _remove_leftovers(out: Path) -> None:
    """Delete the temporary files of shard writers killed mid-write (a restarted
    worker writes its shard again, under a new temporary name)."""
    remove_temporaries(out / "shards", "*.tmp*")


def _write_manifest(out: Path, manifest: IndexManifest) -> None:
    manifest["checksum"] = manifest_checksum(manifest)
    write_json(out / "manifest.json", manifest)


def read_manifest(out: str | os.PathLike) -> IndexManifest:
    """The manifest of the index in ``out``, every field checked
    (:func:`repinterp.app.schema.check_manifest`; no shard is read)."""
    out = Path(out)
    path = out / "manifest.json"
    if not path.is_file():
        raise UserError(f"{out} is not a region index (no manifest.json); build one with "
                        "`repinterp index`")
    try:
        m = check_manifest(json.loads(path.read_text(encoding="utf-8")), path)
    except (OSError, ValueError) as exc:
        if isinstance(exc, UserError):
            raise
        raise UserError(f"{path} is corrupt ({first_line(exc)})") from exc
    data = m["data"]
    allowed = {f.name for f in fields(ImageSource)} if "path" in data else {"source"}
    odd = [k for k in data if k not in allowed]
    if odd or ("path" in data and not isinstance(data["path"], str)):
        raise UserError(f"{path}: 'data' has an unknown or mistyped field "
                        f"{(odd or ['path'])[0]!r}; rebuild the index")
    return m


def _read_bank(out: Path, manifest: IndexManifest) -> Bank:
    path = out / "bank.pt"
    if not path.is_file() or file_sha256(path) != manifest["bank_sha256"]:
        raise UserError(f"{path} is missing or corrupt (its checksum does not match the "
                        "manifest); rebuild the index")
    try:
        return Bank.from_dict(torch.load(path, weights_only=True))
    except Exception as exc:  # noqa: BLE001 - truncated, not a bank
        raise UserError(f"{path} is corrupt ({first_line(exc)})") from exc


class IndexedImages:
    """The indexed images in row order, read from their source when asked for (a
    report reads only the members it shows)."""

    def __init__(self, source: ImageSource, items: Sequence[int]):
        self.source, self.items = source, items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, idx: Any) -> torch.Tensor:
        if isinstance(idx, int) or (isinstance(idx, torch.Tensor) and idx.ndim == 0):
            i = self.items[int(idx)]
            return self.source.read(i, i + 1)[0][0]
        return torch.stack([self[int(i)] for i in idx])


def manifest_model(manifest: IndexManifest, *, trust_pickle: bool = False,
                   archs: dict | None = None) -> nn.Module:
    """The model an index manifest names. The manifest says which model, never whether
    to trust it: unpickling needs the caller's own ``trust_pickle``."""
    from .models import load_model
    if not isinstance(manifest["model"], dict):
        raise UserError("the index was built from a Python model: give the model "
                        "({weights}, or {model_file})",
                        params={"weights": "arch=NAME with weights=FILE",
                                "model_file": "model_file=FILE"})
    spec = {k: manifest["model"].get(k) for k in ("arch", "weights", "num_classes",
                                                 "model_file")}
    return load_model(archs=archs, trust_pickle=trust_pickle, **spec)


@dataclass
class LoadedIndex:
    """An index read from disk: the index, per row the source item and name, and the
    manifest."""

    index: RegionIndex | Any
    items: Sequence[int]
    names: Sequence[str]
    manifest: IndexManifest
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
               ray_address: str | None = None, ray_wait: float = defaults.RAY_WAIT_S
               ) -> LoadedIndex:
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
    if engine not in ENGINES:
        raise UserError(f"engine must be local or ray, got {engine!r}")
    out = Path(path)
    manifest = read_manifest(out)
    if model is not None and model_digest(model) != manifest["model_digest"]:
        raise UserError(f"the model does not match the index in {out} (built from "
                        f"{manifest['model']!r}, another set of weights)")
    bank = _read_bank(out, manifest)
    shards = math.ceil(manifest["items"] / manifest["shard_size"])
    missing = [k for k in range(shards) if not shard_path(out, k).exists()]
    sums = manifest.get("shards")
    if missing or not isinstance(sums, list) or len(sums) != shards:
        raise UserError(f"the index in {out} is incomplete: {len(missing)} of {shards} "
                        "shards missing; run `repinterp index` again to resume")
    checked = None
    if check_source and "path" in manifest["data"]:
        checked = ImageSource(**manifest["data"])
        check_listing(out, manifest, checked)
    meta = _summary_meta(out, manifest, bank)
    paths = [shard_path(out, k) for k in range(shards)]
    counts = [rows_in(p) for p in paths]
    if engine == "ray":
        for k, path in enumerate(paths):       # one shard's items at a time: checked, dropped
            check_items(out, k, read_column(path, "item"), manifest["shard_size"])
        groups = RayGroups(out, manifest, len(bank), workers, ray_address, counts, ray_wait)
        from ..core.sharded import ShardedIndex
        index: RegionIndex | Any = ShardedIndex(
            bank, tuple(manifest["feature_shape"]), groups, layer=manifest["layer"],
            meta=meta, classes=manifest["classes"])
    else:
        groups = None

        def parts():
            for k, path in enumerate(paths):
                items, rows = read_shard(path, len(bank), str(sums[k]))
                check_items(out, k, items, manifest["shard_size"])
                yield rows

        index = RegionIndex(bank, IndexRows.cat(parts(), sum(counts)),
                            tuple(manifest["feature_shape"]), layer=manifest["layer"],
                            meta=meta)
    return LoadedIndex(index, ShardColumn(paths, counts, "item"),
                       ShardColumn(paths, counts, "name"), manifest, checked, groups)


def _summary_meta(out: Path, manifest: IndexManifest, bank: Bank) -> dict:
    """A summary's record (:class:`~repinterp.core.summary.SummaryMeta`) as the index
    knows it: :meth:`RegionIndex.summarize`'s defaults, the pipeline's heat maps."""
    return {"seed": manifest["seed"], "index": str(out), "classes": manifest["classes"],
            "feature_shape": list(manifest["feature_shape"]), "sampling": "index bank",
            "num_boundaries": None, "min_purity": "auto", "delta": None,
            "separate_logics": False, "max_logics": 1, "heatmap_method": "margin",
            "heatmap_grid": "features", "model_digest": manifest["model_digest"],
            "approximate": bool(getattr(bank, "approximate", False))}
