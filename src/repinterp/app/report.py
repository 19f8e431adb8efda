"""The HTML report and the JSON form of a summary."""
from __future__ import annotations

import base64
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from jinja2 import Environment, PackageLoader, select_autoescape
from matplotlib import colormaps
from PIL import Image

from ..core.errors import UserError
from ..core.region import Region
from ..core.summary import Summary
from ..core.words import plural
from .memberships import membership_blocks, write_memberships
from .outputs import write_json, write_text
from .stats import (
    FLAG_HEAT_CONCENTRATION,
    FLAG_HELDOUT_PURITY,
    FLAG_LABEL_ACCURACY,
    HOT_SHARE,
    RegionStats,
    class_name,
    flag_order,
    summary_dict,
)

__all__ = ["THUMBNAIL", "Query", "colour_bar_css", "header_facts", "heat_uri", "overlay",
           "short_name", "thumbnail", "write_report"]

_JET = colormaps["jet"]
#: Displayed thumbnail size in CSS pixels; embedded images are at most 128 px.
THUMBNAIL = 112
_EMBED_MAX = 128


def _to_display(image: torch.Tensor, minmax: bool = True) -> np.ndarray:
    """``[C, H, W]`` -> ``[H, W, 3]`` in ``[0, 1]``, min-max scaled for display (or
    clipped, with ``minmax=False``)."""
    t = image.detach().float().cpu()
    t = (t - t.min()) / (t.max() - t.min()).clamp_min(1e-12) if minmax else t.clamp(0, 1)
    a = t.permute(1, 2, 0).numpy()
    return np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a[..., :3]


def overlay(image: torch.Tensor, heat: torch.Tensor | None, alpha: float = 0.7,
            minmax: bool = True) -> np.ndarray:
    """``image`` ``[C, H, W]`` as ``[H, W, 3]`` in ``[0, 1]`` (min-max scaled, or as it
    is with ``minmax=False``) with ``heat`` (``[H, W]`` in ``[0, 1]``) drawn in the jet
    colours, each pixel's opacity ``alpha * heat``: where the map is low the image shows
    through undimmed."""
    rgb = _to_display(image, minmax)
    if heat is None:
        return rgb
    h = heat.detach().float().cpu().clamp(0, 1).numpy()
    a = alpha * h[..., None]
    return (1 - a) * rgb + a * _JET(h)[..., :3]


def show_image(image, heat=None, *, alpha: float = 0.7, mean=None, std=None,
               scale: int | None = None) -> Image.Image:
    """See :func:`repinterp.show`."""
    x = torch.as_tensor(np.asarray(image) if not isinstance(image, torch.Tensor) else image)
    if x.ndim == 3 and x.shape[-1] in (1, 3, 4) and x.shape[0] not in (1, 3, 4):
        x = x.permute(2, 0, 1)                                    # [H, W, C] -> [C, H, W]
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise UserError(f"image must be [C, H, W], [H, W, C] or [H, W], got "
                        f"{tuple(x.shape)}")
    if not x.is_floating_point():
        x = x.float() / 255.0                                     # bytes
    x = x.detach().float().cpu()
    if mean is not None or std is not None:
        m = torch.as_tensor(0.0 if mean is None else mean, dtype=torch.float32)
        s = torch.as_tensor(1.0 if std is None else std, dtype=torch.float32)
        x = x * s.reshape(-1, 1, 1) + m.reshape(-1, 1, 1)
    h = None
    if heat is not None:
        h = torch.as_tensor(np.asarray(heat) if not isinstance(heat, torch.Tensor)
                            else heat).detach().float().cpu().squeeze()
        if h.shape != x.shape[1:]:
            raise UserError(f"heat {tuple(h.shape)} and image {tuple(x.shape[1:])} differ "
                            "in size")
        h = (h - h.min()) / (h.max() - h.min()).clamp_min(1e-12)
    as_is = mean is not None or std is not None or bool(x.min() >= 0 and x.max() <= 1)
    rgb = overlay(x, h, alpha, minmax=not as_is)
    img = Image.fromarray((np.clip(rgb, 0, 1) * 255).round().astype(np.uint8))
    if scale is None:
        scale = max(1, math.ceil(THUMBNAIL / max(img.size)))
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    return img


