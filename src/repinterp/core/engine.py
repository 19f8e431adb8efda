"""The region engine (METHOD §2-3), written once: greedy -> prune -> rank -> purity ->
:class:`Region`.

Every path that makes regions ends here, and differs only in how it counts. The engine
asks a *counts backend* (:class:`Counts`) for integer counts and decides everything
itself: which candidate boundary to add, when to stop, which to prune, the members'
order, the purity and the region's delta. Backends:

- bitsets in one process (:class:`~repinterp.core.greedy.BitCounts`), from a seed's
  dense side values (the per-seed path of :class:`~repinterp.RepresentativeInterpreter`,
  :func:`dense_candidates`) or from a :class:`~repinterp.core.index.RegionIndex`'s
  bit-packed signs and float16 values; :func:`make_region` runs them;
- row groups reduced across workers (:class:`~repinterp.core.sharded.GroupCounts`),
  each group a ``BitCounts`` of its rows: the tallies are integer sums, so the choices
  are the in-process ones bit for bit.

Whether the boundaries are tangent planes (a smooth head) is the caller's fact, passed
as ``approximate``; the purity stop that goes with it is :func:`purity_stop`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from .boundaries import Boundaries, flip, orientation
from .defaults import MIN_PURITY, TANGENT_MIN_PURITY
from .errors import UserError
from .greedy import (
    EPS1,
    EPS2,
    BitCounts,
    Members,
    Tally,
    best_step,
    done,
    pack_columns,
    resolve_delta,
)
from .region import Region

__all__ = ["MIN_PURITY", "TANGENT_MIN_PURITY", "Candidates", "Counts", "Steps",
           "dense_candidates", "greedy", "make_region", "purity_stop", "region"]

def purity_stop(min_purity: float | str | None, approximate: bool) -> float | None:
    """The greedy's purity stop: ``min_purity`` itself, or for ``"auto"``
    :data:`TANGENT_MIN_PURITY` when the boundaries are tangent (``approximate``), else
    :data:`MIN_PURITY`. Raises :class:`UserError` outside ``(0, 1]``."""
    if min_purity == "auto":
        return TANGENT_MIN_PURITY if approximate else MIN_PURITY
    if min_purity is None:
        return None
    if isinstance(min_purity, bool) or not isinstance(min_purity, (int, float)) \
            or not 0 < min_purity <= 1:
        raise UserError(f"min_purity must be 'auto', None or in (0, 1], got {min_purity!r}")
    return float(min_purity)


class Counts(Protocol):
    """What the engine asks of the images' sides of a seed's ``Q`` candidates (their
    indices ``0 .. Q - 1``). A backend holds the coverage state; the engine decides.

    - ``start()``: ``(min_delta, others)``: images of other classes that no candidate
      excludes (the smallest feasible delta) and images of other classes;
    - ``counts()`` / ``step(h)``: the :class:`~repinterp.core.greedy.Tally` now / after
      candidate ``h`` joins the region;
    - ``prune_start(chosen)``, ``prune_needed(j)``, ``prune_drop(j)``: whether chosen
      candidate ``j`` alone excludes an image, given the ones not dropped;
    - ``finish(columns, origin)``: the covered images and their semantic distances over
      the candidates ``columns``, ``origin`` the seed's values at them
      (:class:`~repinterp.core.greedy.Members`).
    """

    def start(self) -> tuple[int, int]: ...

    def counts(self) -> Tally: ...

    def step(self, h: int) -> Tally: ...

    def prune_start(self, chosen: list[int]) -> None: ...

    def prune_needed(self, j: int) -> bool: ...

    def prune_drop(self, j: int) -> None: ...

    def finish(self, columns: torch.Tensor, origin: torch.Tensor) -> Members: ...


@dataclass
class Steps:
    """The greedy's outcome: the kept candidates (``indices``, in the order they were
    picked), the delta used and the smallest feasible one."""

    indices: torch.Tensor
    delta: int
    min_delta: int


def greedy(counts: Counts, delta: int | None = None, *, min_purity: float | None = None,
           prune: bool = True, close: int = 0, nearness: torch.Tensor | None = None,
           eps1: float = EPS1, eps2: float = EPS2, stacklevel: int = 2) -> Steps:
    """The SCSC greedy (METHOD §2) over a counts backend.

    Adds the candidate with the smallest ``(new_same + eps1) / (new_diff + eps2)`` among
    those with ``new_diff > 0`` (the first on a tie) until at most ``delta`` images of
    other classes stay covered (``None``: the smallest feasible; below it: raised to it
    with a warning at ``stacklevel``, 2 naming this function's caller), or, with
    ``min_purity`` (departure from the paper), until the covered images are that share
    of the kept ones; then, with ``prune``, drops in selection order each candidate that
    alone excludes no image (one pass suffices: removing a redundant candidate never
    makes a kept one redundant); then, with ``close > 0`` (departure from the paper),
    adds up to ``close`` other candidates that exclude none of the images still counted
    and covered, those of smallest ``nearness`` first (``[Q]``, the seed's side values:
    the boundaries nearest the seed; default: index order, ties too): with ``close >= Q``
    the region becomes the tightest cell of the candidates that holds them. Only images
    it was not grown on (ignored by the counts) can leave it.
    """
    if isinstance(close, bool) or int(close) < 0:
        raise TypeError(f"close is a number of candidates >= 0, got {close!r}")
    min_delta, _ = counts.start()
    delta = resolve_delta(delta, min_delta, stacklevel + 1)
    ratio = None if min_purity is None else (1 - min_purity) / min_purity
    chosen: list[int] = []
    tally = counts.counts()
    while not done(tally.n_diff, tally.n_same, delta, ratio):
        h = best_step(tally.new_same, tally.new_diff, eps1, eps2)
        if h is None:
            break
        chosen.append(h)
        tally = counts.step(h)
    kept = chosen
    if prune and chosen:
        counts.prune_start(chosen)
        kept = []
        for j, h in enumerate(chosen):
            if counts.prune_needed(j):
                kept.append(h)
            else:
                counts.prune_drop(j)
    if close:
        tally = counts.counts()
        taken = set(kept)
        free = np.array([h for h in np.flatnonzero((tally.new_same + tally.new_diff) == 0)
                         .tolist() if h not in taken], dtype=np.int64)
        if nearness is not None and len(free):
            near = nearness.detach().cpu().double().numpy()[free]
            free = free[np.argsort(near, kind="stable")]
        for h in free[:int(close)].tolist():
            counts.step(h)
            kept.append(h)
    return Steps(torch.tensor(kept, dtype=torch.long), int(delta), int(min_delta))


def region(counts: Counts, seed_values: torch.Tensor,
           boundaries: Callable[[torch.Tensor], Boundaries], cls: int, *,
           seed_index: int | None, delta: int | None, min_purity: float | None,
           feature_shape: tuple[int, ...], approximate: bool = False,
           logic: int | None = None, close: int = 0, stacklevel: int = 2) -> Region:
    """The region of a seed of class ``cls``: the only place a :class:`Region` is made.

    ``seed_values`` ``[Q]``: the seed's oriented side values of its candidates (``>= 0``
    up to float16 rounding); ``boundaries(columns)``: those candidates in flattened
    feature space, oriented. The greedy (:func:`greedy`, ``delta``, ``min_purity``) picks
    the boundaries; members are ranked by ``Dist = sum_h |v_h(x') - v_h(x)|`` over them
    (stable: ties keep index order); ``close``: at most that many free candidates
    closing it, nearest the seed first (:func:`greedy`); the purity is the share of
    members predicted as ``cls``; the region's ``delta`` is what it allows in the end
    (the purity stop may end the greedy with more other images inside than ``delta``);
    its ``holdout``: the members the counts ignored and how many of them are of ``cls``
    (:mod:`repinterp.core.contract`).
    """
    steps = greedy(counts, delta, min_purity=min_purity, close=close,
                   nearness=seed_values, stacklevel=stacklevel + 1)
    pick = steps.indices
    origin = seed_values[pick.to(seed_values.device)]
    found = counts.finish(pick, origin)
    order = torch.sort(found.distances, stable=True).indices
    members = found.members[order]
    chosen = boundaries(pick)
    return Region(
        predicted_class=int(cls), weights=chosen.weights, biases=chosen.biases,
        boundary_points=chosen.points, pairs=chosen.pairs,
        delta=max(steps.delta, len(members) - found.n_same), min_delta=steps.min_delta,
        members=members, member_distances=found.distances[order],
        purity=found.n_class / max(len(members), 1), seed_index=seed_index,
        seed_values=origin.clamp_min(0), feature_shape=tuple(feature_shape),
        approximate=bool(approximate), logic=logic,
        min_purity=None if min_purity is None else float(min_purity), holdout=found.held)


@dataclass
class Candidates:
    """A seed's candidate boundaries, oriented to it, for the bitset backend.

    Attributes
    ----------
    excluded
        ``[Q, W]`` uint64: per candidate, the references on its far side as a bitset
        (:func:`~repinterp.core.greedy.pack_columns` layout).
    seed_values
        ``[Q]``: the seed's oriented side values (``>= 0``, up to the float16 rounding
        of an index's values).
    values
        ``values(rows, columns)``: the oriented side values ``[len(rows), len(columns)]``
        of the given references at the given candidates.
    boundaries
        ``boundaries(columns)``: the given candidates in flattened feature space,
        oriented (weights, biases, points, pairs).
    """

    excluded: np.ndarray
    seed_values: torch.Tensor
    values: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    boundaries: Callable[[torch.Tensor], Boundaries]


def dense_candidates(b: Boundaries, values: torch.Tensor, seed_values: torch.Tensor
                     ) -> Candidates:
    """Candidates from the side values ``[N, Q]`` of every reference (any device) and of
    the seed ``[Q]``, with their boundaries ``b`` in feature space."""
    signs = orientation(seed_values)
    oriented = values * signs
    excluded = pack_columns((oriented < 0).cpu().numpy())
    b = flip(b, signs)

    def rows_at(rows: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
        dev = oriented.device
        return oriented[rows.to(dev)][:, columns.to(dev)]

    return Candidates(excluded, seed_values * signs, rows_at,
                      lambda columns: b.select(columns.to(b.weights.device)))


def make_region(c: Candidates, predictions: torch.Tensor, cls: int, same: torch.Tensor, *,
                seed_index: int | None, delta: int | None, min_purity: float | None,
                feature_shape: tuple[int, ...], approximate: bool = False,
                logic: int | None = None, ignore: torch.Tensor | None = None,
                close: int = 0, stacklevel: int = 2) -> Region:
    """:func:`region` on the bitset backend of :class:`Candidates`: ``same`` marks the
    references the region keeps (the seed's class, or its logic's group),
    ``predictions`` of every reference give the purity, ``ignore`` marks references
    the greedy does not count (:class:`~repinterp.core.greedy.BitCounts`)."""
    of_class = np.asarray((torch.as_tensor(predictions) == cls).cpu())
    counts = BitCounts(c.excluded, np.asarray(torch.as_tensor(same, dtype=torch.bool).cpu()),
                       of_class, c.values,
                       ignore=None if ignore is None else np.asarray(ignore.cpu()))
    return region(counts, c.seed_values, c.boundaries, cls, seed_index=seed_index,
                  delta=delta, min_purity=min_purity, feature_shape=feature_shape,
                  approximate=approximate, logic=logic, close=close,
                  stacklevel=stacklevel + 1)
