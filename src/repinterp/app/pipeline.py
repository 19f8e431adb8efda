"""Whole tasks on the user's files, for the command line and the demo to call: each
loads or checks what it needs and returns a result; nothing here parses arguments or
prints."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from ..core.errors import UserError
from ..core.network import SplitNetwork
from ..core.summary import Summary
from .io import images_digest, model_digest

__all__ = ["Located", "check_summary_source", "locate_image"]


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
