"""The HTML report and the JSON form of a summary."""
from __future__ import annotations

import base64
import io
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from jinja2 import Environment, PackageLoader, select_autoescape
from matplotlib import colormaps
from PIL import Image

from ..core.region import Region
from ..core.summary import Summary
from .io import atomic_path, write_json, write_text
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

__all__ = ["THUMBNAIL", "membership_rows", "thumbnail", "write_memberships", "write_report"]

_JET = colormaps["jet"]
#: Displayed thumbnail size in CSS pixels; embedded images are at most 128 px.
THUMBNAIL = 112
_EMBED_MAX = 128


def _to_display(image: torch.Tensor) -> np.ndarray:
    """``[C, H, W]`` -> ``[H, W, 3]`` in ``[0, 1]``, min-max scaled for display."""
    a = image.detach().float().cpu()
    a = (a - a.min()) / (a.max() - a.min()).clamp_min(1e-12)
    a = a.permute(1, 2, 0).numpy()
    return np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a[..., :3]


def thumbnail(image: torch.Tensor, heat: torch.Tensor | None = None, *,
              alpha: float = 0.45, small: bool = False) -> str:
    """A data URI of ``image`` ``[C, H, W]`` with ``heat`` (``[H, W]`` in ``[0, 1]``)
    blended on top. Small images are enlarged with nearest neighbours to about
    :data:`THUMBNAIL` px (PNG); larger ones are shrunk to 128 px and stored as JPEG
    (about 5-10 KB for a 224x224 photo). ``small`` (the paged member grids): small
    images stay at their own size (the page scales them up), larger ones go to 80 px."""
    rgb = _to_display(image)
    if heat is not None:
        rgb = (1 - alpha) * rgb + alpha * _JET(heat.detach().float().cpu().numpy())[..., :3]
    img = Image.fromarray((rgb * 255).round().astype(np.uint8))
    buf = io.BytesIO()
    if small and max(img.size) <= 64:
        img.save(buf, format="PNG", optimize=True)
        mime = "image/png"
    elif small:
        img.thumbnail((80, 80), Image.LANCZOS)
        img.save(buf, format="JPEG", quality=80, optimize=True)
        mime = "image/jpeg"
    elif max(img.size) <= THUMBNAIL // 2:
        scale = math.ceil(THUMBNAIL / max(img.size))
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
        img.save(buf, format="PNG", optimize=True)
        mime = "image/png"
    else:
        img.thumbnail((_EMBED_MAX, _EMBED_MAX), Image.LANCZOS)
        img.save(buf, format="JPEG", quality=82, optimize=True)
        mime = "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


def membership_rows(summary: Summary, names: Sequence[str] | None = None,
                    predictions: torch.Tensor | None = None,
                    labels: torch.Tensor | None = None) -> dict[str, list]:
    """Every (region, member) pair as columns: ``image`` (name), ``index``,
    ``predicted``, ``label`` (-1 unknown or none), ``region`` (1-based, the report's
    numbering), ``logic``, ``rank`` (1 = nearest the seed) and ``distance``."""
    cols: dict[str, list] = {k: [] for k in ("image", "index", "predicted", "label",
                                             "region", "logic", "rank", "distance")}
    for number, region in enumerate(summary.regions, 1):
        idx = region.members.tolist()
        cols["image"] += [names[i] if names else f"#{i}" for i in idx]
        cols["index"] += idx
        cols["predicted"] += (predictions[region.members].tolist() if predictions is not None
                              else [region.predicted_class] * len(idx))
        cols["label"] += (labels[region.members].tolist() if labels is not None
                          else [-1] * len(idx))
        cols["region"] += [number] * len(idx)
        cols["logic"] += [-1 if region.logic is None else region.logic] * len(idx)
        cols["rank"] += list(range(1, len(idx) + 1))
        cols["distance"] += [float(d) for d in region.member_distances]
    return cols


def write_memberships(out_dir: str | Path, cols: dict[str, list]) -> None:
    """``members.csv`` and ``members.parquet`` of :func:`membership_rows`, atomically."""
    import csv

    import pyarrow as pa
    import pyarrow.parquet as pq

    out_dir = Path(out_dir)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(list(cols))
    writer.writerows(zip(*cols.values(), strict=True))
    write_text(out_dir / "members.csv", buf.getvalue())
    table = pa.table({"image": pa.array(cols["image"], pa.string()),
                      **{k: pa.array(cols[k], pa.int64()) for k in
                         ("index", "predicted", "label", "region", "logic", "rank")},
                      "distance": pa.array(cols["distance"], pa.float64())})
    with atomic_path(out_dir / "members.parquet") as tmp:
        pq.write_table(table, tmp)


