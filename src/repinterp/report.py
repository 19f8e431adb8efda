"""The HTML report and the JSON summary of a whole-dataset summary."""
from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from jinja2 import Environment, PackageLoader, select_autoescape
from matplotlib import colormaps
from PIL import Image

from .io import write_json, write_text
from .region import RegionExplanation
from .summary import Summary

__all__ = ["RegionStats", "heldout_stats", "overlay_png", "region_stats", "summary_dict", "write_report"]

_JET = colormaps["jet"]


@dataclass
class RegionStats:
    """How a region does on held-out images: how many fall inside, and the share of
    them predicted as the region's class (its purity on held-out data)."""

    inside: int
    purity: float | None


def region_stats(ri: RegionExplanation, features: torch.Tensor,
                 predictions: torch.Tensor) -> RegionStats:
    inside = ri.contains_features(features).cpu()
    n = int(inside.sum())
    pur = int((predictions[inside] == ri.predicted_class).sum()) / n if n else None
    return RegionStats(inside=n, purity=pur)


def heldout_stats(interp: Any, features: torch.Tensor,
                  regions: Sequence[RegionExplanation]) -> dict[int, RegionStats]:
    """:func:`region_stats` of every region on held-out ``features`` ``[n, D]``, keyed by
    ``id(region)``; predictions come from the interpreter's head."""
    preds = interp.logits(features).argmax(1).cpu()
    return {id(ri): region_stats(ri, features, preds) for ri in regions}


def _to_display(image: torch.Tensor) -> np.ndarray:
    """``[C, H, W]`` -> ``[H, W, 3]`` in ``[0, 1]``, min-max scaled for display."""
    a = image.detach().float().cpu()
    a = (a - a.min()) / (a.max() - a.min()).clamp_min(1e-12)
    a = a.permute(1, 2, 0).numpy()
    return np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a[..., :3]


def overlay_png(image: torch.Tensor, heat: torch.Tensor | None = None, *, alpha: float = 0.45,
                scale: int = 3) -> str:
    """A base64 PNG of ``image`` with ``heat`` (``[H, W]`` in ``[0, 1]``) blended on top."""
    rgb = _to_display(image)
    if heat is not None:
        rgb = (1 - alpha) * rgb + alpha * _JET(heat.detach().float().cpu().numpy())[..., :3]
    img = Image.fromarray((rgb * 255).round().astype(np.uint8))
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def summary_dict(summary: Summary, class_names: Sequence[str] | None = None,
                 stats: dict[int, RegionStats] | None = None, top: int = 50,
                 names: Sequence[str] | None = None, **meta: Any) -> dict:
    """Everything in a summary as plain JSON data. ``stats`` maps ``id(region)`` to its
    held-out statistics; ``names`` gives reference file names for the members."""
    def cname(c: int) -> str:
        return class_names[c] if class_names and c < len(class_names) else str(c)

    classes = []
    for cs in summary.classes:
        regions = []
        for ri in cs.regions:
            st = (stats or {}).get(id(ri))
            members = ri.members[:top].tolist()
            regions.append({
                "seed_index": ri.seed_index, "size": ri.size, "purity": ri.purity,
                "num_boundaries": ri.num_boundaries, "delta": ri.delta,
                "min_delta": ri.min_delta, "approximate": ri.approximate,
                "heldout_inside": st.inside if st else None,
                "heldout_purity": st.purity if st else None,
                "top_members": members,
                "top_member_names": [names[i] for i in members] if names else None,
                "top_member_distances": [round(float(d), 6)
                                         for d in ri.member_distances[:top]],
                "boundary_pairs": [[cname(a), cname(b)] for a, b in ri.pairs.tolist()],
            })
        classes.append({"class": cs.cls, "name": cname(cs.cls), "n_images": cs.n_images,
                        "coverage": cs.coverage, "regions": regions})
    return {"meta": meta, "coverage_target": summary.coverage_target,
            "max_regions": summary.max_regions, "classes": classes}


def write_report(out_dir: str | Path, summary: Summary, images: torch.Tensor, *,
                 class_names: Sequence[str] | None = None,
                 stats: dict[int, RegionStats] | None = None,
                 names: Sequence[str] | None = None,
                 seed_images: dict[int, torch.Tensor] | None = None, top: int = 8, far: int = 4,
                 title: str = "repinterp report", meta: dict | None = None) -> Path:
    """Write ``report.html`` (images inline) and ``summary.json`` into ``out_dir``.

    Both files are written atomically. ``images`` are the references the summary was
    fitted on, in the same order; ``seed_images`` maps ``id(region)`` to the seed image
    of a region explained from an outside image.
    """
    out_dir = Path(out_dir)
    meta = dict(meta or {})
    data = summary_dict(summary, class_names, stats, names=names, **meta)
    size = tuple(images.shape[-2:])

    def tiles(ri: RegionExplanation, idx: torch.Tensor) -> list[dict]:
        if len(idx) == 0:
            return []
        heat = ri.heatmap_features(ri.interpreter.store_.rows(idx).view(
            len(idx), *ri.interpreter.shape_), size)
        return [{"png": overlay_png(images[i], h), "index": i,
                 "name": names[i] if names else None}
                for i, h in zip(idx.tolist(), heat, strict=True)]

    sections = []
    for cs, cd in zip(summary.classes, data["classes"]):
        regions = []
        for k, (ri, rd) in enumerate(zip(cs.regions, cd["regions"])):
            if ri.seed_index is not None:
                seed_tiles = tiles(ri, torch.tensor([ri.seed_index]))
            elif seed_images and id(ri) in seed_images:
                img = seed_images[id(ri)]
                heat = ri.heatmap_features(ri.seed_features.view(1, *ri.interpreter.shape_),
                                           size)[0]
                seed_tiles = [{"png": overlay_png(img, heat), "index": -1,
                               "name": "outside image"}]
            else:
                seed_tiles = []
            n = ri.size
            far_idx = ri.members[max(top, n - far):]
            regions.append(dict(rd, number=k + 1, seed=seed_tiles,
                                top=tiles(ri, ri.members[:top]),
                                far=tiles(ri, far_idx), far_start=max(top, n - far) + 1))
        sections.append(dict(cd, regions_view=regions))
    env = Environment(loader=PackageLoader("repinterp", "templates"),
                      autoescape=select_autoescape(["html"]))
    html = env.get_template("report.html").render(title=title, meta=meta, data=data,
                                                  sections=sections)
    write_json(out_dir / "summary.json", data)
    write_text(out_dir / "report.html", html)
    return out_dir / "report.html"
