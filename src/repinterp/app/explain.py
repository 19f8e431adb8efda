"""``explain`` as one call: the region of one image, by a fit on the references, in a
saved summary, or in a region index, written as a report.

:func:`explain_job` picks the path from the job: ``index`` set, the image's region in
the index (the greedy over the indexed rows); ``summary`` set, the region of the saved
summary the image falls in (or the nearest of its class), without refitting; else a fit
on ``data`` and the region of ``image`` (or of the reference ``seed_index``).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..core import defaults
from ..core.errors import UserError
from ..core.index import IndexWorker
from ..core.network import SplitNetwork
from ..core.region import Region
from ..core.summary import Summary
from ..core.words import layer_words, plural
from .formats import checked_path
from .index_jobs import open_index
from .io import images_digest, load_summary, model_digest
from .labels import load_labels
from .loading import load_images
from .outputs import check_output, output_folder
from .pipeline import (
    Family,
    FitJob,
    class_names_for,
    fit_job,
    loading_options,
    open_model,
)
from .report import Query, write_report
from .schema import check_against_model
from .stats import class_name

__all__ = ["ExplainJob", "Explained", "Located", "check_summary_source", "explain_job",
           "locate_image"]


@dataclass
class ExplainJob(FitJob):
    """A whole ``explain``: a :class:`~repinterp.app.pipeline.FitJob` (``query`` is the
    image to explain; without it, the reference ``seed_index``), the output folder, and
    where to look the image up instead of fitting: a saved ``summary`` or an ``index``
    (with its ``engine``, ``workers``, ``ray_address`` and ``ray_wait``)."""

    out: str | os.PathLike = "out/explain"
    seed_index: int = 0
    summary: str | None = None
    index: str | None = None
    engine: str = "local"
    workers: int | None = None
    ray_address: str | None = None
    ray_wait: float = defaults.RAY_WAIT_S
    device: str | None = None
    meta: dict | None = None

    @property
    def inputs(self) -> list[str | None]:
        return [*super().inputs, self.summary, self.index]


@dataclass
class Explained:
    """What an explain wrote: the region (None when the summary has no region of the
    image's class), the report's path, and one line saying what was found."""

    region: Region | None
    report: Path | None
    message: str


def explain_job(job: ExplainJob, families: Mapping[str, Family] | None = None
                ) -> Explained:
    """Run ``job`` (see the module): the output folder and the inputs are checked
    before any work, the report is written into ``job.out`` as one unit."""
    if (job.summary or job.index) and not job.query:
        raise UserError(f"explain with {'an index' if job.index else 'a summary'} needs "
                        "{param}", param="image", api="an image (query=FILE)")
    if job.query:
        checked_path(job.query, kind="file", what="--image")
    check_output(job.out, job.inputs)
    if job.index:
        return _from_index(job, families, Path(job.out))
    if job.summary:
        return _from_summary(job, families, Path(job.out))
    return _from_fit(job, families, Path(job.out))


def _from_fit(job: ExplainJob, families: Mapping[str, Family] | None, out: Path
              ) -> Explained:
    fitted, _ = fit_job(job, families)
    interp, refs, names = fitted.interp, fitted.references, fitted.class_names
    if fitted.query is not None:
        image = fitted.query.images[0]
        region = interp.explain(image)
        what = Path(str(job.query)).name
    else:
        if job.seed_index >= len(refs.names):
            raise UserError(f"--seed-index {job.seed_index} is out of range: there are "
                            f"{len(refs.names)} reference images")
        image = refs.images[job.seed_index]
        region = interp.explain(job.seed_index)
        what = refs.names[job.seed_index]
    summary = Summary.of_region(region, interp.predictions_, layer=interp.layer_)
    labels = load_labels(fitted.data, refs.names, job.labels, names, classes=fitted.classes)
    cname = class_name(names, region.predicted_class)
    with output_folder(out, job.inputs) as tmp:
        write_report(tmp, summary, refs.images, heatmap=interp.heatmap,
                     stats=fitted.heldout_stats([region]),
                     reference_heatmap=interp.reference_heatmap, names=refs.names,
                     across=interp.across,
                     query=Query(image, what, region.predicted_class,
                                 edit=interp.counterfactual(image, region)
                                 if region.num_boundaries else None), class_names=names,
                     labels=labels, predictions=interp.predictions_,
                     title=f"repinterp: why {what} is {cname}",
                     meta={"model": job.model.name, **fitted.meta(), **(job.meta or {})})
    return Explained(region, out / "report.html",
                     f"region of {what} ({cname}) at {layer_words(interp.layer_)}: "
                     f"{plural(region.size, 'member')}, "
                     f"{plural(region.num_boundaries, 'boundary')}, delta {region.delta}; "
                     f"report: {out / 'report.html'}")


def _from_summary(job: ExplainJob, families: Mapping[str, Family] | None, out: Path
                  ) -> Explained:
    assert job.summary is not None and job.query is not None
    summary = load_summary(job.summary)
    model, family = open_model(job.model, families)
    opts = loading_options(model, family, size=job.size, normalize=job.normalize,
                           strict=job.strict, pixel_range=job.pixel_range, array=job.array)
    image = load_images(job.query, **opts).images[0]
    if not job.data:
        raise UserError("{param} is required", param="data")
    refs = load_images(job.data, limit=job.references,
                       seed=int(job.interpreter.get("seed", 0)), **opts)
    check_summary_source(summary, model, refs.images, job.summary)
    located = locate_image(summary, model, image, device=job.device, where=job.summary)
    where, pred, net = located.position, located.predicted, located.network
    names = class_names_for(job.class_names, job.model.weights, family, data=job.data,
                            classes=located.classes, saved=summary.record.class_names)
    cname, name = class_name(names, pred), Path(job.query).name
    if where < 0:
        return Explained(None, None, f"{job.query} (predicted {cname}): the summary has "
                         f"no region of {cname}")
    region = summary.regions[where]
    method, grid = summary.record.heatmap_method, summary.record.heatmap_grid
    verdict = (f"falls in region {where + 1} of the summary" if located.inside else
               f"falls in no region of {cname}; the nearest is region {where + 1} "
               f"(wrong side of {located.violated} of its "
               f"{plural(region.num_boundaries, 'boundary')})")
    with output_folder(out, job.inputs) as tmp:
        write_report(tmp, summary.one_region(where), refs.images,
                     heatmap=lambda r, imgs: net.heatmap(r, imgs, method, grid),
                     names=refs.names, numbers=[where + 1], class_names=names,
                     query=Query(image, name, pred, 0, located.inside, located.violated),
                     title=f"repinterp: where {name} falls",
                     meta={"model": job.model.name or summary.record.model,
                           "image": job.query, "summary": str(job.summary),
                           "layer": summary.layer})
    return Explained(region, out / "report.html",
                     f"{job.query} (predicted {cname}) {verdict}: "
                     f"{plural(region.size, 'member')}; report: {out / 'report.html'}")


def _from_index(job: ExplainJob, families: Mapping[str, Family] | None, out: Path
                ) -> Explained:
    assert job.index is not None and job.query is not None
    loaded, model, family = open_index(job.index, job.model, families, engine=job.engine,
                                       workers=job.workers or os.cpu_count() or 1,
                                       ray_address=job.ray_address, ray_wait=job.ray_wait)
    try:
        index, names, manifest = loaded.index, loaded.names, loaded.manifest
        check_output(out, [manifest["data"].get("path")])        # the indexed images
        opts = {k: manifest["data"][k] for k in ("channels", "size", "normalize")}
        image = load_images(job.query, **opts).images[0]
        worker = IndexWorker(model, index.layer, index.bank, device=job.device)
        worker.network.check_split(image[None])
        region = index.explain(worker.rows(image[None]))
        cls = region.predicted_class
        labels = class_names_for(job.class_names, job.model.weights, family,
                                 data=manifest["data"].get("path"),
                                 classes=manifest["classes"])
        summary = Summary.single(region, int(index.class_counts()[cls]), layer=index.layer)
        cname, name = class_name(labels, cls), Path(job.query).name
        with output_folder(out, job.inputs) as tmp:
            write_report(tmp, summary, loaded.images(), heatmap=worker.network.heatmap,
                         names=names, query=Query(image, name, cls), class_names=labels,
                         title=f"repinterp: why {name} is {cname} (index)",
                         meta={"model": job.model.name or manifest["model"],
                               "image": job.query, "index": str(job.index),
                               "layer": index.layer})
        closest = ", ".join(names[int(i)] for i in region.members[:5])
    finally:
        loaded.close()
    return Explained(region, out / "report.html",
                     f"{job.query} ({cname}): region of "
                     f"{plural(region.size, 'indexed image')}, "
                     f"{plural(region.num_boundaries, 'boundary')}; closest: {closest}; "
                     f"report: {out / 'report.html'}")


def check_summary_source(summary: Summary, model: nn.Module, references: torch.Tensor,
                         where: str | os.PathLike = "the summary") -> None:
    """Refuse to use ``summary`` with another model or other references than it was made
    from (its ``model_digest`` and ``references_sha256``); a summary that did not record
    them is refused too."""
    record = summary.record
    if record.index is not None:
        raise UserError(f"the summary in {where} was made from the region index "
                        f"{record.index}: locate images with the index itself "
                        "(`repinterp explain --index`)")
    if record.model_digest != model_digest(model):
        raise UserError(f"the summary in {where} was made with another model (or by a "
                        "repinterp that did not record it); give the model it was made "
                        "with, or summarize again")
    expected = record.references
    if expected is not None and expected != len(references):
        raise UserError(f"the summary in {where} was made from {expected} references, "
                        f"not {len(references)}; give the same images")
    if record.references_sha256 != images_digest(references):
        raise UserError(f"the summary in {where} was made from other reference images; "
                        "give the same images with the same loading options")


@dataclass
class Located:
    """Where an image falls in a summary: ``position`` of its region in
    ``summary.regions`` (``inside``), or of the nearest region of its predicted class
    when it falls in none (the fewest boundaries on the wrong side, ``violated``; the
    larger region on a tie; -1 when the summary has no region of that class), its
    predicted class, the model's number of classes, and the split network that computed
    them (to draw heat maps with)."""

    position: int
    predicted: int
    network: SplitNetwork
    inside: bool = True
    violated: int = 0
    classes: int = 0


def locate_image(summary: Summary, model: nn.Module, image: torch.Tensor, *,
                 device: str | None = None, progress: bool = False,
                 where: str | os.PathLike = "the summary") -> Located:
    """The region of a saved ``summary`` that ``image`` ``[C, H, W]`` falls in (or the
    nearest one of its class), without refitting: one pass of the image through
    ``model`` split at the summary's layer (checked against ``model(x)`` first)."""
    net = SplitNetwork(model, summary.layer, device=device, progress=progress)
    net.check_split(image[None])
    z = net.features(image[None], progress=False)
    logits = net.logits(z)
    assert net.feature_shape is not None                 # set by the pass above
    check_against_model(summary, int(logits.shape[1]), tuple(net.feature_shape), str(where))
    pred = logits.argmax(1).cpu()
    position = int(summary.locate_features(z, pred)[0])
    located = Located(position, int(pred), net, classes=int(logits.shape[1]))
    if position >= 0:
        return located
    flat = z.flatten(1)
    candidates = [(int((r.side_values(flat) < 0).sum()), -r.size, k)
                  for k, r in enumerate(summary.regions) if r.predicted_class == int(pred)]
    if candidates:
        violated, _, k = min(candidates)
        located.position, located.violated = k, violated
    located.inside = False
    return located
