"""The region index's greedy and summary with the rows left where they are (issue 22).

A :class:`RegionIndex` holds every row in one process. Here the rows live in
:class:`RowGroup` s (contiguous ranges of images, one per worker: in this process, or a
Ray actor each, :mod:`repinterp.app.index`), and the driver, :class:`ShardedIndex`,
holds the bank and sends each greedy step to them: a group answers, per candidate
boundary, how many images of the seed's class and of other classes still covered it
would exclude (two integer vectors the length of the bank), and the driver adds them
up, picks the boundary and sends it back. Pruning, ranking, purity and the next seed of
a summary are reductions the same way. The driver's memory is the bank, a few vectors
of its length, and the regions it returns (their members); never the rows.

Every choice is the in-process one: the counts are integer sums, the scores are computed
from them as :func:`~repinterp.core.greedy.select_boundaries_bits` computes them, the
members' distances are computed row by row as :func:`~repinterp.core.engine.make_region`
computes them, and ties break the same way, so the regions equal
:meth:`RegionIndex.explain` / :meth:`RegionIndex.summarize`'s bit for bit (tested).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from .boundaries import Boundaries, flip
from .engine import MIN_PURITY
from .errors import UserError
from .greedy import _bits, _count, _resolve_delta, _unbits, best_step, done
from .index import Bank, IndexRows, RegionIndex, column_bits, seed_row, signs_at
from .region import Region
from .summary import ClassSummary, Summary

__all__ = ["RowGroup", "ShardedIndex", "local_groups"]


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

    def start_class(self, cls: int) -> int:
        """A summary starts on class ``cls``: every image of it is left to cover."""
        self.of_class = (self.rows.predictions == cls).numpy()
        self.left_mask = self.of_class.copy()
        self.covered_mask = np.zeros(self.n, dtype=bool)
        return int(self.of_class.sum())

    def best_seed(self) -> tuple[float, int] | None:
        """The largest margin among the images left, and the first image that has it."""
        if not self.left_mask.any():
            return None
        m = torch.where(torch.from_numpy(self.left_mask), self.rows.margins, -torch.inf)
        i = int(m.argmax())
        return float(m[i]), self.offset + i

    def mark(self, seed: int) -> tuple[int, bool]:
        """The last region covers its members of the class; they and ``seed`` are not
        left. Returns the images of the class covered so far and whether any is left."""
        hit = np.zeros(self.n, dtype=bool)
        hit[self.inside.numpy()] = True
        self.covered_mask |= hit & self.of_class
        self.left_mask &= ~hit
        if 0 <= seed - self.offset < self.n:
            self.left_mask[seed - self.offset] = False
        return int(self.covered_mask.sum()), bool(self.left_mask.any())

    # --- one region's greedy -----------------------------------------------------
    def begin(self, cand: torch.Tensor, seed_side: torch.Tensor, cls: int) -> tuple[int, int]:
        """A seed of class ``cls`` with candidates ``cand`` (bank columns) and its sides
        of them: the excluded images per candidate as bitsets, everything covered.
        Returns this group's part of the smallest feasible delta and its images of
        other classes."""
        self.excluded = self.cols[cand.numpy()]
        self.excluded[seed_side.numpy()] ^= self.valid[None]
        same = (self.rows.predictions == cls).numpy()
        self.same = same
        words = self.cols.shape[1]
        self.s_bits, self.d_bits = _bits(same, words), _bits(~same, words)
        self.covered = self.valid.copy()
        anywhere = (np.bitwise_or.reduce(self.excluded, axis=0) if len(self.excluded)
                    else np.zeros_like(self.valid))
        return _count(self.d_bits & ~anywhere), int((~same).sum())

    def counts(self) -> tuple[int, int, np.ndarray, np.ndarray]:
        """Images of the class / of others still covered, and per candidate how many of
        each it would exclude."""
        cs, cd = self.covered & self.s_bits, self.covered & self.d_bits
        return (_count(cd), _count(cs),
                np.bitwise_count(self.excluded & cs).sum(1, dtype=np.int64),
                np.bitwise_count(self.excluded & cd).sum(1, dtype=np.int64))

    def apply(self, h: int) -> None:
        self.covered &= ~self.excluded[h]

    def step(self, h: int) -> tuple[int, int, np.ndarray, np.ndarray]:
        """:meth:`apply` then :meth:`counts`: one round trip per greedy step."""
        self.apply(h)
        return self.counts()

    def prune_start(self, chosen: list[int]) -> None:
        self.excl = torch.from_numpy(_unbits(self.excluded[chosen], self.n)).T
        self.count = self.excl.sum(1)

    def prune_needed(self, j: int) -> bool:
        """Whether chosen boundary ``j`` alone excludes an image of this group."""
        return bool(((self.count == 1) & self.excl[:, j]).any())

    def prune_drop(self, j: int) -> None:
        self.count -= self.excl[:, j].long()

    def finish(self, pruned: bool, cand_pick: torch.Tensor, signs: torch.Tensor,
               origin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """The region's members in this group (global indices, ascending), their
        semantic distances ``sum_h |v_h(x') - v_h(x)|`` over the kept boundaries and how
        many are of the seed's class."""
        if pruned:
            inside = (self.count == 0).nonzero()[:, 0]
        else:
            inside = torch.from_numpy(_unbits(self.covered[None], self.n)[0]).nonzero()[:, 0]
        self.inside = inside
        # the kept columns of the members only (not every value of every member)
        vals = self.rows.values[inside[:, None], cand_pick[None]].float() * signs
        dist = (vals - origin).abs().sum(1)
        return inside + self.offset, dist, int(self.same[inside.numpy()].sum())


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

    def explain(self, seed: int | IndexRows, *, delta: int | None = None,
                num_boundaries: int | None = None,
                min_purity: float | None = MIN_PURITY) -> Region:
        """As :meth:`RegionIndex.explain`."""
        index, row = seed_row(seed, self.n, lambda i: next(
            r for r in self.call("row", i) if r is not None))
        cls = int(row.predictions[0])
        cand = RegionIndex.candidates(self.bank, cls, row.values[0].float(), num_boundaries,
                                      self._norms)
        seed_side = signs_at(row.signs, cand)[0]
        parts = self.call("begin", cand, seed_side, cls)
        min_delta = sum(p[0] for p in parts)
        if sum(p[1] for p in parts) == 0:
            raise UserError(f"every indexed image is predicted as class {cls}")
        delta = _resolve_delta(delta, min_delta, 3)
        ratio = None if min_purity is None else (1 - min_purity) / min_purity
        chosen: list[int] = []
        answers = self.call("counts")
        while True:
            if done(sum(a[0] for a in answers), sum(a[1] for a in answers), delta, ratio):
                break
            h = best_step(np.asarray(np.sum([a[2] for a in answers], axis=0, dtype=np.int64)),
                          np.asarray(np.sum([a[3] for a in answers], axis=0, dtype=np.int64)))
            if h is None:
                break
            chosen.append(h)
            answers = self.call("step", h)
            self.steps += 1
        idx = torch.tensor(chosen, dtype=torch.long)
        if chosen:                               # prune, in selection order
            self.call("prune_start", chosen)
            keep = []
            for j in range(len(chosen)):
                if any(self.call("prune_needed", j)):
                    keep.append(j)
                else:
                    self.call("prune_drop", j)
            idx = idx[torch.tensor(keep, dtype=torch.long)]
        signs = torch.where(seed_side, 1.0, -1.0)
        pick = cand[idx]
        origin = row.values[0, pick].float() * signs[idx]
        parts = self.call("finish", bool(chosen), pick, signs[idx], origin)
        inside = torch.cat([p[0] for p in parts])
        dist = torch.cat([p[1] for p in parts])
        same_inside = sum(p[2] for p in parts)
        order = torch.sort(dist, stable=True).indices
        members = inside[order]
        s = signs[idx]
        working = flip(self.bank.working.select(pick), s)
        chosen_b = Boundaries(self.bank.weights[pick] * s[:, None], self.bank.biases[pick] * s,
                              working.points, working.pairs)
        purity = same_inside / max(len(members), 1)
        return Region(
            predicted_class=cls, weights=chosen_b.weights, biases=chosen_b.biases,
            boundary_points=chosen_b.points, pairs=chosen_b.pairs,
            delta=max(delta, len(inside) - same_inside), min_delta=min_delta,
            members=members, member_distances=dist[order], purity=purity,
            seed_index=index, seed_values=origin.clamp_min(0),
            feature_shape=self.feature_shape)

    def summarize(self, coverage: float = 0.95, max_regions: int = 10,
                  classes: list[int] | None = None, progress: bool = False,
                  num_boundaries: int | None = None,
                  min_purity: float | None = MIN_PURITY) -> Summary:
        """As :meth:`RegionIndex.summarize` (:func:`~repinterp.core.summary.peel`), each
        seed found by a reduction (the largest margin left, the first image on a tie)."""
        from tqdm.auto import tqdm
        if not 0 < coverage <= 1:
            raise UserError("coverage must be in (0, 1]")
        if max_regions < 1:
            raise UserError("max_regions must be at least 1")
        counts = self.class_counts()
        wanted = [int(c) for c in np.nonzero(counts)[0]] if classes is None else list(classes)
        out = []
        with tqdm(total=len(wanted), desc="summary", unit="class", disable=not progress,
                  leave=False) as bar:
            for c in wanted:
                n = sum(self.call("start_class", c))
                covered, left = 0, n > 0
                regions: list[Region] = []
                while len(regions) < max_regions and left and covered < coverage * n:
                    best = [b for b in self.call("best_seed") if b is not None]
                    seed = min(best, key=lambda mi: (-mi[0], mi[1]))[1]
                    region = self.explain(seed, num_boundaries=num_boundaries,
                                          min_purity=min_purity)
                    marks = self.call("mark", seed)
                    covered = sum(m[0] for m in marks)
                    left = any(m[1] for m in marks)
                    regions.append(region)
                bar.update(1)
                regions.sort(key=lambda r: -r.size)
                out.append(ClassSummary(cls=c, n_images=n, regions=regions, covered=covered))
        return Summary(classes=out, coverage_target=coverage, max_regions=max_regions,
                       layer=self.layer, meta={**self.meta, "references": self.n,
                                               "bank": len(self.bank)})