def _data_uri(rgb: np.ndarray, *, small: bool = False) -> str:
    """A data URI of ``rgb`` ``[H, W, 3]`` in ``[0, 1]``: small images enlarged with
    nearest neighbours to about :data:`THUMBNAIL` px (PNG); larger ones shrunk to 128 px
    and stored as JPEG (about 5-10 KB for a 224x224 photo). ``small`` (the paged member
    grids): small images stay at their own size (the page scales them up), larger ones
    go to 80 px."""
    img = Image.fromarray((np.clip(rgb, 0, 1) * 255).round().astype(np.uint8))
    buf = io.BytesIO()
    if small and max(img.size) <= 64:
        img.save(buf, format="PNG", optimize=True)
        mime = "image/png"
    elif small:
        img.thumbnail((80, 80), Image.Resampling.LANCZOS)
        img.save(buf, format="JPEG", quality=80, optimize=True)
        mime = "image/jpeg"
    elif max(img.size) <= THUMBNAIL // 2:
        scale = math.ceil(THUMBNAIL / max(img.size))
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
        img.save(buf, format="PNG", optimize=True)
        mime = "image/png"
    else:
        img.thumbnail((_EMBED_MAX, _EMBED_MAX), Image.Resampling.LANCZOS)
        img.save(buf, format="JPEG", quality=82, optimize=True)
        mime = "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


def thumbnail(image: torch.Tensor, heat: torch.Tensor | None = None, *,
              alpha: float = 0.7, small: bool = False) -> str:
    """A data URI of :func:`overlay` (``image`` with ``heat`` on top; see
    :func:`_data_uri` for the sizes)."""
    return _data_uri(overlay(image, heat, alpha), small=small)


def heat_uri(heat: torch.Tensor) -> str:
    """A data URI of a heat map ``[H, W]`` alone, in the jet colours of its own range."""
    h = heat.detach().double().cpu()
    h = (h - h.min()) / (h.max() - h.min()).clamp_min(1e-12)
    return _data_uri(_JET(h.float().numpy())[..., :3])


def colour_bar_css(alpha: float = 0.7, stops: int = 9) -> str:
    """The CSS gradient of the heat maps' colours as :func:`overlay` draws them (opacity
    rising with the heat), for the report's colour bar."""
    parts = []
    for k in range(stops):
        v = k / (stops - 1)
        r, g, b, _ = _JET(v)
        parts.append(f"rgba({round(255 * r)},{round(255 * g)},{round(255 * b)},"
                     f"{alpha * v:.2f}) {100 * v:.0f}%")
    return "linear-gradient(to right, " + ", ".join(parts) + ")"


def short_name(name: str, width: int = 16) -> str:
    """The distinctive end of an image's name for a caption (its tail: file names of one
    folder share their start), at most ``width`` characters."""
    return name if len(name) <= width else "\u2026" + name[-(width - 1):]


def _figure_number(x: float) -> str:
    return f"{x:,}" if isinstance(x, int) else f"{x:,.4g}"


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    m, s = divmod(seconds, 60)
    if m < 60:
        return f"{m} min {s} s"
    h, m = divmod(m, 60)
    return f"{h} h {m} min"


def header_facts(meta: dict) -> list[str]:
    """The report header's lines, written for people: known facts in words (counts with
    thousands separators, shares in %, times in minutes), others as ``key: value``;
    nested values (per-class tables) are left to the body."""
    m = dict(meta)
    out = []
    if m.get("model"):
        line = f"Model: {m.pop('model')}"
        if m.get("test_accuracy") is not None:
            line += f" ({100 * m.pop('test_accuracy'):.1f}% test accuracy)"
        out.append(line)
    if m.get("layer"):
        out.append(f"Split after layer {m.pop('layer')}")
    words = {
        "references": lambda v: f"{v:,} reference images",
        "num_boundaries": lambda v: f"{v:,} boundaries sampled per seed",
        "bank": lambda v: f"{v:,} boundaries in the index's bank",
        "heldout_pooled_purity": lambda v: f"held-out purity {100 * v:.1f}%",
        "heldout_share_in_a_region": lambda v: f"{100 * v:.1f}% of held-out images fall "
                                               "in a region",
        "seed": lambda v: f"seed {v}",
        "seconds": lambda v: f"made in {_duration(v)}",
        "skipped_files": lambda v: f"{v:,} unreadable files skipped" if v else None,
        "approximate": lambda v: "smooth head: tangent boundaries" if v else None,
        "separate_logics": lambda v: "classes split by decision logic first" if v else None,
        "image": lambda v: f"query image: {v}",
        "data": lambda v: f"images: {v}",
        "summary": lambda v: f"summary: {v}",
        "index": lambda v: f"index: {v}",
    }
    facts = []
    for key, value in m.items():
        if isinstance(value, (dict, list, tuple)) or value is None or key in (
                "regions", "region", "test_accuracy"):
            continue
        text = words[key](value) if key in words else \
            f"{key.replace('_', ' ')}: " + (_figure_number(value) if isinstance(
                value, (int, float)) and not isinstance(value, bool) else str(value))
        if text:
            facts.append(text)
    if facts:
        out.append(" \u00b7 ".join(facts))
    return out


