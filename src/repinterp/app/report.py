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
from .io import atomic_path, write_json, write_text

__all__ = ["RegionStats", "THUMBNAIL", "heat_concentration", "heldout_stats", "label_stats",
           "membership_rows", "region_flags", "region_stats", "summary_dict", "thumbnail",
           "write_memberships", "write_report"]

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


#: Flags of a region that looks wrong (fixed rules, shown first in the report):
#: held-out purity below this, or label accuracy (members whose label is the predicted
#: class) below this, or a heat map that puts at least this share of its mass on the
#: hottest 5% of the pixels (the mean map of the region's top members; 0.05 when
#: uniform). Measured (docs/shortcut.md): demo regions reach 0.36, regions of the
#: shortcut models 0.53, the planted mark's region 0.44; only the label rule singled out
#: the mark's region there.
FLAG_HELDOUT_PURITY = 0.95
FLAG_LABEL_ACCURACY = 0.8
FLAG_HEAT_CONCENTRATION = 0.5
HOT_SHARE = 0.05


def heat_concentration(heat: torch.Tensor, share: float = HOT_SHARE) -> float | None:
    """The share of the mean heat map's mass (over heat maps ``[n, H, W]``) on its
    hottest ``share`` of pixels: ``share`` for a uniform map, 1 for one hot spot that
    sits at the same place in every image (as a pasted mark does); ``None`` when the
    maps are all zero."""
    mean = heat.double().mean(0).flatten()
    total = float(mean.sum())
    if total <= 0:
        return None
    return float(mean.topk(max(1, math.ceil(share * len(mean)))).values.sum()) / total


def label_stats(region: Region, labels: torch.Tensor, class_names: Sequence[str] | None,
                names: Sequence[str] | None, top: int = 50) -> dict:
    """A region's label mix (``{label name: members}``, largest first; unknown labels
    left out), its label accuracy (members whose label is the predicted class, of those
    with a label) and the members whose label disagrees, in rank order."""
    lab = labels[region.members].cpu()
    known = lab >= 0
    counts = torch.bincount(lab[known]) if bool(known.any()) else torch.zeros(0)
    mix = {_cname(class_names, c): int(n) for c, n in sorted(
        enumerate(counts.tolist()), key=lambda cn: -cn[1]) if n}
    wrong = region.members[known & (lab != region.predicted_class)][:top].tolist()
    n_known = int(known.sum())
    agree = int((lab[known] == region.predicted_class).sum())
    return {"label_mix": mix, "labelled": n_known,
            "label_accuracy": agree / n_known if n_known else None,
            "disagreeing": [{"index": i, "name": names[i] if names else f"#{i}",
                             "label": _cname(class_names, int(labels[i]))} for i in wrong]}


def _cname(class_names: Sequence[str] | None, c: int) -> str:
    return class_names[c] if class_names and 0 <= c < len(class_names) else str(c)


def region_flags(rd: dict) -> list[str]:
    """The flags of a region's JSON entry (see the ``FLAG_*`` rules)."""
    flags = []
    hp = rd.get("heldout_purity")
    if hp is not None and hp < FLAG_HELDOUT_PURITY:
        flags.append(f"held-out purity {100 * hp:.1f}%")
    acc = rd.get("label_accuracy")
    if acc is not None and acc < FLAG_LABEL_ACCURACY:
        flags.append(f"labels agree with {100 * acc:.1f}% of members")
    conc = rd.get("heat_concentration")
    if conc is not None and conc >= FLAG_HEAT_CONCENTRATION:
        flags.append(f"heat on a small area ({100 * conc:.0f}% on the hottest "
                     f"{100 * HOT_SHARE:.0f}% of pixels)")
    return flags


def summary_dict(summary: Summary, class_names: Sequence[str] | None = None,
                 stats: Sequence[RegionStats] | None = None, top: int = 50,
                 names: Sequence[str] | None = None, meta: dict | None = None,
                 labels: torch.Tensor | None = None) -> dict:
    """Everything in a summary as plain JSON data. ``stats`` are the held-out statistics
    of ``summary.regions`` in their order; ``names`` are the references' file names;
    ``labels`` their labels (-1 unknown), which add each region's label mix."""
    per_region = iter(stats) if stats is not None else None
    classes = []
    number = 0
    for cs in summary.classes:
        regions = []
        for region in cs.regions:
            number += 1
            st = next(per_region) if per_region is not None else None
            members = region.members[:top].tolist()
            rd = {
                "region": number, "logic": region.logic,
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
                # a logic boundary (separate logics) has the pair (c, c)
                "boundary_pairs": [[_cname(class_names, a), _cname(class_names, b)
                                    if a != b else "another logic"]
                                   for a, b in region.pairs.tolist()],
            }
            if labels is not None:
                rd.update(label_stats(region, labels, class_names, names, top))
            regions.append(rd)
        classes.append({"class": cs.cls, "name": _cname(class_names, cs.cls),
                        "n_images": cs.n_images, "coverage": cs.coverage,
                        "regions": regions})
    return {"meta": dict(meta or {}), "layer": summary.layer,
            "coverage_target": summary.coverage_target, "max_regions": summary.max_regions,
            "classes": classes}


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
    data = summary_dict(summary, class_names, stats, names=names, meta=meta, labels=labels)

    def member_heat(region: Region, idx: torch.Tensor) -> torch.Tensor:
        if reference_heatmap is not None:
            return reference_heatmap(region, idx)
        return heatmap(region, images[idx])

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
            position += 1
            grid, first = [], None
            shown = region.members[:max_members]
            for i in range(0, len(shown), batch):
                idx = shown[i:i + batch]
                heat = member_heat(region, idx)
                if i == 0:                    # the closest members, drawn once
                    first = heat[:top]
                    rd["heat_concentration"] = heat_concentration(first)
                for j, h in zip(idx.tolist(), heat, strict=True):
                    grid.append({"src": thumbnail(images[j], h, small=True),
                                 "name": names[j] if names else f"#{j}",
                                 "rank": len(grid) + 1,
                                 "label": (_cname(class_names, int(labels[j]))
                                           if labels is not None and int(labels[j]) >= 0
                                           else None)})
            rd.setdefault("heat_concentration", None)
            rd["flags"] = region_flags(rd)
            n = region.size
            far_idx = region.members[max(top, n - far):]
            view = dict(rd, number=k + 1, seed=seed_tiles, class_name=cd["name"],
                        href=f"regions/region-{rd['region']:03d}.html",
                        top=tiles(region, region.members[:top],
                                  first if first is not None and len(first) == min(top, n)
                                  else None),
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
