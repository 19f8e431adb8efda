"""The HTML report and the JSON form of a summary."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from jinja2 import Environment, PackageLoader, select_autoescape
from PIL import Image

from ..core.contrast import Crossing
from ..core.counterfactual import Counterfactual
from ..core.errors import UserError
from ..core.region import Region
from ..core.summary import Summary
from ..core.words import at_most, layer_words, plural
from .across import across_view
from .captions import captions
from .memberships import membership_blocks, write_memberships
from .outputs import write_json, write_text
from .stats import (
    FLAG_HEAT_CONCENTRATION,
    FLAG_HELDOUT_PURITY,
    FLAG_LABEL_ACCURACY,
    HOT_SHARE,
    MINOR_SHARE,
    RegionStats,
    class_name,
    flag_order,
    minor_limit,
    summary_dict,
)
from .thumbs import (
    GRID_LIMIT,
    SHOW_SIZE,
    THUMBNAIL,
    colour_bar_css,
    heat_uri,
    overlay,
    thumb,
    upscale,
)

__all__ = ["DRAWN", "Query", "header_facts", "model_words", "show_image", "write_report"]

#: Members a region page draws (in rank order: four pages of its grid); the others are
#: listed by name, so that a page stays small (about 0.5 KB a drawn 28 px member)
DRAWN = 240


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
        return upscale(img, SHOW_SIZE)
    return img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST) \
        if scale > 1 else img


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


def model_words(model: Any) -> str | None:
    """How a report names the model: its name as given, or of a recorded description
    (an index's: architecture or model file, and weights); None when not known."""
    if isinstance(model, dict):
        name = model.get("arch") or (Path(str(model["model_file"])).name
                                     if model.get("model_file") else None)
        if not name:
            return None
        weights = model.get("weights")
        return f"{name}, weights {Path(str(weights)).name}" if weights else str(name)
    return str(model) if model else None


def header_facts(meta: dict) -> list[str]:
    """The report header's lines, written for people: the model first (``not recorded``
    when the meta does not name it), known facts in words (counts with thousands
    separators, shares in %, times in minutes), others as ``key: value``; nested values
    (per-class tables) are left to the body."""
    m = dict(meta)
    line = f"Model: {model_words(m.pop('model', None)) or 'not recorded'}"
    if m.get("test_accuracy") is not None:
        line += f" ({100 * m.pop('test_accuracy'):.1f}% test accuracy)"
    out = [line]
    if m.get("layer"):
        out.append(f"Split after {layer_words(str(m.pop('layer')))}")
    words = {
        "references": lambda v: plural(v, "reference image"),
        "num_boundaries": lambda v: f"{plural(v, 'boundary')} sampled per seed",
        "bank": lambda v: f"{plural(v, 'boundary')} in the index's bank",
        "heldout_pooled_purity": lambda v: f"held-out purity {100 * v:.1f}%",
        "heldout_share_in_a_region": lambda v: f"{100 * v:.1f}% of held-out images fall "
                                               "in a region",
        "target_purity": lambda v: f"every region at least {100 * v:g}% pure on the "
                                   "references it was not grown on (a held-out fifth)",
        "seed": lambda v: f"seed {v}",
        "seconds": lambda v: f"made in {_duration(v)}",
        "skipped_files": lambda v: f"{plural(v, 'unreadable file')} skipped" if v else None,
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
    region's boundaries it is on the wrong side of; ``edit`` a small change of the image
    that leaves the region (:meth:`RepresentativeInterpreter.counterfactual`), shown
    beside it with the difference."""

    image: torch.Tensor
    name: str
    predicted: int
    position: int = 0
    inside: bool = True
    violated: int = 0
    edit: Counterfactual | None = None


class Images(Protocol):
    """Images the report reads by index: a tensor ``[N, C, H, W]`` or a lazy reader
    such as a region index's images (``images[i]`` one image, ``images[idx]`` a stack)."""

    def __len__(self) -> int: ...
    def __getitem__(self, idx: Any) -> torch.Tensor: ...


def _environment() -> Environment:
    env = Environment(loader=PackageLoader("repinterp.app", "templates"),
                      autoescape=select_autoescape(["html"]))
    env.filters["plural"] = lambda n, word, many=None: plural(n, word, many)
    env.filters["at_most"] = lambda n, word, many=None: at_most(n, word, many)
    env.filters["layer_words"] = lambda name: layer_words(str(name))
    env.filters["count"] = lambda n: f"{n:,}"
    return env


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
                 = None, drawn: int = DRAWN,
                 across: Callable[[Region], Sequence[Crossing]] | None = None) -> Path:
    """Write ``report.html`` (how to read it, the flagged regions, an overview of every
    class's regions, then a card per region), one page per region under ``regions/``
    (its mean heat map and every member, up to ``max_members``, as a paged grid in rank
    order with a file-name filter: the first ``drawn`` drawn, the others listed by
    name), ``summary.json`` and the memberships (``members.csv``, ``members.parquet``),
    all atomically and self-contained.

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
    instead of ``heatmap(region, images[indices])``. ``class_names`` default to the
    summary's (:attr:`Summary.class_names`); the header names the model of ``meta``, else
    the one the summary records. ``across(region)``, when given (e.g.
    :meth:`RepresentativeInterpreter.across`), adds each region's contrastive neighbours:
    a row per boundary on its page, the nearest images decided otherwise on its card.
    """
    out_dir = Path(out_dir)
    meta = dict(meta or {})
    if not meta.get("model") and summary.meta.get("model"):
        meta = {"model": summary.meta["model"], **meta}
    if class_names is None:
        class_names = summary.class_names
    shown_names = _shown_names(names, summary, max_members, far)

    def name_of(i: int) -> str:
        return shown_names[i] if shown_names else f"#{i}"

    def member_heat(region: Region, idx: torch.Tensor) -> torch.Tensor:
        if reference_heatmap is not None:
            return reference_heatmap(region, idx)
        return heatmap(region, images[idx])

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
        return [{"src": thumb(images[i], h), "index": i, "name": name_of(i),
                 "seed": i == region.seed_index}
                for i, h in zip(idx.tolist(), heat, strict=True)]

    env = _environment()
    page = env.get_template("region.html")
    sections: list[Any] = []
    flagged: list[Any] = []
    search: dict[str, Any] = {}
    query_view = None
    position = 0
    bar = colour_bar_css()
    facts = header_facts(meta)
    for cs, cd in zip(summary.classes, data["classes"], strict=True):
        views = []
        for region, rd in zip(cs.regions, cd["regions"], strict=True):
            n = region.size
            top_tiles = tiles(region, region.members[:top], closest[position])
            far_tiles = tiles(region, region.members[max(top, n - far):])
            # the seed is rank 1 of its region: drawn once, among the members, framed;
            # apart only when it is no member shown (an outside image, a query)
            seed_apart: list[dict] = []
            if region.seed_index is not None and not any(t["seed"] for t in top_tiles):
                seed_apart = tiles(region, torch.tensor([region.seed_index]))
            elif region.seed_index is None and query is not None \
                    and query.position == position:
                seed_apart = [{"src": thumb(query.image, heatmap(region, query.image[None])[0]),
                               "index": -1, "name": query.name, "seed": True}]
            shown = [*seed_apart, *top_tiles, *far_tiles]
            for t, short in zip(shown, captions([t["name"] for t in shown]), strict=True):
                t["short"] = short
            grid, mean_heat = _grid(region, images, member_heat, closest[position],
                                    name_of, class_names, labels, max_members, drawn, batch)
            view = dict(rd, seed=seed_apart, class_name=cd["name"],
                        href=f"regions/region-{rd['region']:03d}.html",
                        top=top_tiles, far=far_tiles, far_start=max(top, n - far) + 1,
                        seed_tile=next((t for t in shown if t["seed"]), None),
                        mean_heat=heat_uri(mean_heat) if mean_heat is not None
                        and float(mean_heat.max() - mean_heat.min()) > 0 else None,
                        boundary_classes=sorted({b for _, b in rd["boundary_pairs"]}),
                        across=None if across is None else across_view(
                            region, across(region), images, name_of, class_names, top))
            if view["across"] is not None:
                rd["across"] = view["across"]["json"]
            if query is not None and query.position == position:
                qheat = heatmap(region, query.image[None])[0]
                query_view = {"plain": thumb(query.image), "heat": thumb(query.image, qheat),
                              "name": query.name,
                              "predicted": class_name(class_names, query.predicted),
                              "inside": query.inside, "violated": query.violated,
                              "region": view, "edit": edit_view(query.edit, class_names)}
            views.append(view)
            position += 1
            if rd["flags"]:
                flagged.append(view)
            for t in grid:
                search.setdefault(t["name"], []).append(rd["region"])
            html = page.render(title=f"{title}: region {rd['region']}", meta=meta, r=view,
                               tiles_json=_script_json(grid), thumb=THUMBNAIL,
                               shown=len(grid), drawn=min(drawn, len(grid)),
                               pixelated=bool(grid and "src" in grid[0]
                                              and grid[0]["src"].pixelated),
                               seed_rank=next((k + 1 for k, i in enumerate(
                                   region.members[:max_members].tolist())
                                   if i == region.seed_index), 0),
                               colour_bar=bar, facts=facts)
            write_text(out_dir / view["href"], html)
        sections.append(dict(cd, regions_view=views, minor_limit=minor_limit(cd["n_images"])))
    flagged.sort(key=flag_order)                # the most telling flagged region first
    heldout = any(rd["heldout_inside"] is not None for cd in data["classes"]
                  for rd in cd["regions"])
    html = env.get_template("report.html").render(
        title=title, facts=facts, data=data, sections=sections,
        thumb=THUMBNAIL, flagged=flagged,
        search_json=_script_json(search), labelled=labels is not None, heldout=heldout,
        query=query_view, single=query is not None, colour_bar=bar,
        minor_share=MINOR_SHARE,
        rules={"purity": FLAG_HELDOUT_PURITY, "labels": FLAG_LABEL_ACCURACY,
               "heat": FLAG_HEAT_CONCENTRATION, "hot": HOT_SHARE})
    write_json(out_dir / "summary.json", data)
    write_memberships(out_dir, membership_blocks(summary, names, predictions, labels,
                                                 numbers))
    write_text(out_dir / "report.html", html)
    return out_dir / "report.html"


def edit_view(edit: Counterfactual | None, class_names: Sequence[str] | None
              ) -> dict | None:
    """The edited image, its difference from the image (``|d|`` summed over channels,
    in its own range) and the facts of an edit, for the query's section."""
    if edit is None:
        return None
    return {"image": thumb(edit.image.cpu()),
            "difference": heat_uri(edit.difference.abs().sum(0).cpu()),
            "boundary": None if edit.boundary is None else edit.boundary + 1,
            "predicted": class_name(class_names, edit.predicted),
            "target": class_name(class_names, edit.target), "success": edit.success,
            "l2": edit.l2, "changed": edit.changed, "steps": edit.steps}


def _grid(region: Region, images: Images,
          member_heat: Callable[[Region, torch.Tensor], torch.Tensor],
          first: torch.Tensor, name_of: Callable[[int], str],
          class_names: Sequence[str] | None, labels: torch.Tensor | None,
          max_members: int, drawn: int, batch: int
          ) -> tuple[list[dict], torch.Tensor | None]:
    """A region page's grid: its first ``max_members`` members in rank order, each with
    its ``name``, its caption (``short``, where it is not the name), its ``label`` (where
    known) and, for the first ``drawn``, its thumbnail (``src``); and the sum of their
    heat maps (``first``: those of the closest members, drawn already)."""
    shown = region.members[:max_members]
    idx_all = shown.tolist()
    shorts = captions([name_of(i) for i in idx_all])
    grid: list[dict] = []
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
            rank = len(grid) + 1                 # the page numbers them in this order
            tile = {"name": name_of(j)}
            if rank <= drawn:
                tile["src"] = thumb(images[j], h, limit=GRID_LIMIT)
            if shorts[rank - 1] != tile["name"]:
                tile["short"] = shorts[rank - 1]
            if labels is not None and int(labels[j]) >= 0:
                tile["label"] = class_name(class_names, int(labels[j]))
            grid.append(tile)
    return grid, mean_heat


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
