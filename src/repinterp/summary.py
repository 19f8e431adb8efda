"""Whole-dataset summary by peeling off regions, class by class."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from .region import RegionExplanation

if TYPE_CHECKING:
    from .interpreter import RepresentativeInterpreter

__all__ = ["ClassSummary", "Summary", "summarize"]


@dataclass
class ClassSummary:
    """Regions of one predicted class, largest first."""

    cls: int
    n_images: int
    regions: list[RegionExplanation]
    covered: int

    @property
    def coverage(self) -> float:
        """Share of the class's references inside at least one of its regions."""
        return self.covered / self.n_images if self.n_images else 0.0


@dataclass
class Summary:
    classes: list[ClassSummary]
    coverage_target: float
    max_regions: int

    def __iter__(self):
        return iter(self.classes)

    @property
    def regions(self) -> list[RegionExplanation]:
        return [r for c in self.classes for r in c.regions]

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
            for ri in cs.regions:  # largest first: the first match wins
                free = of_class[where[of_class] < 0]
                inside = ri.contains_features(features[free.to(features.device)]).cpu()
                where[free[inside]] = k
                k += 1
        return where


def summarize(interp: "RepresentativeInterpreter", coverage: float = 0.95,
              max_regions: int = 10, classes: list[int] | None = None) -> Summary:
    """Peel off regions until ``coverage`` of each predicted class is covered.

    For each predicted class ``c``: take as seed the remaining reference of class ``c``
    with the largest top-2 margin, explain it, mark every class-``c`` reference inside
    its region as covered, and repeat until the covered share reaches ``coverage`` or
    ``max_regions`` regions were found. Regions are returned largest first.
    """
    if not 0 < coverage <= 1:
        raise ValueError("coverage must be in (0, 1]")
    interp._check_fitted()
    preds = interp.predictions_
    margins = interp.margins_
    wanted = sorted(set(preds.tolist())) if classes is None else list(classes)
    out = []
    bar = tqdm(total=len(wanted) * max_regions, desc="summary", unit="region",
               disable=not interp.progress, leave=False)
    for c in wanted:
        of_class = preds == c
        n = int(of_class.sum())
        covered = torch.zeros_like(of_class)
        left = of_class.clone()
        regions: list[RegionExplanation] = []
        while (len(regions) < max_regions and left.any()
               and int((covered & of_class).sum()) < coverage * n):
            seed = int(torch.where(left, margins, -torch.inf).argmax())
            ri = interp.explain(seed)
            inside = torch.zeros_like(of_class)
            inside[ri.members] = True
            covered |= inside & of_class
            left &= ~inside
            left[seed] = False
            regions.append(ri)
            bar.update(1)
        bar.update(max_regions - len(regions))
        regions.sort(key=lambda r: -r.size)
        out.append(ClassSummary(cls=int(c), n_images=n, regions=regions,
                                covered=int((covered & of_class).sum())))
    bar.close()
    return Summary(classes=out, coverage_target=coverage, max_regions=max_regions)
