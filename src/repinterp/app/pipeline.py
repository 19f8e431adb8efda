"""Whole tasks on the user's files, for the command line and the demo to call: each
loads or checks what it needs and returns a result; nothing here parses arguments or
prints."""
from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..core import defaults
from ..core.errors import UserError
from ..core.interpreter import RepresentativeInterpreter
from ..core.region import Region
from ..core.summary import Summary
from .fit_cache import CachedReferences, FitCache
from .formats import checked_path
from .io import images_digest, model_digest, save_summary
from .labels import (
    check_class_names,
    check_folder_classes,
    folder_classes,
    load_class_names,
    load_labels,
)
from .loading import ImageSet, load_images
from .models import (
    check_feature_map,
    expected_channels,
    load_model,
    model_classes,
    torchvision_weights,
)
from .outputs import check_output, output_folder
from .report import write_report
from .stats import RegionStats, contract_stats, heldout_stats

__all__ = ["Family", "FitJob", "Fitted", "ModelSource", "SummarizeJob",
           "class_names_for", "fit_job", "fit_references", "layer_for", "layer_lines",
           "loading_options", "open_model", "source_fingerprint", "summarize_job",
           "summarize_references", "write_summary"]


@dataclass
class Family:
    """An architecture repinterp knows beyond torchvision's (the demo's): how to build it
    (taking ``num_classes``), its trained weights, and its defaults: layer, normalisation,
    class names."""

    build: Callable[..., nn.Module]
    layer: str
    normalize: str | None = None
    class_names: list[str] | None = None
    #: the state dict an ``--arch`` of this family stands for without ``--weights``
    #: (the demo's shipped weights), or None: an untrained network, with a warning
    weights: Callable[[], str | os.PathLike | None] | None = None


@dataclass
class ModelSource:
    """Where the model comes from: an architecture (a family's or torchvision's) with
    optional weights, or a model file (unpickled only with ``trust_pickle``)."""

    arch: str | None = None
    weights: str | None = None
    num_classes: int | None = None
    model_file: str | None = None
    trust_pickle: bool = False

    @property
    def name(self) -> str | None:
        return self.arch or self.model_file


def open_model(source: ModelSource, families: Mapping[str, Family] | None = None
               ) -> tuple[nn.Module, Family | None]:
    """The model (eval mode) and its family, if it is one of ``families``; an ``arch``
    without weights as :func:`resolve_source` makes it."""
    families = families or {}
    source = resolve_source(source, families)
    model = load_model(arch=source.arch, weights=source.weights,
                       num_classes=source.num_classes, model_file=source.model_file,
                       trust_pickle=source.trust_pickle,
                       archs={k: f.build for k, f in families.items()})
    return model, next((f for f in families.values() if type(model) is f.build), None)


def resolve_source(source: ModelSource, families: Mapping[str, Family] | None = None
                   ) -> ModelSource:
    """``source`` with an ``arch`` of a family that has trained weights, given without
    weights (and with its family's classes), pointed at those weights: ``--arch vgg``
    is the demo's CNN everywhere the source goes (the fit cache's key, an index's
    manifest, Ray workers). Any other ``arch`` without weights stays untrained
    (:func:`warn_if_untrained` says so once the command's inputs are read)."""
    family = (families or {}).get(source.arch or "")
    if family is None or family.weights is None or source.weights is not None \
            or source.num_classes not in (None, len(family.class_names or [])):
        return source
    found = family.weights()
    return source if found is None else dataclasses.replace(source, weights=str(found))


def warn_if_untrained(source: ModelSource, family: Family | None) -> None:
    """Warn that an ``arch`` given without weights (and without a trained model of its
    family) has random weights: its results describe an untrained network."""
    if source.arch is not None and source.weights is None and (
            family is None or family.weights is None):
        warnings.warn(f"{source.arch} without weights has random weights (nothing is "
                      "trained or downloaded): its regions describe an untrained "
                      "network; give its trained weights (--weights FILE)",
                      UserWarning, stacklevel=2)


def write_summary(out: str | os.PathLike, summary: Summary, images, **report) -> Path:
    """A summary's whole output into ``out`` as one unit: ``summary.pt`` and the report
    (:func:`~repinterp.app.report.write_report` with ``report``'s arguments: its
    ``summary.json``, region pages and memberships). Returns the report's path."""
    with output_folder(out) as tmp:
        save_summary(tmp / "summary.pt", summary)
        write_report(tmp, summary, images, **report)
    return Path(out) / "report.html"


