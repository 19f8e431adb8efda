"""Whole tasks on the user's files, for the command line and the demo to call: each
loads or checks what it needs and returns a result; nothing here parses arguments or
prints."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from ..core.errors import UserError
from ..core.interpreter import RepresentativeInterpreter
from ..core.network import SplitNetwork
from ..core.region import Region
from ..core.summary import Summary
from .io import images_digest, model_digest
from .loading import ImageSet, check_feature_map, load_images
from .stats import RegionStats, heldout_stats

__all__ = ["Fitted", "Located", "check_summary_source", "fit_references", "locate_image",
           "source_fingerprint", "summarize_references"]


@dataclass
class Fitted:
    """An interpreter fitted on the reference images of a path, with what was loaded:
    the references, the held-out images (or None) and the loading options."""

    interp: RepresentativeInterpreter
    references: ImageSet
    heldout: ImageSet | None
    options: dict

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
                "approximate": self.interp.approximate_}


def fit_references(model: nn.Module, layer: str, data: str | os.PathLike, *,
                   options: dict, limit: int | None = None,
                   heldout: str | os.PathLike | None = None, **interpreter) -> Fitted:
    """Load the images of ``data`` (the first ``limit``; ``options`` as
    :func:`~repinterp.app.loading.load_images` takes them) and of ``heldout``, refuse a
    layer without a feature map before any fit, and fit a
    :class:`~repinterp.RepresentativeInterpreter` (``interpreter``: its parameters)."""
    refs = load_images(data, limit=limit, **options)
    held = load_images(heldout, **options) if heldout else None
    check_feature_map(model, layer, refs.images[0])
    interp = RepresentativeInterpreter(model, layer, **interpreter).fit(refs.images)
    return Fitted(interp, refs, held, options)


def source_fingerprint(model: nn.Module, references: torch.Tensor) -> dict:
    """What a saved summary records to be refused with another model or other data
    (:func:`check_summary_source`)."""
    return {"model_digest": model_digest(model),
            "references_sha256": images_digest(references)}


def summarize_references(fitted: Fitted, *, coverage: float, max_regions: int,
                         separate_logics: bool = False, max_logics: int = 4,
                         meta: dict | None = None
                         ) -> tuple[Summary, list[RegionStats] | None]:
    """The summary of the fitted references (``meta`` added to its own, with the model's
    and the references' fingerprints) and its regions' held-out statistics."""
    summary = fitted.interp.summarize(coverage=coverage, max_regions=max_regions,
                                      separate_logics=separate_logics,
                                      max_logics=max_logics)
    summary.meta.update(meta or {})
    summary.meta.update(source_fingerprint(fitted.interp.model, fitted.references.images))
    return summary, fitted.heldout_stats(summary.regions)


def check_summary_source(summary: Summary, model: nn.Module, references: torch.Tensor,
                         where: str | os.PathLike = "the summary") -> None:
    """Refuse to use ``summary`` with another model or other references than it was made
    from (its ``model_digest`` and ``references_sha256``); a summary that did not record
    them is refused too."""
    if "index" in summary.meta:
        raise UserError(f"the summary in {where} was made from the region index "
                        f"{summary.meta['index']}: locate images with the index itself "
                        "(`repinterp explain --index`)")
    if summary.meta.get("model_digest") != model_digest(model):
        raise UserError(f"the summary in {where} was made with another model (or by a "
                        "repinterp that did not record it); give the model it was made "
                        "with, or summarize again")
    expected = summary.meta.get("references")
    if expected is not None and expected != len(references):
        raise UserError(f"the summary in {where} was made from {expected} references, "
                        f"not {len(references)}; give the same images")
    if summary.meta.get("references_sha256") != images_digest(references):
        raise UserError(f"the summary in {where} was made from other reference images; "
                        "give the same images with the same loading options")


@dataclass
class Located:
    """Where an image falls in a summary: the position of its region in
    ``summary.regions`` (-1: none of its class's regions), its predicted class, and the
    split network that computed both (to draw heat maps with)."""

    position: int
    predicted: int
    network: SplitNetwork


def locate_image(summary: Summary, model: nn.Module, image: torch.Tensor, *,
                 device: str | None = None, progress: bool = False) -> Located:
    """The region of a saved ``summary`` that ``image`` ``[C, H, W]`` falls in, without
    refitting: one pass of the image through ``model`` split at the summary's layer
    (checked against ``model(x)`` first)."""
    net = SplitNetwork(model, summary.layer, approximate=bool(summary.meta.get(
        "approximate")), device=device, progress=progress)
    net.check_split(image[None])
    z = net.features(image[None], progress=False)
    pred = net.logits(z).argmax(1).cpu()
    return Located(int(summary.locate_features(z, pred)[0]), int(pred), net)
