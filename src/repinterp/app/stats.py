"""A region's statistics, computed once: on held-out images (how many fall inside, how
pure), against labels (mix, accuracy, disagreeing members), its heat maps' concentration,
and the flags a report leads with; :func:`summary_dict` gathers them with the summary
into the plain data written to ``summary.json``. The report only renders that data."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..core.contract import interval
from ..core.metrics import wilson_interval
from ..core.region import Region
from ..core.summary import Summary

__all__ = ["FLAG_HEAT_CONCENTRATION", "FLAG_HELDOUT_PURITY", "FLAG_LABEL_ACCURACY",
           "HOT_SHARE", "RegionStats", "class_name", "contract_stats", "flag_order",
           "heat_concentration",
           "heldout_figures", "heldout_stats", "label_stats", "region_flags", "region_stats",
           "report_order", "summary_dict"]


@dataclass
class RegionStats:
    """How a region does on held-out images: how many fall inside, the share of them
    predicted as the region's class (its purity on held-out data) and that share's 95%
    Wilson interval (:func:`repinterp.core.metrics.wilson_interval`)."""

    inside: int
    purity: float | None
    interval: tuple[float, float] | None = None


def region_stats(region: Region, features: torch.Tensor,
                 predictions: torch.Tensor) -> RegionStats:
    """:class:`RegionStats` of ``region`` on held-out ``features`` ``[n, D]``."""
    inside = region.contains_features(features).cpu()
    n = int(inside.sum())
    k = int((predictions[inside] == region.predicted_class).sum())
    return RegionStats(inside=n, purity=k / n if n else None,
                       interval=wilson_interval(k, n) if n else None)


def contract_stats(regions: Sequence[Region]) -> list[RegionStats] | None:
    """:class:`RegionStats` of every region from its purity contract's held-out
    references (:attr:`Region.holdout`), or ``None`` when the regions have none."""
    if not regions or any(r.holdout is None for r in regions):
        return None
    return [RegionStats(inside=n, purity=r.holdout_purity, interval=interval(r))
            for r in regions for n in [(r.holdout or (0, 0))[0]]]


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
    mix = {class_name(class_names, c): int(n) for c, n in sorted(
        enumerate(counts.tolist()), key=lambda cn: -cn[1]) if n}
    wrong = region.members[known & (lab != region.predicted_class)][:top].tolist()
    n_known = int(known.sum())
    agree = int((lab[known] == region.predicted_class).sum())
    return {"label_mix": mix, "labelled": n_known,
            "label_accuracy": agree / n_known if n_known else None,
            "label_disagreements": n_known - agree,
            "disagreeing": [{"index": i, "name": names[i] if names else f"#{i}",
                             "label": class_name(class_names, int(labels[i]))} for i in wrong]}


def class_name(class_names: Sequence[str] | None, c: int) -> str:
    """The name of class ``c`` (its index when there are no names for it)."""
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


def flag_order(rd: dict) -> tuple:
    """The sort key of a flagged region in the report's list (most telling first): the
    members whose label disagrees with the prediction, most first (a shortcut pulls in
    images of many classes: on the planted-shortcut benchmark the marked bags' region had
    72 such members, the next flagged region 45; chosen there on the bag setting, seed
    0), then the lowest held-out purity, then the region number."""
    hp = rd.get("heldout_purity")
    return (-(rd.get("label_disagreements") or 0), 1.0 if hp is None else hp, rd["region"])


def report_order(data: dict) -> list[int]:
    """The region numbers of :func:`summary_dict` ``data`` in the order a reader of the
    report meets them: the flagged regions first (by :func:`flag_order`), then the
    others class by class, each region once."""
    regions = [rd for cd in data["classes"] for rd in cd["regions"]]
    flagged = sorted((rd for rd in regions if rd["flags"]), key=flag_order)
    return [rd["region"] for rd in flagged] + [rd["region"] for rd in regions
                                               if not rd["flags"]]


#: A region that adds fewer than this share of its class's images (and fewer than
#: :data:`MINOR_IMAGES`) is folded in reports
MINOR_SHARE = 0.02
MINOR_IMAGES = 3


def minor_limit(class_images: int) -> int:
    """The images a region must add to its class not to be folded in a report:
    ``max(MINOR_IMAGES, ceil(MINOR_SHARE * class_images))``."""
    return max(MINOR_IMAGES, math.ceil(MINOR_SHARE * class_images))


def summary_dict(summary: Summary, class_names: Sequence[str] | None = None,
                 stats: Sequence[RegionStats] | None = None, top: int = 50,
                 names: Sequence[str] | None = None, meta: dict | None = None,
                 labels: torch.Tensor | None = None,
                 top_heat: Sequence[torch.Tensor] | None = None,
                 numbers: Sequence[int] | None = None) -> dict:
    """Everything in a summary and its statistics as plain JSON data. ``stats`` are the
    held-out statistics of ``summary.regions`` in their order; ``names`` are the
    references' file names; ``labels`` their labels (-1 unknown), which add each region's
    label mix; ``top_heat`` the heat maps of each region's closest members (in the same
    order), which give its ``heat_concentration``; ``numbers`` the regions' numbers when
    they are not 1, 2, ... (a region of a larger summary keeps its number). Each region
    gets its ``flags`` and ``adds`` (its members that no earlier, larger region of its
    class holds: regions overlap) and ``minor`` (it adds fewer than
    :func:`minor_limit` images and is neither its class's first region nor flagged:
    reports fold it), each class the mean held-out purity of its regions."""
    per_region = iter(stats) if stats is not None else None
    heat = iter(top_heat) if top_heat is not None else None
    number_of = iter(numbers) if numbers is not None else iter(
        range(1, len(summary.regions) + 1))
    classes: list[dict[str, Any]] = []
    size = 1 + max((int(r.members.max()) for r in summary.regions if r.size), default=-1)
    for cs in summary.classes:
        regions: list[dict[str, Any]] = []
        seen = torch.zeros(size, dtype=torch.bool)     # one byte per image, not a set
        for region in cs.regions:
            number = next(number_of)
            st = next(per_region) if per_region is not None else None
            inside = region.members.cpu()
            adds = len(torch.unique(inside[~seen[inside]]))
            seen[inside] = True
            members = region.members[:top].tolist()
            rd = {
                "region": number, "logic": region.logic,
                "seed_index": region.seed_index, "size": region.size, "adds": adds,
                "purity": region.purity, "num_boundaries": region.num_boundaries,
                "delta": region.delta, "min_delta": region.min_delta,
                "approximate": region.approximate,
                "heldout_inside": st.inside if st else None,
                "heldout_purity": st.purity if st else None,
                "heldout_interval": list(st.interval) if st and st.interval else None,
                "top_members": members,
                "top_member_names": [names[i] for i in members] if names else None,
                "top_member_distances": [round(float(d), 6)
                                         for d in region.member_distances[:top]],
                # a logic boundary (separate logics) has the pair (c, c)
                "boundary_pairs": [[class_name(class_names, a), class_name(class_names, b)
                                    if a != b else "another logic"]
                                   for a, b in region.pairs.tolist()],
            }
            if labels is not None:
                rd.update(label_stats(region, labels, class_names, names, top))
            maps = next(heat) if heat is not None else None
            rd["heat_concentration"] = (heat_concentration(maps) if maps is not None
                                        and len(maps) else None)
            rd["flags"] = region_flags(rd)
            rd["minor"] = bool(regions) and not rd["flags"] and adds < minor_limit(
                cs.n_images)
            regions.append(rd)
        measured = [r["heldout_purity"] for r in regions if r["heldout_purity"] is not None]
        classes.append({"class": cs.cls, "name": class_name(class_names, cs.cls),
                        "n_images": cs.n_images, "coverage": cs.coverage,
                        "heldout_purity": sum(measured) / len(measured) if measured
                        else None, "regions": regions})
    every = [r for c in classes for r in c["regions"]]
    size = sum(r["size"] for r in every)
    held = [r for r in every if r["heldout_purity"] is not None]
    inside = sum(r["heldout_inside"] for r in held)
    return {"meta": dict(meta or {}), "layer": summary.layer,
            "coverage_target": summary.coverage_target, "max_regions": summary.max_regions,
            # the share of images inside a region that the network predicts as its class
            # (pooled over regions): how faithful the regions are, measured
            "fidelity": {"references": sum(r["size"] * r["purity"] for r in every) / size
                         if size else None,
                         "heldout": sum(r["heldout_inside"] * r["heldout_purity"]
                                        for r in held) / inside if inside else None},
            "tangent": any(r["approximate"] for r in every), "classes": classes}
