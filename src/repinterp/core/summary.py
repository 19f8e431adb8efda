"""A whole-dataset summary: a few regions per predicted class, as plain values.

Built by :meth:`repinterp.RepresentativeInterpreter.summarize`; here only the value, its
plain-data form for saving (:meth:`Summary.to_dict`), and locating new images.
"""
from __future__ import annotations

import html
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from .errors import UserError
from .progress import progress_bar
from .region import Region
from .summary_schema import (
    SUMMARY_VERSION,
    SummaryMeta,
    check_summary_data,
    needs_boundary_points,
)

__all__ = ["SUMMARY_VERSION", "ClassSummary", "Summary", "SummaryMeta", "peel"]


@dataclass
class ClassSummary:
    """Regions of one predicted class, largest first."""

    cls: int
    n_images: int
    regions: list[Region]
    covered: int

    @property
    def coverage(self) -> float:
        """Share of the class's references inside at least one of its regions."""
        return self.covered / self.n_images if self.n_images else 0.0

    def __repr__(self) -> str:
        return (f"ClassSummary(class {self.cls}, {len(self.regions)} regions covering "
                f"{self.covered} of {self.n_images})")


@dataclass
class Summary:
    """Regions of every predicted class, with what is needed to use them again: the
    layer they live after and, in ``meta``, free-form facts (model, references, seed)."""

    classes: list[ClassSummary]
    coverage_target: float
    max_regions: int
    layer: str = ""
    meta: dict = field(default_factory=dict)

    @classmethod
    def of_region(cls, region: Region, predictions: torch.Tensor, layer: str = "",
                  meta: dict | None = None) -> Summary:
        """A summary holding one region (an explanation, e.g. for a report), its class's
        counts taken from the references' ``predictions``."""
        c = region.predicted_class
        return cls.single(region, int((predictions.cpu() == c).sum()), layer=layer,
                          meta=meta)

    @classmethod
    def single(cls, region: Region, class_size: int, layer: str = "",
               meta: dict | None = None) -> Summary:
        """A summary holding one region whose class has ``class_size`` references: it
        covers its members predicted as its class (``purity x size``)."""
        covered = min(round(region.purity * region.size), class_size)
        return cls([ClassSummary(region.predicted_class, class_size, [region], covered)],
                   1.0, 1, layer=layer, meta=dict(meta or {}))

    def one_region(self, position: int) -> Summary:
        """A summary of the region at ``position`` in :attr:`regions` alone, counted as
        :meth:`single` counts, with this summary's layer and meta."""
        if not 0 <= position < len(self.regions):
            raise UserError(f"region {position} out of range 0..{len(self.regions) - 1}")
        region = self.regions[position]
        cs = next(c for c in self.classes if c.cls == region.predicted_class)
        return Summary.single(region, cs.n_images, layer=self.layer, meta=self.meta)

    def __iter__(self) -> Iterator[ClassSummary]:
        return iter(self.classes)

    @property
    def class_names(self) -> list[str] | None:
        """The model's class names, for display (the meta's ``class_names``: set by an
        interpreter given ``class_names`` or by the pipeline), else ``None``."""
        names = self.meta.get("class_names")
        return list(names) if isinstance(names, (list, tuple)) and all(
            isinstance(n, str) for n in names) else None

    def class_name(self, cls: int) -> str:
        """Class ``cls`` in words: its name, else ``"class 9"``."""
        names = self.class_names
        return names[cls] if names and 0 <= cls < len(names) else f"class {cls}"

    def _repr_html_(self) -> str:
        """A notebook's view: per class, its regions' sizes and purity and the share
        covered. Self-contained HTML."""
        head = ("<tr><th>class</th><th>images</th><th>regions</th><th>covered</th>"
                "<th>sizes (purity)</th></tr>")
        body = "".join(
            f"<tr><td>{html.escape(self.class_name(c.cls))}</td><td>{c.n_images}</td>"
            f"<td>{len(c.regions)}</td>"
            f"<td>{100 * c.coverage:.1f}%</td><td>" + ", ".join(
                f"{r.size} ({100 * r.purity:.1f}%)" for r in c.regions) + "</td></tr>"
            for c in self.classes)
        caption = html.escape(f"Summary after layer {self.layer!r}: "
                              f"{len(self.regions)} regions")
        return f"<table><caption>{caption}</caption>{head}{body}</table>"

    def __repr__(self) -> str:
        names = self.class_names
        per_class = ", ".join(
            f"{names[c.cls] if names and c.cls < len(names) else c.cls}: "
            f"{len(c.regions)} ({c.coverage:.0%})" for c in self.classes)
        return (f"Summary({len(self.regions)} regions after {self.layer!r}; class: regions "
                f"(coverage) {per_class})")

    @property
    def regions(self) -> list[Region]:
        """Every region, class by class, largest first within a class."""
        return [r for c in self.classes for r in c.regions]

    @property
    def holdout_purity(self) -> float | None:
        """The purity contract's pooled figure (:mod:`repinterp.core.contract`): of the
        held-out references inside the regions, the share predicted as the region's
        class (``None`` without a contract or when none falls inside one)."""
        counts = [r.holdout for r in self.regions if r.holdout is not None]
        inside = sum(c[0] for c in counts)
        return sum(c[1] for c in counts) / inside if inside else None

    @property
    def record(self) -> SummaryMeta:
        """:attr:`meta` as its typed record (:class:`SummaryMeta`); a meta that lacks a
        field or holds a wrong type is a :class:`UserError` naming it."""
        return SummaryMeta.parse(self.meta)

    def to_dict(self) -> dict:
        """Plain data (tensors, numbers, strings) of schema :data:`SUMMARY_VERSION`:
        ``torch.save`` it and load it with ``weights_only=True``; :meth:`from_dict`
        rebuilds and checks the summary. Every field of every region is written
        (:func:`dataclasses.fields`), so a field added to :class:`Region` is saved too;
        but the boundary points (as large as the boundaries) only for a heat map that
        needs them (``logprob``, :attr:`HeatmapMethod.needs_class_gradients`): what
        ``explain --summary`` reads is the boundaries, the members and their distances."""
        points = needs_boundary_points(self.meta.get("heatmap_method"))

        def region(r: Region) -> dict:
            d = r.to_dict()
            if not points:
                d.pop("boundary_points")
            return d

        return {"version": SUMMARY_VERSION,
                "classes": [{"cls": c.cls, "n_images": c.n_images, "covered": c.covered,
                             "regions": [region(r) for r in c.regions]}
                            for c in self.classes],
                "coverage_target": self.coverage_target, "max_regions": self.max_regions,
                "layer": self.layer, "meta": dict(self.meta)}

    @classmethod
    def from_dict(cls, data: dict) -> Summary:
        """The summary of :meth:`to_dict`'s data, every field checked: the schema
        version, the meta's record (:class:`SummaryMeta`), classes within the recorded
        number of classes, member indices within the recorded references, finite numbers,
        and every region's shapes against the recorded feature shape. Anything else is a
        :class:`UserError` saying what is wrong (one line)."""
        return check_summary_data(data)

    def locate_features(self, features: torch.Tensor,
                        predictions: torch.Tensor) -> torch.Tensor:
        """For each feature vector ``[n, D]``, the index (into :attr:`regions`) of the
        largest region of its predicted class that contains it, or -1.

        This is how a new image is explained: by the region it falls in.
        """
        where = torch.full((len(features),), -1, dtype=torch.long)
        preds = predictions.cpu()
        k = 0
        for cs in self.classes:
            of_class = (preds == cs.cls).nonzero()[:, 0]
            for region in cs.regions:  # largest first: the first match wins
                free = of_class[where[of_class] < 0]
                inside = region.contains_features(features[free.to(features.device)]).cpu()
                where[free[inside]] = k
                k += 1
        return where


