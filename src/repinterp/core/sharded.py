"""The region index's greedy and summary with the rows left where they are.

A :class:`RegionIndex` holds every row in one process. Here the rows live in
:class:`RowGroup` s (contiguous ranges of images, one per worker: in this process, or a
Ray actor each, :mod:`repinterp.app.index`), and the driver, :class:`ShardedIndex`,
holds the bank and runs the region engine (:func:`repinterp.core.engine.region`) over
:class:`GroupCounts`, the counts backend that reduces the groups' answers: a group
answers, per candidate boundary, how many images of the seed's class and of other
classes still covered it would exclude (two integer vectors the length of the
candidates), the driver adds them up and the engine picks the boundary, which goes back
to every group. Pruning, ranking, purity and the next seed of a summary are reductions
the same way. The driver's memory is the bank, a few vectors of its length, and the
regions it returns (their members); never the rows.

Each group counts with the in-process backend (:class:`~repinterp.core.greedy.BitCounts`
over its rows), the tallies are integer sums, and the members' distances are computed
row by row by the same function as :class:`RegionIndex`'s, so the regions equal
:meth:`RegionIndex.explain` / :meth:`RegionIndex.summarize`'s bit for bit (tested).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from . import defaults
from .contract import LEVELS, Level, check_contract, contract_meta, holdout_mask, tightened
from .engine import purity_stop, region
from .errors import UserError
from .greedy import BitCounts, Members, Tally
from .index import (
    Bank,
    IndexRows,
    RegionIndex,
    column_bits,
    oriented_bits,
    oriented_boundaries,
    oriented_values,
    seed_row,
    signs_at,
)
from .region import Region
from .summary import ClassSummary, Summary

__all__ = ["GroupCounts", "RowGroup", "ShardedIndex", "local_groups"]


class RowGroup:
    """The rows of images ``offset .. offset + n - 1`` and the greedy's state on them.

    Lives where its rows are (a worker); every method returns small values (counts,
    vectors the length of the bank, the indices of a region's members in its range).
    """

    def __init__(self, offset: int, rows: IndexRows, bank_size: int):
        self.offset, self.rows, self.bank_size = int(offset), rows, int(bank_size)
        self.n = len(rows)
        self.cols, self.valid = column_bits(rows.signs, self.bank_size)
        self.inside = torch.zeros(0, dtype=torch.long)  # the last region's members

    # --- rows and classes --------------------------------------------------------
    def size(self) -> int:
        return self.n

    def row(self, index: int) -> IndexRows | None:
        """The row of image ``index`` (global), or None when it is not in this group.
        A copy: a slice is a view, and pickling a view (to send it to the driver) sends
        its whole storage, every row of the group."""
        i = index - self.offset
        return self.rows.slice(i, i + 1).clone() if 0 <= i < self.n else None

    def class_counts(self, classes: int) -> np.ndarray:
        return np.bincount(self.rows.predictions.numpy(), minlength=classes)

    def held(self, holdout: tuple[float, int] | None) -> np.ndarray | None:
        """Which of this group's rows a purity contract ``(share, seed)`` holds out
        (:func:`~repinterp.core.contract.holdout_mask` of their global indices)."""
        if holdout is None:
            return None
        if getattr(self, "_held", (None,))[0] != holdout:
            idx = torch.arange(self.offset, self.offset + self.n)
            self._held = (holdout, holdout_mask(idx, *holdout).numpy())
        return self._held[1]

    def start_class(self, cls: int, holdout: tuple[float, int] | None = None) -> int:
        """A summary starts on class ``cls``: every image of it is left to cover, and
        to seed but the ones a purity contract ``holdout`` holds out."""
        self.of_class = (self.rows.predictions == cls).numpy()
        held = self.held(holdout)
        self.left_mask = self.of_class.copy() if held is None else self.of_class & ~held
        self.covered_mask = np.zeros(self.n, dtype=bool)
        return int(self.of_class.sum())

    def best_seed(self) -> tuple[float, int] | None:
        """The largest margin among the images left, and the first image that has it."""
        if not self.left_mask.any():
            return None
        m = torch.where(torch.from_numpy(self.left_mask), self.rows.margins, -torch.inf)
        i = int(m.argmax())
        return float(m[i]), self.offset + i

    def mark(self, seed: int, cover: bool = True) -> tuple[int, bool]:
        """The last region covers its members of the class (unless ``cover`` is false: a
        seed given up); they and ``seed`` are not left. Returns the images of the class
        covered so far and whether any is left."""
        hit = np.zeros(self.n, dtype=bool)
        if cover:
            hit[self.inside.numpy()] = True
        self.covered_mask |= hit & self.of_class
        self.left_mask &= ~hit
        if 0 <= seed - self.offset < self.n:
            self.left_mask[seed - self.offset] = False
        return int(self.covered_mask.sum()), bool(self.left_mask.any())

    # --- one region's greedy: the counts protocol on this group's rows ----------
    def begin(self, cand: torch.Tensor, seed_side: torch.Tensor, cls: int,
              holdout: tuple[float, int] | None = None) -> tuple[int, int]:
        """A seed of class ``cls`` with candidates ``cand`` (bank columns) and its sides
        of them (True: positive): this group's :class:`BitCounts`, everything covered,
        the rows a purity contract ``holdout`` holds out not counted. Returns its
        ``start()``: its part of the smallest feasible delta and its images of other
        classes."""
        signs = torch.where(seed_side, 1.0, -1.0)
        self.bits = BitCounts(oriented_bits(self.cols, self.valid, cand, seed_side),
                              (self.rows.predictions == cls).numpy(),
                              values=oriented_values(self.rows.values, cand, signs),
                              offset=self.offset, ignore=self.held(holdout))
        return self.bits.start()

    def counts(self) -> Tally:
        return self.bits.counts()

    def apply(self, h: int) -> None:
        self.bits.apply(h)

    def step(self, h: int) -> Tally:
        return self.bits.step(h)

    def prune_start(self, chosen: list[int]) -> None:
        self.bits.prune_start(chosen)

    def prune_needed(self, j: int) -> bool:
        return self.bits.prune_needed(j)

    def prune_drop(self, j: int) -> None:
        self.bits.prune_drop(j)

    def finish(self, columns: torch.Tensor, origin: torch.Tensor) -> Members:
        """The region's members in this group (global indices, ascending) and their
        distances (:meth:`BitCounts.finish`); kept for :meth:`mark`."""
        found = self.bits.finish(columns, origin)
        self.inside = found.members - self.offset
        return found


class GroupCounts:
    """The engine's counts backend over row groups: ``call(name, *args)`` runs a
    :class:`RowGroup` method on every group and returns their answers in order; tallies
    are summed, pruning asks whether any group needs a boundary, members are concatenated
    (groups are contiguous and in order, so members stay ascending).

    Parameters
    ----------
    call
        As for :class:`ShardedIndex`.
    cand, seed_side, cls, holdout
        The seed's candidates (bank columns), its sides of them, its class and a purity
        contract's ``(share, seed)`` (or None), sent to every group by :meth:`start`.
    """

    def __init__(self, call: Callable[..., list], cand: torch.Tensor, seed_side: torch.Tensor,
                 cls: int, holdout: tuple[float, int] | None = None):
        self.call, self.cand, self.seed_side, self.cls = call, cand, seed_side, int(cls)
        self.holdout = holdout
        self.steps = 0                            # greedy steps sent (for the record)

    def start(self) -> tuple[int, int]:
        parts = self.call("begin", self.cand, self.seed_side, self.cls, self.holdout)
        others = sum(p[1] for p in parts)
        if others == 0:
            raise UserError(f"every indexed image is predicted as class {self.cls}")
        return sum(p[0] for p in parts), others

    @staticmethod
    def _sum(answers: list) -> Tally:
        return Tally(sum(a[0] for a in answers), sum(a[1] for a in answers),
                     np.asarray(np.sum([a[2] for a in answers], axis=0, dtype=np.int64)),
                     np.asarray(np.sum([a[3] for a in answers], axis=0, dtype=np.int64)))

    def counts(self) -> Tally:
        return self._sum(self.call("counts"))

    def step(self, h: int) -> Tally:
        self.steps += 1
        return self._sum(self.call("step", h))

    def prune_start(self, chosen: list[int]) -> None:
        self.call("prune_start", chosen)

    def prune_needed(self, j: int) -> bool:
        return any(self.call("prune_needed", j))

    def prune_drop(self, j: int) -> None:
        self.call("prune_drop", j)

    def finish(self, columns: torch.Tensor, origin: torch.Tensor) -> Members:
        parts = self.call("finish", columns, origin)
        held = [p[4] for p in parts if p[4] is not None]
        return Members(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]),
                       sum(p[2] for p in parts), sum(p[3] for p in parts),
                       (sum(h[0] for h in held), sum(h[1] for h in held)) if held else None)


def local_groups(rows: IndexRows, bank_size: int, groups: int = 1) -> list[RowGroup]:
    """``rows`` cut into ``groups`` contiguous :class:`RowGroup` s in this process."""
    n = len(rows)
    cuts = np.linspace(0, n, groups + 1).round().astype(int)
    return [RowGroup(int(a), rows.slice(int(a), int(b)), bank_size)
            for a, b in zip(cuts[:-1], cuts[1:], strict=True) if b > a]


def _local_call(groups: Sequence[RowGroup]) -> Callable[..., list]:
    def call(name: str, *args: Any) -> list:
        return [getattr(g, name)(*args) for g in groups]
    return call


class ShardedIndex:
    """The greedy, ranking and summary of a region index whose rows stay in
    :class:`RowGroup` s: ``call(name, *args)`` runs a method on every group and returns
    their answers in the groups' order (in this process: :func:`local_groups`; on Ray:
    :class:`repinterp.app.index.RayGroups`).

    The same :meth:`explain` and :meth:`summarize` as :class:`RegionIndex`, the same
    regions."""

    def __init__(self, bank: Bank, feature_shape: tuple[int, ...], call: Callable[..., list],
                 *, layer: str = "", meta: dict | None = None, classes: int = 0):
        self.bank, self.feature_shape, self.call = bank, tuple(feature_shape), call
        self.layer, self.meta = layer, dict(meta or {})
        self.n = sum(call("size"))
        self.classes = classes or int(self.bank.working.pairs.max()) + 1
        self.steps = 0                           # greedy steps sent (for the record)
        self._norms = bank.working.weights.double().norm(dim=1).float().cpu()

    @classmethod
    def local(cls, rows: IndexRows, bank: Bank, feature_shape: tuple[int, ...],
              groups: int = 1, **kw: Any) -> ShardedIndex:
        return cls(bank, feature_shape, _local_call(local_groups(rows, len(bank), groups)),
                   **kw)

    def __len__(self) -> int:
        return self.n

    def class_counts(self) -> np.ndarray:
        """Indexed images per predicted class (a reduction)."""
        return np.sum(self.call("class_counts", self.classes), axis=0)

    @property
    def approximate(self) -> bool:
        """True when the bank's boundaries are tangent planes of a smooth head."""
        return self.bank.approximate

    @property
    def min_purity_(self) -> float | None:
        """As :attr:`RegionIndex.min_purity_`."""
        return purity_stop("auto", self.approximate)

    def explain(self, seed: int | IndexRows, *, delta: int | None = None,
                num_boundaries: int | None = None,
                min_purity: float | str | None = "auto",
                holdout: tuple[float, int] | None = None, close: int = 0) -> Region:
        """As :meth:`RegionIndex.explain`: the engine over :class:`GroupCounts`."""
        index, row = seed_row(seed, self.n, lambda i: next(
            r for r in self.call("row", i) if r is not None))
        cls = int(row.predictions[0])
        cand = RegionIndex.candidates(self.bank, cls, row.values[0].float(), num_boundaries,
                                      self._norms)
        seed_side = signs_at(row.signs, cand)[0]
        signs = torch.where(seed_side, 1.0, -1.0)
        counts = GroupCounts(self.call, cand, seed_side, cls, holdout)
        try:
            return region(counts, row.values[0, cand].float() * signs,
                          oriented_boundaries(self.bank, cand, signs), cls,
                          seed_index=index, delta=delta,
                          min_purity=purity_stop(min_purity, self.approximate),
                          feature_shape=self.feature_shape, approximate=self.approximate,
                          close=close, stacklevel=3)
        finally:
            self.steps += counts.steps

    def summarize(self, coverage: float = defaults.COVERAGE,
                  max_regions: int = defaults.MAX_REGIONS,
                  classes: list[int] | None = None, progress: bool = False,
                  num_boundaries: int | None = None,
                  min_purity: float | str | None = "auto",
                  target_purity: float | None = defaults.TARGET_PURITY,
                  holdout: float = defaults.HOLDOUT, seed: int = 0,
                  ladder: Sequence[Level] = LEVELS) -> Summary:
        """As :meth:`RegionIndex.summarize` (:func:`~repinterp.core.summary.peel`), each
        seed found by a reduction (the largest margin left, the first image on a tie);
        the purity contract's held-out rows decided by each group for its own rows."""
        from .progress import progress_bar
        if not 0 < coverage <= 1:
            raise UserError("coverage must be in (0, 1]")
        if max_regions < 1:
            raise UserError("max_regions must be at least 1")
        check_contract(target_purity, holdout, ladder)
        contract = None if target_purity is None else (float(holdout), int(seed))

        def grow(seeds: list[int], level: Level) -> list[Region]:
            return [self.explain(i, num_boundaries=level.candidates(num_boundaries),
                                 min_purity=level.stop(min_purity), holdout=contract,
                                 close=level.close) for i in seeds]
        counts = self.class_counts()
        wanted = [int(c) for c in np.nonzero(counts)[0]] if classes is None else list(classes)
        out = []
        with progress_bar(total=len(wanted), desc="summary", unit="class",
                          enabled=progress) as bar:
            for c in wanted:
                n = sum(self.call("start_class", c, contract))
                covered, left, tried = 0, n > 0, 0
                regions: list[Region] = []
                while len(regions) < max_regions and left and covered < coverage * n \
                        and tried < 2 * max_regions:
                    best = [b for b in self.call("best_seed") if b is not None]
                    if not best:                      # only held-out images are left
                        break
                    first = min(best, key=lambda mi: (-mi[0], mi[1]))[1]
                    found: Region | None = self.explain(
                        first, num_boundaries=num_boundaries, min_purity=min_purity) \
                        if contract is None else \
                        tightened(grow, [first], float(target_purity or 0), tuple(ladder))[0]
                    marks = self.call("mark", first, found is not None)
                    covered = sum(m[0] for m in marks)
                    left = any(m[1] for m in marks)
                    tried += 1
                    if found is not None:
                        regions.append(found)
                bar.update(1)
                regions.sort(key=lambda r: -r.size)
                out.append(ClassSummary(cls=c, n_images=n, regions=regions, covered=covered))
        return Summary(classes=out, coverage_target=coverage, max_regions=max_regions,
                       layer=self.layer, meta={**self.meta, "references": self.n,
                                               "bank": len(self.bank),
                                               "approximate": self.approximate,
                                               "num_boundaries": num_boundaries,
                                               "min_purity": min_purity,
                                               **contract_meta(target_purity, holdout,
                                                               ladder)})
