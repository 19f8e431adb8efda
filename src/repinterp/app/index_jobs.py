"""The region index's whole tasks, for the command line to call: ``index`` (build or
resume), ``summarize --index`` and the index that ``explain --index`` looks an image up
in; nothing here parses arguments or prints."""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ..core import defaults
from ..core.errors import UserError
from ..core.network import SplitNetwork
from ..core.summary import Summary
from .index import LoadedIndex, load_index, manifest_model, read_manifest
from .models import check_feature_map, load_model
from .outputs import check_output
from .pipeline import (
    Family,
    ModelSource,
    class_names_for,
    layer_for,
    loading_options,
    open_model,
    resolve_source,
    write_summary,
)
from .stats import contract_stats

__all__ = ["IndexJob", "index_job", "open_index", "summarize_index"]


def open_index(path: str | os.PathLike, source: ModelSource,
               families: Mapping[str, Family] | None = None, *, engine: str = "local",
               workers: int = 2, ray_address: str | None = None,
               ray_wait: float = defaults.RAY_WAIT_S
               ) -> tuple[LoadedIndex, nn.Module, Family | None]:
    """The region index in ``path`` (every file checked, and its images against their
    folder) and its model: ``source`` when it names one, else the model the manifest
    names (unpickled only with ``source.trust_pickle``). ``engine="ray"`` leaves the
    rows on ``workers`` Ray actors (:func:`~repinterp.app.index.load_index`); close the
    index when done."""
    families = families or {}
    manifest = read_manifest(path)          # the shards are read once, below
    if source.arch or source.model_file:
        model, family = open_model(source, families)
    else:
        model = manifest_model(manifest, trust_pickle=source.trust_pickle,
                               archs={k: f.build for k, f in families.items()})
        family = next((f for f in families.values() if type(model) is f.build), None)
    return load_index(path, model, check_source=True, engine=engine, workers=workers,
                      ray_address=ray_address, ray_wait=ray_wait), model, family


def summarize_index(path: str | os.PathLike, out: str | os.PathLike, *,
                    source: ModelSource, families: Mapping[str, Family] | None = None,
                    coverage: float = defaults.COVERAGE,
                    max_regions: int = defaults.MAX_REGIONS,
                    target_purity: float | None = defaults.TARGET_PURITY, seed: int = 0,
                    class_names: str | None = None, device: str | None = None,
                    progress: bool = True, engine: str = "local", workers: int = 2,
                    ray_address: str | None = None, ray_wait: float = defaults.RAY_WAIT_S
                    ) -> tuple[Summary, Path, int]:
    """``summarize --index``: the index's summary written into ``out`` as one unit (its
    report reads the members' images from their checked source). Returns the summary,
    the report's path and the number of indexed images. ``engine="ray"``: the greedy
    runs where the rows are (``workers`` Ray actors; :mod:`repinterp.core.sharded`),
    with the same regions. ``target_purity``, ``seed``: the purity contract and the seed
    of its held-out rows (:mod:`repinterp.core.contract`)."""
    check_output(out, [path, class_names, source.model_file, source.weights])
    loaded, model, family = open_index(path, source, families, engine=engine,
                                       workers=workers, ray_address=ray_address,
                                       ray_wait=ray_wait)
    check_output(out, [loaded.manifest["data"].get("path")])   # the indexed images
    try:
        return _summarize_loaded(loaded, model, family, path, out, source, coverage,
                                 max_regions, class_names, device, progress,
                                 target_purity, seed)
    finally:
        loaded.close()


def _summarize_loaded(loaded: LoadedIndex, model: nn.Module, family: Family | None,
                      path: str | os.PathLike, out: str | os.PathLike, source: ModelSource,
                      coverage: float, max_regions: int, class_names: str | None,
                      device: str | None, progress: bool, target_purity: float | None,
                      seed: int) -> tuple[Summary, Path, int]:
    index, manifest = loaded.index, loaded.manifest
    names = class_names_for(class_names, source.weights, family,
                            data=manifest["data"].get("path"), classes=manifest["classes"])
    summary = index.summarize(coverage=coverage, max_regions=max_regions, progress=progress,
                              target_purity=target_purity, seed=seed)
    summary.meta.update(model=manifest["model"], data=manifest["data"].get("path"),
                        model_digest=manifest["model_digest"], class_names=names)
    net = SplitNetwork(model, index.layer, device=device, progress=False)
    report = write_summary(
        out, summary, loaded.images(), heatmap=net.heatmap, names=loaded.names,
        class_names=names, stats=contract_stats(summary.regions),
        title="repinterp summary (index)",
        meta={"index": str(path), "layer": index.layer, "references": len(index),
              "bank": len(index.bank), "target_purity": target_purity})
    return summary, report, len(index)


@dataclass
class IndexJob:
    """A whole ``index``: the model, the images (``data`` and its loading options), the
    bank's and the shards' settings, the engine, and the output folder (built or
    resumed in place)."""

    model: ModelSource
    data: str | None
    out: str | os.PathLike = "out/index"
    layer: str | None = None
    size: tuple[int, int] | None = None
    normalize: str | None = None
    strict: bool = False
    pixel_range: tuple[float, float] | str | None = None
    array: str | None = None
    bank: int = 1024
    pilot: int = 2000
    shard_size: int = 4096
    seed: int = 0
    engine: str = "local"
    workers: int | None = None
    ray_address: str | None = None
    ray_wait: float = defaults.RAY_WAIT_S
    device: str | None = None
    progress: bool = True


def index_job(job: IndexJob, families: Mapping[str, Family] | None = None
              ) -> LoadedIndex:
    """Run ``job``: open the model, check its layer on the first images, and build (or
    resume) the index (:func:`~repinterp.app.index.build_index`; Ray workers rebuild the
    model from the manifest's description). Returns the index as loaded back (close it
    when done)."""
    import functools

    from ..core.split import resolve_layer
    from .index import build_index
    from .loading import ImageSource

    families = families or {}
    model, family = open_model(job.model, families)
    given = resolve_source(job.model, families)         # --arch vgg: the demo's weights
    layer = layer_for(job.layer, family, model)
    if not job.data:
        raise UserError("{param} is required", param="data")
    source = ImageSource(str(Path(job.data).resolve()),
                         **loading_options(model, family, size=job.size,
                                           normalize=job.normalize, strict=job.strict,
                                           pixel_range=job.pixel_range, array=job.array))
    first = source.read(0, min(len(source), 64))[0]
    if len(first):
        check_feature_map(model, resolve_layer(model, layer), first[0])

    def absolute(p: str | None) -> str | None:
        return str(Path(p).resolve()) if p and Path(p).exists() else p

    spec: dict[str, Any] = {"arch": given.arch, "weights": absolute(given.weights),
            "num_classes": given.num_classes, "model_file": absolute(given.model_file)}
    out = build_index(model, layer, source, job.out, bank=job.bank, pilot=job.pilot,
                      seed=job.seed, shard_size=job.shard_size, engine=job.engine,
                      workers=job.workers, ray_address=job.ray_address,
                      ray_wait=job.ray_wait, load_model=functools.partial(
                          load_model, archs={k: f.build for k, f in families.items()},
                          trust_pickle=job.model.trust_pickle, **spec),
                      model_description=spec, device=job.device, progress=job.progress)
    return load_index(out)