def write_report(out_dir: str | Path, summary: Summary, images: torch.Tensor, *,
                 heatmap: Callable[[Region, torch.Tensor], torch.Tensor],
                 class_names: Sequence[str] | None = None,
                 stats: Sequence[RegionStats] | None = None,
                 names: Sequence[str] | None = None,
                 seed_images: dict[int, torch.Tensor] | None = None, top: int = 8,
                 far: int = 4, title: str = "repinterp report",
                 meta: dict | None = None, labels: torch.Tensor | None = None,
                 predictions: torch.Tensor | None = None, max_members: int = 2000,
                 batch: int = 256,
                 reference_heatmap: Callable[[Region, torch.Tensor], torch.Tensor] | None
                 = None) -> Path:
    """Write ``report.html`` (the overview, flagged regions first), one page per region
    under ``regions/`` (every member, up to ``max_members``, as a paged grid in rank
    order with a file-name filter), ``summary.json`` and the memberships
    (``members.csv``, ``members.parquet``), all atomically and self-contained.

    ``images`` are the references the summary was made from, in the same order;
    ``heatmap(region, images)`` draws a region's heat maps (e.g.
    :meth:`RepresentativeInterpreter.heatmap`); ``seed_images`` maps the position of a
    region in ``summary.regions`` to the seed image of a region explained from an
    outside image; ``labels`` (-1 unknown) add label mixes and disagreeing members;
    ``predictions`` of the references go into the memberships.
    ``reference_heatmap(region, indices)``, when given, draws the references' heat maps
    from what is already known of them (e.g.
    :meth:`RepresentativeInterpreter.reference_heatmap`, from the stored features)
    instead of ``heatmap(region, images[indices])``.
    """
    out_dir = Path(out_dir)
    meta = dict(meta or {})

    def member_heat(region: Region, idx: torch.Tensor) -> torch.Tensor:
        if reference_heatmap is not None:
            return reference_heatmap(region, idx)
        return heatmap(region, images[idx])

    # the statistics first (the closest members' heat maps among them), then rendering
    closest = [member_heat(r, r.members[:top]) if r.size else torch.zeros(0)
               for r in summary.regions]
    data = summary_dict(summary, class_names, stats, names=names, meta=meta, labels=labels,
                        top_heat=closest)

    def tiles(region: Region, idx: torch.Tensor,
              heat: torch.Tensor | None = None) -> list[dict]:
        if len(idx) == 0:
            return []
        heat = member_heat(region, idx) if heat is None else heat
        return [{"src": thumbnail(images[i], h), "index": i,
                 "name": names[i] if names else f"#{i}"}
                for i, h in zip(idx.tolist(), heat, strict=True)]

    env = Environment(loader=PackageLoader("repinterp.app", "templates"),
                      autoescape=select_autoescape(["html"]))
    page = env.get_template("region.html")
    sections, flagged, search = [], [], {}
    position = 0
    for cs, cd in zip(summary.classes, data["classes"], strict=True):
        views = []
        for k, (region, rd) in enumerate(zip(cs.regions, cd["regions"], strict=True)):
            if region.seed_index is not None:
                seed_tiles = tiles(region, torch.tensor([region.seed_index]))
            elif seed_images and position in seed_images:
                img = seed_images[position]
                seed_tiles = [{"src": thumbnail(img, heatmap(region, img[None])[0]),
                               "index": -1, "name": "outside image"}]
            else:
                seed_tiles = []
            first = closest[position]                 # drawn once, above
            position += 1
            grid: list[dict] = []
            shown = region.members[:max_members]
            for i in range(0, len(shown), batch):
                idx = shown[i:i + batch]
                if i == 0:
                    rest = idx[len(first):]
                    heat = torch.cat([first[:len(idx)], member_heat(region, rest)]) \
                        if len(rest) else first[:len(idx)]
                else:
                    heat = member_heat(region, idx)
                for j, h in zip(idx.tolist(), heat, strict=True):
                    grid.append({"src": thumbnail(images[j], h, small=True),
                                 "name": names[j] if names else f"#{j}",
                                 "rank": len(grid) + 1,
                                 "label": (class_name(class_names, int(labels[j]))
                                           if labels is not None and int(labels[j]) >= 0
                                           else None)})
            n = region.size
            far_idx = region.members[max(top, n - far):]
            view = dict(rd, number=k + 1, seed=seed_tiles, class_name=cd["name"],
                        href=f"regions/region-{rd['region']:03d}.html",
                        top=tiles(region, region.members[:top], first),
                        far=tiles(region, far_idx), far_start=max(top, n - far) + 1)
            views.append(view)
            if rd["flags"]:
                flagged.append(view)
            for t in grid:
                search.setdefault(t["name"], []).append(rd["region"])
            html = page.render(title=f"{title}: region {rd['region']}", meta=meta, r=view,
                               tiles_json=_script_json(grid), thumb=THUMBNAIL,
                               shown=len(grid))
            write_text(out_dir / view["href"], html)
        sections.append(dict(cd, regions_view=views))
    flagged.sort(key=flag_order)                # the most telling flagged region first
    approximate = any(r.approximate for r in summary.regions)
    html = env.get_template("report.html").render(
        title=title, meta=meta, data=data, sections=sections, thumb=THUMBNAIL,
        approximate=approximate, flagged=flagged, search_json=_script_json(search),
        labelled=labels is not None,
        rules={"purity": FLAG_HELDOUT_PURITY, "labels": FLAG_LABEL_ACCURACY,
               "heat": FLAG_HEAT_CONCENTRATION, "hot": HOT_SHARE})
    write_json(out_dir / "summary.json", data)
    write_memberships(out_dir, membership_rows(summary, names, predictions, labels))
    write_text(out_dir / "report.html", html)
    return out_dir / "report.html"


def _script_json(obj) -> str:
    """JSON safe inside a ``<script>`` element."""
    import json
    return json.dumps(obj).replace("<", "\\u003c").replace(">", "\\u003e") \
        .replace("&", "\\u0026")
