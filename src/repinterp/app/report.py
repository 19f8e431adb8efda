"""The HTML report and the JSON form of a summary."""
from __future__ import annotations

import base64
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from jinja2 import Environment, PackageLoader, select_autoescape
from matplotlib import colormaps
from PIL import Image

from ..core.region import Region
from ..core.summary import Summary
from .io import write_json, write_text

__all__ = ["RegionStats", "THUMBNAIL", "heldout_stats", "region_stats", "summary_dict",
           "thumbnail", "write_report"]

_JET = colormaps["jet"]
#: Displayed thumbnail size in CSS pixels; embedded images are at most 128 px.
THUMBNAIL = 112
_EMBED_MAX = 128


@dataclass
class RegionStats:
    """How a region does on held-out images: how many fall inside, and the share of
    them predicted as the region's class (its purity on held-out data)."""

    inside: int
    purity: float | None


def region_stats(region: Region, features: torch.Tensor,
                 predictions: torch.Tensor) -> RegionStats:
    """:class:`RegionStats` of ``region`` on held-out ``features`` ``[n, D]``."""
    inside = region.contains_features(features).cpu()
    n = int(inside.sum())
    pur = int((predictions[inside] == region.predicted_class).sum()) / n if n else None
    return RegionStats(inside=n, purity=pur)


def heldout_stats(regions: Sequence[Region], features: torch.Tensor,
                  predictions: torch.Tensor) -> list[RegionStats]:
    """:func:`region_stats` of every region, in the order of ``regions``."""
    preds = predictions.cpu()
    return [region_stats(r, features, preds) for r in regions]


def heldout_figures(regions: Sequence[Region], features: torch.Tensor,
                    predictions: torch.Tensor) -> dict:
    """Pooled figures of ``regions`` on held-out images: ``pooled_purity`` (of the images
    inside a region, counted once per region, the share predicted as its class),
    ``share_in_a_region`` (images inside at least one region) and the per-region
    :class:`RegionStats` (``stats``)."""
    stats = heldout_stats(regions, features, predictions)
    inside = sum(s.inside for s in stats)
    agree = sum(s.inside * s.purity for s in stats if s.purity is not None)
    union = torch.zeros(len(features), dtype=torch.bool)
    for region in regions:
        union |= region.contains_features(features).cpu()
    return {"pooled_purity": agree / inside if inside else None,
            "share_in_a_region": float(union.float().mean()), "stats": stats}


def _to_display(image: torch.Tensor) -> np.ndarray:
    """``[C, H, W]`` -> ``[H, W, 3]`` in ``[0, 1]``, min-max scaled for display."""
    a = image.detach().float().cpu()
    a = (a - a.min()) / (a.max() - a.min()).clamp_min(1e-12)
    a = a.permute(1, 2, 0).numpy()
    return np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a[..., :3]


def thumbnail(image: torch.Tensor, heat: torch.Tensor | None = None, *,
              alpha: float = 0.45) -> str:
    """A data URI of ``image`` ``[C, H, W]`` with ``heat`` (``[H, W]`` in ``[0, 1]``)
    blended on top. Small images are enlarged with nearest neighbours to about
    :data:`THUMBNAIL` px (PNG); larger ones are shrunk to 128 px and stored as JPEG
    (about 5-10 KB for a 224x224 photo)."""
    rgb = _to_display(image)
    if heat is not None:
        rgb = (1 - alpha) * rgb + alpha * _JET(heat.detach().float().cpu().numpy())[..., :3]
    img = Image.fromarray((rgb * 255).round().astype(np.uint8))
    buf = io.BytesIO()
    if max(img.size) <= THUMBNAIL // 2:
        scale = math.ceil(THUMBNAIL / max(img.size))
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
        img.save(buf, format="PNG", optimize=True)
        mime = "image/png"
    else:
        img.thumbnail((_EMBED_MAX, _EMBED_MAX), Image.LANCZOS)
        img.save(buf, format="JPEG", quality=82, optimize=True)
        mime = "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