def peel(predictions: torch.Tensor, margins: torch.Tensor,
         explain: Callable[[int], Region | None] | None, coverage: float, max_regions: int,
         classes: list[int] | None = None, progress: bool = False, *,
         explain_many: Callable[[list[int]], Sequence[Region | None]] | None = None,
         seedable: torch.Tensor | None = None) -> list[ClassSummary]:
    """Peel each predicted class into regions: take as seed the remaining image of the
    class with the largest top-2 margin, ``explain`` it, mark every image of the class
    inside its region as covered, and repeat until the covered share reaches
    ``coverage`` or ``max_regions`` regions were found. Regions come largest first.

    ``explain`` may give up a seed (``None``: a purity contract's region that met its
    target at no level, :mod:`repinterp.core.contract`): the seed is not taken again and
    nothing is covered; a class stops after ``2 * max_regions`` seeds. ``seedable``
    (bool ``[N]``, default all): the images that may be seeds.

    The classes are peeled side by side: each round takes the next seed of every class
    not yet done, and ``explain_many`` (when given; ``explain`` may then be None)
    explains them together (one set of head passes for the boundary searches of every
    class). A class's regions depend only on its own seeds, so they are those of peeling
    one class after the other."""
    if not 0 < coverage <= 1:
        raise UserError("coverage must be in (0, 1]")
    if max_regions < 1:
        raise UserError("max_regions must be at least 1")
    wanted = sorted(set(predictions.tolist())) if classes is None else list(classes)
    if explain_many is not None:
        many = explain_many
    elif explain is not None:
        one = explain
        many = lambda seeds: [one(i) for i in seeds]  # noqa: E731
    else:
        raise ValueError("peel needs explain or explain_many")
    predictions, margins = predictions.cpu(), margins.cpu()
    # per class: its images (ascending), which are covered and which are left as seeds;
    # ``position`` maps an image to its place in its class's list
    members = {c: (predictions == c).nonzero()[:, 0] for c in wanted}
    position = torch.zeros(len(predictions), dtype=torch.long)
    for idx in members.values():
        position[idx] = torch.arange(len(idx))
    covered = {c: torch.zeros(len(members[c]), dtype=torch.bool) for c in wanted}
    can = torch.ones(len(predictions), dtype=torch.bool) if seedable is None \
        else seedable.cpu()
    left = {c: can[members[c]].clone() for c in wanted}
    regions: dict[int, list[Region]] = {c: [] for c in wanted}

    tried = dict.fromkeys(wanted, 0)

    def going(c: int) -> bool:
        return (len(regions[c]) < max_regions and tried[c] < 2 * max_regions
                and bool(left[c].any())
                and int(covered[c].sum()) < coverage * len(members[c]))

    def seed_of(c: int) -> int:
        """The image left with the largest margin (the first on a tie)."""
        m = torch.where(left[c], margins[members[c]], -torch.inf)
        return int(members[c][m.argmax()])

    found = 0
    with progress_bar(total=len(wanted), desc="summary", unit="class",
                      enabled=progress) as bar:
        active = [c for c in wanted if going(c)]
        bar.update(len(wanted) - len(active))
        while active:
            seeds = [seed_of(c) for c in active]
            for c, seed, region in zip(active, seeds, many(seeds), strict=True):
                left[c][position[seed]] = False
                tried[c] += 1
                if region is None:
                    continue
                inside = region.members.cpu()
                mine = position[inside[predictions[inside] == c]]
                covered[c][mine] = True
                left[c][mine] = False
                regions[c].append(region)
                found += 1
            bar.set_postfix_str(f"{found} regions", refresh=False)
            still = [c for c in active if going(c)]
            bar.update(len(active) - len(still))
            active = still
    out = []
    for c in wanted:
        regions[c].sort(key=lambda r: -r.size)
        out.append(ClassSummary(cls=int(c), n_images=len(members[c]), regions=regions[c],
                                covered=int(covered[c].sum())))
    return out

