"""Greedy boundary selection: submodular cost submodular cover (METHOD §2).

A pure function over the sides matrix: no network involved. ``sides[i, q]`` is True
when image ``i`` lies on the seed's side of boundary ``q``; an image is *covered* by a
set ``P`` when it is on the seed's side of every boundary in ``P``::

    P = {}
    while |covered(P) & diff| > delta:
        score(h) = (new_same(h) + eps1) / (new_diff(h) + eps2)   for h with new_diff > 0
        P += argmin score
    prune: drop h whose removal changes no image's coverage

``new_same(h)`` / ``new_diff(h)`` count covered images of the seed's class / of other
classes that ``h`` would exclude. One engine counts them: each boundary's excluded images
are a bitset, and each step is an AND and a popcount per boundary over the images still
covered, so no Python loop ever runs over images. Dense sides (the per-seed path) are
packed once; a region index keeps its rows packed already.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Selection", "min_feasible_delta", "pack_columns",
           "select_boundaries", "select_boundaries_bits"]

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
    counted by :func:`select_boundaries_bits`: each step is two ANDs and popcounts over
    ``Q x N / 64`` words, the same choices as counting 0/1 matrix products (the scores
    come from the same integer counts), without converting ``N x Q`` bools to floats at
    every step (the 35x slower ``explain`` of issue 18).
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
    """:func:`select_boundaries` on bitsets: the same choices, counted with popcounts.

    ``excluded``: ``[Q, W]`` uint64, row ``q`` the images *not* on the seed's side of
    boundary ``q`` as a bitset over ``n`` images (``numpy.packbits`` order, little-endian
    words, bits beyond ``n`` zero). Each step is two ANDs and popcounts over ``Q x n / 64``
    words, so a large bank costs ``n / 8`` bytes per candidate, not ``n`` floats.
    """
    same_np = np.asarray(torch.as_tensor(same, dtype=torch.bool).cpu())
    if excluded.ndim != 2 or same_np.shape != (n,):
        raise ValueError("excluded must be [Q, W] and same [n]")
    q = excluded.shape[0]
    valid = _bits(np.ones(n, dtype=bool), excluded.shape[1])
    s_bits, d_bits = _bits(same_np, excluded.shape[1]), _bits(~same_np, excluded.shape[1])
    anywhere = np.bitwise_or.reduce(excluded, axis=0) if q else np.zeros_like(valid)
    min_delta = _count(d_bits & ~anywhere)
    delta = _resolve_delta(delta, min_delta, stacklevel + 1)
    ratio = None if min_purity is None else (1 - min_purity) / min_purity
    covered = valid.copy()
    chosen: list[int] = []
    while True:
        n_diff, n_same = _count(covered & d_bits), _count(covered & s_bits)
        if done(n_diff, n_same, delta, ratio):
            break
        new_same = np.bitwise_count(excluded & (covered & s_bits)).sum(1, dtype=np.int64)
        new_diff = np.bitwise_count(excluded & (covered & d_bits)).sum(1, dtype=np.int64)
        h = best_step(new_same, new_diff, eps1, eps2)
        if h is None:
            break
        chosen.append(h)
        covered &= ~excluded[h]
    idx = torch.tensor(chosen, dtype=torch.long)
    if prune and chosen:
        sides = ~torch.from_numpy(_unbits(excluded[chosen], n)).T      # [n, len(chosen)]
        kept, excluded_by = _prune(sides, torch.arange(len(chosen)))
        idx, covered_mask = idx[kept], excluded_by == 0
    else:
        covered_mask = torch.from_numpy(_unbits(covered[None], n)[0])
    return Selection(indices=idx, delta=int(delta), min_delta=min_delta,
                     covered=covered_mask)


def done(n_diff: int, n_same: int, delta: int, ratio: float | None) -> bool:
    """The greedy's stop: at most ``delta`` other-class images covered, or (``ratio`` =
    ``(1 - min_purity) / min_purity``) the covered images that pure."""
    return n_diff <= delta or (ratio is not None and n_diff <= ratio * n_same)


def best_step(new_same: np.ndarray, new_diff: np.ndarray, eps1: float = EPS1,
              eps2: float = EPS2) -> int | None:
    """The candidate with the smallest ``(new_same + eps1) / (new_diff + eps2)`` among
    those that exclude an image of another class (the first on a tie), or None."""
    score = (torch.from_numpy(new_same).double() + eps1) / \
        (torch.from_numpy(new_diff).double() + eps2)
    score[torch.from_numpy(new_diff) <= 0] = torch.inf
    h = int(torch.argmin(score))
    return h if bool(torch.isfinite(score[h])) else None


def _resolve_delta(delta: int | None, min_delta: int, stacklevel: int) -> int:
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
    :func:`select_boundaries_bits`)."""
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


def _prune(sides: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop, in selection order, each boundary that alone excludes no image. Returns the
    kept indices and, per image, how many kept boundaries exclude it.

    One pass suffices: removing a redundant boundary never makes a kept one redundant,
    because an image excluded only by a kept boundary is not excluded by the removed one.
    """
    excl = ~sides[:, idx]
    count = excl.sum(1)
    keep = np.ones(len(idx), dtype=bool)
    for j in range(len(idx)):
        if not bool(((count == 1) & excl[:, j]).any()):
            keep[j] = False
            count -= excl[:, j].long()
    return idx[torch.from_numpy(keep)], count
