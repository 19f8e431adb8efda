"""A region in a notebook: its seed and closest members with the region's heat map, as
self-contained HTML (images inline, no script, nothing fetched).

>>> from repinterp.app.notebook import show
>>> show(region, images, interp.heatmap)          # the last line of a Jupyter cell
"""
from __future__ import annotations

import html
from collections.abc import Callable

import torch

from ..core.region import Region
from .report import thumbnail

__all__ = ["RegionView", "show"]


class RegionView:
    """What :func:`show` returns: Jupyter renders its ``_repr_html_``; ``str()`` is the
    HTML too (to save it)."""

    def __init__(self, markup: str):
        self.markup = markup

    def _repr_html_(self) -> str:
        return self.markup

    def __str__(self) -> str:
        return self.markup


def show(region: Region, images: torch.Tensor,
         heatmap: Callable[[Region, torch.Tensor], torch.Tensor], *, top: int = 8,
         class_names: list[str] | None = None) -> RegionView:
    """The region's facts, then its seed (when it is one of ``images``, the references
    the region was made from) and its ``top`` closest members, each with the region's
    heat map (``heatmap(region, images)``, e.g. ``interp.heatmap``) blended on top."""
    idx = region.members[:top]
    picked = ([region.seed_index] if region.seed_index is not None else []) + idx.tolist()
    tiles = []
    if picked:
        rows = torch.tensor(picked)
        heat = heatmap(region, images[rows])
        for k, (i, h) in enumerate(zip(picked, heat, strict=True)):
            label = "seed" if k == 0 and region.seed_index is not None else f"#{i}"
            tiles.append(f"<figure style='display:inline-block;margin:2px;text-align:center'>"
                         f"<img src='{thumbnail(images[i], h)}' alt='{label}'>"
                         f"<figcaption>{html.escape(label)}</figcaption></figure>")
    name = (class_names[region.predicted_class] if class_names
            and region.predicted_class < len(class_names) else region.predicted_class)
    facts = html.escape(f"class {name}: {region.size} members, purity "
                        f"{100 * region.purity:.1f}%, {region.num_boundaries} boundaries, "
                        f"delta {region.delta}")
    return RegionView(f"<div><p><b>Region</b> {facts}</p>{''.join(tiles)}</div>")