def summary_dict(summary: Summary, class_names: Sequence[str] | None = None,
                 stats: Sequence[RegionStats] | None = None, top: int = 50,
                 names: Sequence[str] | None = None, meta: dict | None = None) -> dict:
    """Everything in a summary as plain JSON data. ``stats`` are the held-out statistics
    of ``summary.regions`` in their order; ``names`` are the references' file names."""
    def cname(c: int) -> str:
        return class_names[c] if class_names and c < len(class_names) else str(c)

    per_region = iter(stats) if stats is not None else None
    classes = []
    for cs in summary.classes:
        regions = []
        for region in cs.regions:
            st = next(per_region) if per_region is not None else None
            members = region.members[:top].tolist()
            regions.append({
                "seed_index": region.seed_index, "size": region.size,
                "purity": region.purity, "num_boundaries": region.num_boundaries,
                "delta": region.delta, "min_delta": region.min_delta,
                "approximate": region.approximate,
                "heldout_inside": st.inside if st else None,
                "heldout_purity": st.purity if st else None,
                "top_members": members,
                "top_member_names": [names[i] for i in members] if names else None,
                "top_member_distances": [round(float(d), 6)
                                         for d in region.member_distances[:top]],
                "boundary_pairs": [[cname(a), cname(b)] for a, b in region.pairs.tolist()],
            })
        classes.append({"class": cs.cls, "name": cname(cs.cls), "n_images": cs.n_images,
                        "coverage": cs.coverage, "regions": regions})
    return {"meta": dict(meta or {}), "layer": summary.layer,
            "coverage_target": summary.coverage_target, "max_regions": summary.max_regions,
            "classes": classes}


def write_report(out_dir: str | Path, summary: Summary, images: torch.Tensor, *,
                 heatmap: Callable[[Region, torch.Tensor], torch.Tensor],
                 class_names: Sequence[str] | None = None,
                 stats: Sequence[RegionStats] | None = None,
                 names: Sequence[str] | None = None,
                 seed_images: dict[int, torch.Tensor] | None = None, top: int = 8,
                 far: int = 4, title: str = "repinterp report",
                 meta: dict | None = None) -> Path:
    """Write ``report.html`` (thumbnails inline) and ``summary.json`` into ``out_dir``,
    both atomically.

    ``images`` are the references the summary was made from, in the same order;
    ``heatmap(region, images)`` draws a region's heat maps (e.g.
    :meth:`RepresentativeInterpreter.heatmap`); ``seed_images`` maps the position of a
    region in ``summary.regions`` to the seed image of a region explained from an
    outside image.
    """
    out_dir = Path(out_dir)
    meta = dict(meta or {})
    data = summary_dict(summary, class_names, stats, names=names, meta=meta)

    def tiles(region: Region, idx: torch.Tensor) -> list[dict]:
        if len(idx) == 0:
            return []
        heat = heatmap(region, images[idx])
        return [{"src": thumbnail(images[i], h), "index": i,
                 "name": names[i] if names else f"#{i}"}
                for i, h in zip(idx.tolist(), heat, strict=True)]

    sections = []
    position = 0
    for cs, cd in zip(summary.classes, data["classes"], strict=True):
        regions = []
        for k, (region, rd) in enumerate(zip(cs.regions, cd["regions"], strict=True)):
            if region.seed_index is not None:
                seed_tiles = tiles(region, torch.tensor([region.seed_index]))
            elif seed_images and position in seed_images:
                img = seed_images[position]
                seed_tiles = [{"src": thumbnail(img, heatmap(region, img[None])[0]),
                               "index": -1, "name": "outside image"}]
            else:
                seed_tiles = []
            n = region.size
            far_idx = region.members[max(top, n - far):]
            regions.append(dict(rd, number=k + 1, seed=seed_tiles,
                                top=tiles(region, region.members[:top]),
                                far=tiles(region, far_idx), far_start=max(top, n - far) + 1))
            position += 1
        sections.append(dict(cd, regions_view=regions))
    env = Environment(loader=PackageLoader("repinterp.app", "templates"),
                      autoescape=select_autoescape(["html"]))
    approximate = any(r.approximate for r in summary.regions)
    html = env.get_template("report.html").render(title=title, meta=meta, data=data,
                                                  sections=sections, thumb=THUMBNAIL,
                                                  approximate=approximate)
    write_json(out_dir / "summary.json", data)
    write_text(out_dir / "report.html", html)
    return out_dir / "report.html"
