"""Greedy boundary selection, the counting half: submodular cost submodular cover
(METHOD §2) on bitsets.

``sides[i, q]`` is True when image ``i`` lies on the seed's side of boundary ``q``; an
image is *covered* by a set ``P`` when it is on the seed's side of every boundary in
``P``::

    P = {}
    while |covered(P) & diff| > delta:
        score(h) = (new_same(h) + eps1) / (new_diff(h) + eps2)   for h with new_diff > 0
        P += argmin score
    prune: drop h whose removal changes no image's coverage

``new_same(h)`` / ``new_diff(h)`` count covered images of the seed's class / of other
classes that ``h`` would exclude. The loop itself, which decides, is written once:
:func:`repinterp.core.engine.greedy`. This module counts for it: :class:`BitCounts`
keeps each boundary's excluded images as a bitset, and each step is an AND and a
popcount per boundary over the images still covered, so no Python loop ever runs over
images. :func:`select_boundaries` is the loop on a dense bool matrix, as a pure function.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

__all__ = ["BitCounts", "Members", "Selection", "Tally", "best_step", "done", "min_feasible_delta",
           "pack_columns", "resolve_delta", "select_boundaries", "select_boundaries_bits"]

EPS1 = 1e-5
EPS2 = 1e-10


@dataclass
class Selection:
    """Result of :func:`select_boundaries`.

    Attributes
    ----------
    indices
        Selected columns of ``sides``, in the order the greedy picked them.
    delta
        The delta used (other-class images allowed inside the region).
    min_delta
        The smallest feasible delta: other-class images on the seed's side of all ``Q``.
    covered
        Bool mask ``[N]`` of the images inside the region.
    """

    indices: torch.Tensor
    delta: int
    min_delta: int
    covered: torch.Tensor


class Tally(NamedTuple):
    """One greedy step's counts: covered images of other classes (``n_diff``) and of the
    kept ones (``n_same``), and per candidate ``[Q]`` int64 how many of each it would
    exclude (``new_same``, ``new_diff``). Sums of tallies are tallies (a sharded index
    adds its row groups')."""

    n_diff: int
    n_same: int
    new_same: np.ndarray
    new_diff: np.ndarray


class Members(NamedTuple):
    """A region's members as a backend finds them: their indices (ascending), semantic
    distances ``[len(members)]`` (in the same order), and how many are of the kept images
    (``n_same``) and predicted as the seed's class (``n_class``); with ignored images
    (a purity contract's held-out ones), ``held``: how many of the members are ignored
    and how many of those are predicted as the seed's class (``None`` without)."""

    members: torch.Tensor
    distances: torch.Tensor
    n_same: int
    n_class: int
    held: tuple[int, int] | None = None


def min_feasible_delta(sides: torch.Tensor, same: torch.Tensor) -> int:
    """Other-class images that no subset of the boundaries can exclude."""
    return int((sides.all(1) & ~same).sum())


def select_boundaries(sides: torch.Tensor, same: torch.Tensor, delta: int | None = None,
                      *, prune: bool = True, eps1: float = EPS1, eps2: float = EPS2,
                      min_purity: float | None = None, stacklevel: int = 2) -> Selection:
    """Select boundaries greedily so at most ``delta`` other-class images stay covered.

    Parameters
    ----------
    sides
        Bool ``[N, Q]``: image ``i`` is on the seed's side of boundary ``q``.
    same
        Bool ``[N]``: image ``i`` is predicted as the seed's class.
    delta
        Other-class images allowed in the region. ``None`` (default) uses the smallest
        feasible value; a smaller value than feasible is raised to it with a warning.
    prune
        Drop boundaries whose removal changes no image's coverage.
    min_purity
        Also stop as soon as the images still covered are at least this share of the
        seed's class (departure from the paper, whose only stop is ``delta``): with many
        candidate boundaries the smallest feasible delta is near 0 and reaching it cuts
        away much of the seed's class for a few hard images of other classes.
    stacklevel
        Of the infeasible-delta warning: 2 names the caller of this function; a wrapper
        passes 3 to name its own caller.

    Notes
    -----
    The sides are packed into one bitset per boundary (``N / 8`` bytes each) and
    counted by :class:`BitCounts`: each step is two ANDs and popcounts over
    ``Q x N / 64`` words, the same choices as counting 0/1 matrix products (the scores
    come from the same integer counts), without converting ``N x Q`` bools to floats.
    """
    sides = torch.as_tensor(sides, dtype=torch.bool)
    same = torch.as_tensor(same, dtype=torch.bool)
    if sides.ndim != 2 or same.shape != (sides.shape[0],):
        raise ValueError("sides must be [N, Q] and same [N]")
    excluded = pack_columns(~sides.cpu().numpy())
    return select_boundaries_bits(excluded, sides.shape[0], same, delta, prune=prune,
                                  eps1=eps1, eps2=eps2, min_purity=min_purity,
                                  stacklevel=stacklevel + 1)


def select_boundaries_bits(excluded: np.ndarray, n: int, same: torch.Tensor,
                           delta: int | None = None, *, prune: bool = True,
                           eps1: float = EPS1, eps2: float = EPS2,
                           min_purity: float | None = None,
                           stacklevel: int = 2) -> Selection:
    """:func:`select_boundaries` on bitsets: the engine's loop over :class:`BitCounts`.

    ``excluded``: ``[Q, W]`` uint64, row ``q`` the images *not* on the seed's side of
    boundary ``q`` as a bitset over ``n`` images (:func:`pack_columns` layout: little-endian
    words, bits beyond ``n`` zero). A large bank costs ``n / 8`` bytes per candidate.
    """
    from .engine import greedy  # the loop (engine.py imports this module)
    same_np = np.asarray(torch.as_tensor(same, dtype=torch.bool).cpu())
    if excluded.ndim != 2 or same_np.shape != (n,):
        raise ValueError("excluded must be [Q, W] and same [n]")
    counts = BitCounts(excluded, same_np)
    steps = greedy(counts, delta, min_purity=min_purity, prune=prune, eps1=eps1,
                   eps2=eps2, stacklevel=stacklevel + 1)
    return Selection(indices=steps.indices, delta=steps.delta, min_delta=steps.min_delta,
                     covered=counts.covered_mask())


class BitCounts:
    """The engine's counts protocol (:class:`repinterp.core.engine.Counts`) on bitsets,
    for ``n`` images in one process: a seed's dense side values (the per-seed path), a
    region index's rows, or one row group of a sharded index.

    Parameters
    ----------
    excluded
        ``[Q, W]`` uint64: per candidate, the images on its far side (:func:`pack_columns`).
    same
        Bool ``[n]``: the images the region keeps (the seed's class, or its logic's group);
        the others are the cover's images.
    of_class
        Bool ``[n]``: the images predicted as the seed's class, for the purity (default:
        ``same``).
    values
        ``values(rows, columns)``: oriented side values ``[len(rows), len(columns)]`` of
        the given images (local indices) at the given candidates; :meth:`finish` needs it.
    offset
        Added to the member indices :meth:`finish` returns (a row group's first image).
    ignore
        Bool ``[n]``: images the greedy does not count (a purity contract's held-out
        references, :mod:`repinterp.core.contract`); they are members when inside.
    """

    def __init__(self, excluded: np.ndarray, same: np.ndarray,
                 of_class: np.ndarray | None = None,
                 values: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                 offset: int = 0, ignore: np.ndarray | None = None):
        self.excluded, self.n = excluded, len(same)
        self.same = np.asarray(same, dtype=bool)
        self.of_class = self.same if of_class is None else np.asarray(of_class, dtype=bool)
        self.values, self.offset = values, int(offset)
        words = excluded.shape[1]
        self.ignore = None if ignore is None else np.asarray(ignore, dtype=bool)
        counted = np.ones(self.n, dtype=bool) if self.ignore is None else ~self.ignore
        self.others = int((~self.same & counted).sum())
        self.s_bits = _bits(self.same & counted, words)
        self.d_bits = _bits(~self.same & counted, words)
        self.covered = _bits(np.ones(self.n, dtype=bool), words)

    def start(self) -> tuple[int, int]:
        """Images of other classes that no candidate excludes (the smallest feasible
        delta) and images of other classes."""
        anywhere = (np.bitwise_or.reduce(self.excluded, axis=0) if len(self.excluded)
                    else np.zeros_like(self.covered))
        return _count(self.d_bits & ~anywhere), self.others

    def counts(self) -> Tally:
        cs, cd = self.covered & self.s_bits, self.covered & self.d_bits
        return Tally(_count(cd), _count(cs),
                     np.bitwise_count(self.excluded & cs).sum(1, dtype=np.int64),
                     np.bitwise_count(self.excluded & cd).sum(1, dtype=np.int64))

    def apply(self, h: int) -> None:
        """Candidate ``h`` joins the region: the images it excludes are not covered."""
        self.covered &= ~self.excluded[h]

    def step(self, h: int) -> Tally:
        """:meth:`apply` then :meth:`counts` (one round trip per step when sharded)."""
        self.apply(h)
        return self.counts()

    def prune_start(self, chosen: list[int]) -> None:
        """Per image counted, how many of the ``chosen`` candidates exclude it."""
        self.excl = torch.from_numpy(_unbits(self.excluded[chosen], self.n)).T
        if self.ignore is not None:
            self.excl[torch.from_numpy(self.ignore)] = False
        self.count = self.excl.sum(1)

    def prune_needed(self, j: int) -> bool:
        """Whether chosen candidate ``j`` alone excludes one of the images."""
        return bool(((self.count == 1) & self.excl[:, j]).any())

    def prune_drop(self, j: int) -> None:
        self.count -= self.excl[:, j].long()

    def covered_mask(self) -> torch.Tensor:
        """Bool ``[n]``: the images covered by the candidates applied. Pruning leaves it
        as it is: a dropped candidate excludes only images that a kept one excludes."""
        return torch.from_numpy(_unbits(self.covered[None], self.n)[0])

    def finish(self, columns: torch.Tensor, origin: torch.Tensor) -> Members:
        """The covered images and their semantic distances ``sum_h |v_h(x') - o_h|`` over
        the candidates ``columns``, ``origin`` the seed's values at them."""
        if self.values is None:
            raise ValueError("finish needs the side values")
        if self.ignore is not None:   # pruning may have dropped a boundary that alone
            cols = columns.cpu().numpy()  # excluded an ignored image: cover them again
            self.covered = ~np.bitwise_or.reduce(self.excluded[cols], axis=0) if len(cols) \
                else np.full_like(self.covered, np.uint64(0xFFFFFFFFFFFFFFFF))
            self.covered &= _bits(np.ones(self.n, dtype=bool), self.excluded.shape[1])
        inside = self.covered_mask().nonzero()[:, 0]
        v = self.values(inside, columns)
        dist = (v - origin.to(v.device)).abs().sum(1).cpu()
        local = inside.numpy()
        held = None
        if self.ignore is not None:
            ignored = local[self.ignore[local]]
            held = (len(ignored), int(self.of_class[ignored].sum()))
        return Members(inside + self.offset, dist, int(self.same[local].sum()),
                       int(self.of_class[local].sum()), held)


def done(n_diff: int, n_same: int, delta: int, ratio: float | None) -> bool:
    """The greedy's stop: at most ``delta`` other-class images covered, or (``ratio`` =
    ``(1 - min_purity) / min_purity``) the covered images that pure."""
    return n_diff <= delta or (ratio is not None and n_diff <= ratio * n_same)


def best_step(new_same: np.ndarray, new_diff: np.ndarray, eps1: float = EPS1,
              eps2: float = EPS2) -> int | None:
    """The candidate with the smallest ``(new_same + eps1) / (new_diff + eps2)`` among
    those that exclude an image of another class (the first on a tie), or None."""
    if len(new_diff) == 0:
        return None
    score = (torch.from_numpy(new_same).double() + eps1) / \
        (torch.from_numpy(new_diff).double() + eps2)
    score[torch.from_numpy(new_diff) <= 0] = torch.inf
    h = int(torch.argmin(score))
    return h if bool(torch.isfinite(score[h])) else None


def resolve_delta(delta: int | None, min_delta: int, stacklevel: int) -> int:
    """``delta``, or the smallest feasible one (warned about when ``delta`` is below)."""
    if delta is None:
        return min_delta
    if delta < min_delta:
        warnings.warn(f"delta={delta} is infeasible with these boundaries; "
                      f"using the smallest feasible delta {min_delta}", stacklevel=stacklevel)
        return min_delta
    return delta


def pack_columns(sides: np.ndarray) -> np.ndarray:
    """Bool ``[n, Q]`` -> ``[Q, W]`` uint64 bitsets of each column (the layout of
    :class:`BitCounts`)."""
    n, q = sides.shape
    packed = np.packbits(np.asarray(sides, dtype=bool).T, axis=1, bitorder="little")
    out = np.zeros((q, (n + 63) // 64 * 8), dtype=np.uint8)
    out[:, :packed.shape[1]] = packed
    return out.view(np.uint64)


def _bits(mask: np.ndarray, words: int) -> np.ndarray:
    packed = np.packbits(mask, bitorder="little")
    out = np.zeros(words * 8, dtype=np.uint8)
    out[:len(packed)] = packed
    return out.view(np.uint64)


def _unbits(rows: np.ndarray, n: int) -> np.ndarray:
    return np.unpackbits(rows.view(np.uint8), axis=1, bitorder="little")[:, :n].astype(bool)


def _count(bits: np.ndarray) -> int:
    return int(np.bitwise_count(bits).sum())