@dataclass
class Query:
    """The image a report explains (``explain --image``, ``explain --summary``): the
    image ``[C, H, W]``, its name, the class predicted for it, and where it falls:
    ``position`` of the region shown in the summary's regions; ``inside`` whether it is
    inside that region (else the region is the nearest of its class); ``violated`` the
    region's boundaries it is on the wrong side of."""

    image: torch.Tensor
    name: str
    predicted: int
    position: int = 0
    inside: bool = True
    violated: int = 0


class Images(Protocol):
    """Images the report reads by index: a tensor ``[N, C, H, W]`` or a lazy reader
    such as a region index's images (``images[i]`` one image, ``images[idx]`` a stack)."""

    def __len__(self) -> int: ...
    def __getitem__(self, idx: Any) -> torch.Tensor: ...


def write_report(out_dir: str | Path, summary: Summary, images: Images, *,
                 heatmap: Callable[[Region, torch.Tensor], torch.Tensor],
                 class_names: Sequence[str] | None = None,
                 stats: Sequence[RegionStats] | None = None,
                 names: Sequence[str] | None = None,
                 query: Query | None = None, top: int = 8,
                 far: int = 4, title: str = "repinterp report",
                 meta: dict | None = None, labels: torch.Tensor | None = None,
                 predictions: torch.Tensor | None = None, max_members: int = 2000,
                 batch: int = 256, numbers: Sequence[int] | None = None,
                 reference_heatmap: Callable[[Region, torch.Tensor], torch.Tensor] | None
                 = None) -> Path:
    """Write ``report.html`` (how to read it, the flagged regions, an overview of every
    class's regions, then a card per region), one page per region under ``regions/``
    (its mean heat map and every member, up to ``max_members``, as a paged grid in rank
    order with a file-name filter), ``summary.json`` and the memberships
    (``members.csv``, ``members.parquet``), all atomically and self-contained.

    ``images`` are the references the summary was made from, in the same order;
    ``heatmap(region, images)`` draws a region's heat maps (e.g.
    :meth:`RepresentativeInterpreter.heatmap`); ``query`` is the image a report explains
    (it leads the report, with its prediction and region; a region grown from it has
    no seed among the references); ``labels`` (-1 unknown) add label mixes and
    disagreeing members; ``predictions`` of the references go into the memberships;
    ``numbers`` the regions' numbers when they are not 1, 2, ... (a region of a larger
    summary keeps its number). ``reference_heatmap(region, indices)``, when given, draws
    the references' heat maps from what is already known of them (e.g.
    :meth:`RepresentativeInterpreter.reference_heatmap`, from the stored features)
    instead of ``heatmap(region, images[indices])``.
    """
    out_dir = Path(out_dir)
    meta = dict(meta or {})
    shown_names = _shown_names(names, summary, max_members, far)

    def member_heat(region: Region, idx: torch.Tensor) -> torch.Tensor:
        if reference_heatmap is not None:
            return reference_heatmap(region, idx)
        return heatmap(region, images[idx])

    def caption(i: int) -> tuple[str, str]:
        name = shown_names[i] if shown_names else f"#{i}"
        return name, short_name(name)

    # the statistics first (the closest members' heat maps among them), then rendering
    closest = [member_heat(r, r.members[:top]) if r.size else torch.zeros(0)
               for r in summary.regions]
    data = summary_dict(summary, class_names, stats, names=shown_names, meta=meta,
                        labels=labels, top_heat=closest, numbers=numbers)

    def tiles(region: Region, idx: torch.Tensor,
              heat: torch.Tensor | None = None) -> list[dict]:
        if len(idx) == 0:
            return []
        heat = member_heat(region, idx) if heat is None else heat
        return [{"src": thumbnail(images[i], h), "index": i, "name": caption(i)[0],
                 "short": caption(i)[1]}
                for i, h in zip(idx.tolist(), heat, strict=True)]

    env = Environment(loader=PackageLoader("repinterp.app", "templates"),
                      autoescape=select_autoescape(["html"]))
    env.filters["plural"] = lambda n, word: plural(n, word)
    page = env.get_template("region.html")
    sections: list[Any] = []
    flagged: list[Any] = []
    search: dict[str, Any] = {}
    query_view = None
    position = 0
    bar = colour_bar_css()
    for cs, cd in zip(summary.classes, data["classes"], strict=True):
        views = []
        for k, (region, rd) in enumerate(zip(cs.regions, cd["regions"], strict=True)):
            if region.seed_index is not None:
                seed_tiles = tiles(region, torch.tensor([region.seed_index]))
            elif query is not None and query.position == position:
                seed_tiles = [{"src": thumbnail(query.image,
                                                heatmap(region, query.image[None])[0]),
                               "index": -1, "name": query.name,
                               "short": short_name(query.name)}]
            else:
                seed_tiles = []
            first = closest[position]                 # drawn once, above
            grid: list[dict] = []
            shown = region.members[:max_members]
            mean_heat = None
            for i in range(0, len(shown), batch):
                idx = shown[i:i + batch]
                if i == 0:
                    rest = idx[len(first):]
                    heat = torch.cat([first[:len(idx)], member_heat(region, rest)]) \
                        if len(rest) else first[:len(idx)]
                else:
                    heat = member_heat(region, idx)
                total = heat.double().sum(0)
                mean_heat = total if mean_heat is None else mean_heat + total
                for j, h in zip(idx.tolist(), heat, strict=True):
                    grid.append({"src": thumbnail(images[j], h, small=True),
                                 "name": caption(j)[0], "short": caption(j)[1],
                                 "rank": len(grid) + 1,
                                 "label": (class_name(class_names, int(labels[j]))
                                           if labels is not None and int(labels[j]) >= 0
                                           else None)})
            n = region.size
            far_idx = region.members[max(top, n - far):]
            view = dict(rd, number=k + 1, seed=seed_tiles, class_name=cd["name"],
                        href=f"regions/region-{rd['region']:03d}.html",
                        top=tiles(region, region.members[:top], first),
                        far=tiles(region, far_idx), far_start=max(top, n - far) + 1,
                        mean_heat=heat_uri(mean_heat) if mean_heat is not None
                        and float(mean_heat.max() - mean_heat.min()) > 0 else None,
                        boundary_classes=sorted({b for _, b in rd["boundary_pairs"]}))
            if query is not None and query.position == position:
                qheat = heatmap(region, query.image[None])[0]
                query_view = {"plain": thumbnail(query.image), "heat": thumbnail(
                    query.image, qheat), "name": query.name,
                    "predicted": class_name(class_names, query.predicted),
                    "inside": query.inside, "violated": query.violated, "region": view}
            views.append(view)
            position += 1
            if rd["flags"]:
                flagged.append(view)
            for t in grid:
                search.setdefault(t["name"], []).append(rd["region"])
            html = page.render(title=f"{title}: region {rd['region']}", meta=meta, r=view,
                               tiles_json=_script_json(grid), thumb=THUMBNAIL,
                               shown=len(grid), colour_bar=bar,
                               facts=header_facts(meta))
            write_text(out_dir / view["href"], html)
        sections.append(dict(cd, regions_view=views))
    flagged.sort(key=flag_order)                # the most telling flagged region first
    heldout = any(rd["heldout_inside"] is not None for cd in data["classes"]
                  for rd in cd["regions"])
    html = env.get_template("report.html").render(
        title=title, facts=header_facts(meta), data=data, sections=sections,
        thumb=THUMBNAIL, flagged=flagged,
        search_json=_script_json(search), labelled=labels is not None, heldout=heldout,
        query=query_view, single=query is not None, colour_bar=bar,
        rules={"purity": FLAG_HELDOUT_PURITY, "labels": FLAG_LABEL_ACCURACY,
               "heat": FLAG_HEAT_CONCENTRATION, "hot": HOT_SHARE})
    write_json(out_dir / "summary.json", data)
    write_memberships(out_dir, membership_blocks(summary, names, predictions, labels,
                                                 numbers))
    write_text(out_dir / "report.html", html)
    return out_dir / "report.html"


class _Shown(dict):
    """Names looked up in one pass (a lazy column's :meth:`take`), the rest on demand."""

    def __init__(self, names, looked: dict):
        super().__init__(looked)
        self.names = names

    def __missing__(self, i: int) -> str:
        return self.names[i]

    def __len__(self) -> int:
        return len(self.names)

    def __bool__(self) -> bool:
        return len(self.names) > 0


def _shown_names(names, summary: Summary, max_members: int, far: int):
    """``names``, or, for names read lazily (``take``), the names of the members a report
    shows (each region's first ``max_members`` and last ``far``) read in one pass."""
    take = getattr(names, "take", None)
    if take is None:
        return names
    idx = sorted({i for r in summary.regions
                  for part in (r.members[:max_members], r.members[max(0, r.size - far):])
                  for i in part.tolist()})
    return _Shown(names, dict(zip(idx, take(idx), strict=True)))


def _script_json(obj) -> str:
    """JSON safe inside a ``<script>`` element."""
    import json
    return json.dumps(obj).replace("<", "\\u003c").replace(">", "\\u003e") \
        .replace("&", "\\u0026")