def class_names_for(spec: str | None, weights: str | None, family: Family | None,
                    *, data: str | os.PathLike | None = None, classes: int = 0,
                    saved: list[str] | None = None) -> list[str] | None:
    """Class names from ``spec`` (a file, or torchvision weights), else from torchvision
    ``weights``, else ``saved`` (a summary's), else the family's, else the class folders
    of an ImageFolder ``data`` in torchvision's sorted order (when there is one per class
    and they are not numbers), else None (class indices).
    With ``classes`` (the model's), names of another length are refused."""
    if spec:
        names = load_class_names(spec)
        check_class_names(names, classes, f"--class-names {spec}")
        return names
    if weights and torchvision_weights(weights) is not None:
        names = load_class_names(weights)
    elif saved:
        names = list(saved)
    elif family is not None and family.class_names:
        names = family.class_names
    else:
        folders = folder_classes(data)
        if not folders or all(f.isdigit() for f in folders):  # digits: the indices
            return None
        return folders if len(folders) == classes else None
    check_class_names(names, classes, "the class names")
    return names


@dataclass
class Fitted:
    """An interpreter fitted on the reference images of a path, with what was loaded:
    the references, the held-out images (or None), the loading options, the class
    names (or None), the query image (``explain --image``, or None), the model's
    number of classes, the path the references came from and the SHA-256 of the decoded
    references when known (a cached fit's; see :meth:`references_digest`)."""

    interp: RepresentativeInterpreter
    references: ImageSet | CachedReferences
    heldout: ImageSet | None
    options: dict
    class_names: list[str] | None = None
    query: ImageSet | None = None
    classes: int = 0
    data: str | os.PathLike = ""
    digest: str | None = None

    def references_digest(self) -> str:
        """:func:`~repinterp.app.io.images_digest` of the decoded references."""
        if self.digest is None:
            assert isinstance(self.references, ImageSet)   # a cached fit has its digest
            self.digest = images_digest(self.references.images)
        return self.digest

    def heldout_stats(self, regions: list[Region]) -> list[RegionStats] | None:
        """The regions' statistics on the held-out images (None without them)."""
        if self.heldout is None:
            return None
        feats = self.interp.features(self.heldout.images)
        return heldout_stats(regions, feats, self.interp.predict_features(feats))

    def meta(self) -> dict:
        """What a report and ``summary.json`` say about the fit."""
        return {"layer": self.interp.layer_, "references": len(self.references.names),
                "skipped_files": len(self.references.skipped),
                "approximate": self.interp.approximate_,
                "heatmap_method": self.interp.heatmap_method,
                "heatmap_grid": self.interp.heatmap_grid}


def fit_references(model: nn.Module, layer: str, data: str | os.PathLike, *,
                   options: dict, limit: int | None = None,
                   heldout: str | os.PathLike | None = None,
                   query: str | os.PathLike | None = None,
                   class_names: Callable[[int], list[str] | None] = lambda n: None,
                   cache: str | os.PathLike | bool | None = None, **interpreter) -> Fitted:
    """Load the query image (``query``: read first, so that a bad one fails before any
    work), the images of ``data`` (the first ``limit``; ``options`` as
    :func:`~repinterp.app.loading.load_images` takes them) and of ``heldout``; refuse a
    layer without a feature map and class names (``class_names(number of classes)``)
    that do not fit the model before any fit, and fit a
    :class:`~repinterp.RepresentativeInterpreter` (``interpreter``: its parameters).
    ``cache``: a folder of saved fits (True: the default one; None: none), where a fit
    found is restored, without decoding the references, and a fit made is saved
    (:mod:`repinterp.app.fit_cache`)."""
    image = load_images(query, **options) if query else None
    fits = FitCache.open(cache, model, layer, data, options, limit, interpreter)
    hit = fits.load() if fits is not None else None
    refs = hit.references if hit is not None else load_images(
        data, limit=limit, seed=int(interpreter.get("seed", 0)), **options)
    held = load_images(heldout, **options) if heldout else None
    if held is not None and held.images.shape[1:] != refs.images.shape[1:]:
        raise UserError(f"the held-out images of {heldout} are "
                        f"{tuple(held.images.shape[1:])}, the references "
                        f"{tuple(refs.images.shape[1:])}: give images of one size, or "
                        "{param} to resize both", param="size", api="size=(H, W)")
    if hit is None:
        check_feature_map(model, layer, refs.images[0])
    # a saved fit passed that check and has the classes: its key is the model's digest
    # and structure, the layer and the images
    classes = model_classes(model, refs.images[0]) if hit is None else hit.classes
    names = class_names(classes)
    check_folder_classes(data, classes, names)
    interp = RepresentativeInterpreter(model, layer, class_names=names, **interpreter)
    if hit is None:
        interp = interp.fit(refs.images)
        digest = None if fits is None else fits.save(interp, refs)
    else:
        assert fits is not None                          # where the hit came from
        interp = interp.fit(refs.images, state=hit.state)
        digest = hit.references.digest
        if not interp.restored_:                # the check found other numbers: saved anew
            fits.save(interp, refs)
    return Fitted(interp, refs, held, options, names, image, classes, data, digest)


