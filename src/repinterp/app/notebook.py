"""A region in a notebook: its seed and closest members with the region's heat map, as
self-contained HTML (images inline, no script, nothing fetched).

>>> from repinterp.app.notebook import show
>>> show(region, images, interp.heatmap)          # the last line of a Jupyter cell
"""
from __future__ import annotations

import html
from collections.abc import Callable, Sequence

import torch

from ..core.region import Region
from ..core.words import plural
from .captions import captions
from .thumbs import SHOW_SIZE, thumb

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
         class_names: Sequence[str] | None = None, size: int = SHOW_SIZE) -> RegionView:
    """The region's facts, then its ``top`` closest members (the seed, rank 1, framed;
    an outside seed is not among ``images``, the references the region was made from),
    each with the region's heat map (``heatmap(region, images)``, e.g.
    ``interp.heatmap``) blended on top, ``size`` CSS pixels wide (a small image is
    scaled up pixel by pixel). The class is named by ``class_names``, else by the
    region's own :attr:`~repinterp.core.region.Region.class_name`."""
    idx = region.members[:top].tolist()
    if region.seed_index is not None and region.seed_index not in idx:
        idx = [region.seed_index, *idx]                  # a seed tied past rank 1
    names = [f"#{i}" for i in idx]
    tiles = []
    if idx:
        heat = heatmap(region, images[torch.tensor(idx)])
        for i, h, caption in zip(idx, heat, captions(names), strict=True):
            src = thumb(images[i], h)
            seed = i == region.seed_index
            frame = "2px solid #d97706" if seed else "1px solid #ccc"
            label = f"seed {caption}" if seed else caption
            render = "pixelated" if src.pixelated else "auto"
            tiles.append(f"<figure style='display:inline-block;margin:2px;text-align:center'>"
                         f"<img src='{src}' alt='{html.escape(label)}' style='width:{size}px;"
                         f"height:{size}px;object-fit:contain;image-rendering:{render};"
                         f"border:{frame}'>"
                         f"<figcaption>{html.escape(label)}</figcaption></figure>")
    k = region.predicted_class
    name = f"{class_names[k]} (class {k})" if class_names and 0 <= k < len(class_names) \
        else region.class_label
    facts = html.escape(f"{name}: {plural(region.size, 'member')}, purity "
                        f"{100 * region.purity:.1f}%, "
                        f"{plural(region.num_boundaries, 'boundary')}, delta {region.delta}")
    return RegionView(f"<div><p><b>Region</b> {facts}</p>{''.join(tiles)}</div>")