def source_fingerprint(model: nn.Module, references: torch.Tensor) -> dict:
    """What a saved summary records to be refused with another model or other data
    (:func:`check_summary_source`)."""
    return {"model_digest": model_digest(model),
            "references_sha256": images_digest(references)}


def layer_for(layer: str | None, family: Family | None, model: nn.Module) -> str:
    """The layer given, else the family's default, else the one
    :func:`~repinterp.core.layers.suggest_layer` proposes (what ``repinterp layers``
    marks); an error when there is none to propose."""
    from ..core.layers import suggest_layer
    layer = layer or (family.layer if family else None) or suggest_layer(model)
    if layer is None:
        raise UserError("no layer to suggest for this model (no block leaves a head with a "
                        "kink or a smooth head): give {param} (see `repinterp layers`)",
                        param="layer", api="a layer")
    return layer


def loading_options(model: nn.Module, family: Family | None = None, *,
                    size: tuple[int, int] | None = None, normalize: str | None = None,
                    strict: bool = False,
                    pixel_range: tuple[float, float] | str | None = None,
                    array: str | None = None) -> dict:
    """How to load images for ``model`` (:func:`~repinterp.app.loading.load_images`'s
    options): its input channels, and the family's normalisation unless one is given;
    ``pixel_range`` and ``array`` as the loader takes them."""
    return dict(channels=expected_channels(model), size=size,
                normalize=normalize or (family.normalize if family else None),
                strict=strict, pixel_range=pixel_range, array=array)


@dataclass
class FitJob:
    """A fit on a path's images: the model, the images and their options, the labels
    file (checked before any work), the class names (a file or torchvision weights), an
    optional query image (read before any work), the interpreter's parameters and the
    folder of saved fits (``cache``: see :func:`fit_references`)."""

    model: ModelSource
    data: str | None
    layer: str | None = None
    references: int | None = None
    size: tuple[int, int] | None = None
    normalize: str | None = None
    strict: bool = False
    heldout: str | None = None
    labels: str | None = None
    class_names: str | None = None
    query: str | None = None
    interpreter: dict = field(default_factory=dict)
    pixel_range: tuple[float, float] | str | None = None
    array: str | None = None
    cache: str | bool | None = None

    @property
    def inputs(self) -> list[str | None]:
        """Every path the job reads (an output may not hold, sit in or be one)."""
        return [self.data, self.heldout, self.labels, self.class_names, self.query,
                self.model.model_file, self.model.weights]


@dataclass
class SummarizeJob(FitJob):
    """A whole ``summarize``: a :class:`FitJob`, the summary's settings and the output
    folder."""

    out: str | os.PathLike = "out/summary"
    coverage: float = defaults.COVERAGE
    max_regions: int = defaults.MAX_REGIONS
    target_purity: float | None = defaults.TARGET_PURITY
    separate_logics: bool = False
    max_logics: int = defaults.MAX_LOGICS
    meta: dict = field(default_factory=dict)


def fit_job(job: FitJob, families: Mapping[str, Family] | None = None
            ) -> tuple[Fitted, Family | None]:
    """Run a :class:`FitJob`: the labels file checked, the model opened, its layer (the
    family's default unless given), the images loaded and fitted. Returns the fit and
    the model's family (or None)."""
    if job.labels not in (None, "none"):
        checked_path(job.labels, kind="file", what="labels file")
    if job.query:
        checked_path(job.query, kind="file", what="--image")
    model, family = open_model(job.model, families)
    layer = layer_for(job.layer, family, model)
    if not job.data:
        raise UserError("{param} is required", param="data")
    options = loading_options(model, family, size=job.size, normalize=job.normalize,
                              strict=job.strict, pixel_range=job.pixel_range,
                              array=job.array)
    fitted = fit_references(
        model, layer, job.data, options=options, limit=job.references, heldout=job.heldout,
        query=job.query, class_names=lambda n: class_names_for(
            job.class_names, job.model.weights, family, data=job.data, classes=n),
        cache=job.cache, **job.interpreter)
    warn_if_untrained(resolve_source(job.model, families), family)
    return fitted, family


def summarize_job(job: SummarizeJob, families: Mapping[str, Family] | None = None
                  ) -> tuple[Summary, Path]:
    """Run ``job``: check the output folder and the labels file before any work, load
    the model and the images, fit, summarise, compute the regions' statistics and write
    the report, ``summary.json``, ``summary.pt`` and the memberships into ``job.out`` as
    one unit. Returns the summary and the report's path."""
    check_output(job.out, job.inputs)
    fitted, _ = fit_job(job, families)
    names = fitted.class_names
    refs = fitted.references
    labels = load_labels(fitted.data, refs.names, job.labels, names, classes=fitted.classes)
    summary, stats = summarize_references(
        fitted, coverage=job.coverage, max_regions=job.max_regions,
        target_purity=job.target_purity,
        separate_logics=job.separate_logics, max_logics=job.max_logics,
        meta={"model": job.model.name, "data": job.data, "class_names": names})
    interp = fitted.interp
    report = write_summary(
        job.out, summary, refs.images, heatmap=interp.heatmap, stats=stats,
        reference_heatmap=interp.reference_heatmap, names=refs.names, class_names=names,
        across=interp.across, labels=labels, predictions=interp.predictions_,
        title="repinterp summary",
        meta={"model": job.model.name, "data": job.data, **fitted.meta(), **job.meta,
              "separate_logics": job.separate_logics, "target_purity": job.target_purity})
    return summary, report


def summarize_references(fitted: Fitted, *, coverage: float, max_regions: int,
                         target_purity: float | None = defaults.TARGET_PURITY,
                         separate_logics: bool = False,
                         max_logics: int = defaults.MAX_LOGICS,
                         meta: dict | None = None
                         ) -> tuple[Summary, list[RegionStats] | None]:
    """The summary of the fitted references (``meta`` added to its own, with the model's
    and the references' fingerprints) and its regions' held-out statistics
    (``target_purity``: the purity contract, :mod:`repinterp.core.contract`)."""
    summary = fitted.interp.summarize(coverage=coverage, max_regions=max_regions,
                                      target_purity=target_purity,
                                      separate_logics=separate_logics,
                                      max_logics=max_logics)
    summary.meta.update(meta or {})
    summary.meta.update(model_digest=model_digest(fitted.interp.model),
                        references_sha256=fitted.references_digest())
    stats = fitted.heldout_stats(summary.regions)
    return summary, contract_stats(summary.regions) if stats is None else stats


def layer_lines(source: ModelSource, families: Mapping[str, Family] | None = None, *,
                depth: int | None = 3) -> list[str]:
    """``repinterp layers``: one line per candidate layer (down to ``depth`` levels;
    None: all) with the verdict on the head after it, the suggested layer marked ``*``,
    and a closing line naming the suggestion."""
    from ..core.layers import layer_table, suggest_layer

    model, _ = open_model(source, families)
    rows = layer_table(model, max_depth=depth)
    best = suggest_layer(model, rows)
    hidden = sum(1 for name, _ in model.named_modules() if name) - len(rows)
    width = max(len(r.name) for r in rows) if rows else 10
    lines = [f"  {'layer':{width}}  {'type':18}  head after it"]
    lines += [f"{'*' if r.name == best else ' '} {r.name:{width}}  {r.type:18}  "
              f"{r.describe()}" for r in rows]
    if hidden:
        lines.append(f"({hidden} deeper layers not listed: --depth {(depth or 0) + 1} or "
                     "--depth 0 for all)")
    lines.append(f"suggested layer: {best}" if best else
                 "no layer to suggest: no block leaves a head with a kink or a smooth "
                 "head; give --layer (see the verdicts above)")
    return lines
