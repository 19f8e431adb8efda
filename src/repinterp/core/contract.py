"""Purity by contract: regions whose purity is measured on references they were not
grown on, and tightened until it meets a target.

``summarize(target_purity=t)``: each reference is held out with probability ``holdout``
(a hash of its index and the seed: :func:`holdout_mask`). Each region is grown on the
rest alone: held-out references are no boundary's target, the greedy does not count
them, and no seed is drawn from them. Then its purity is measured on the held-out
references inside it (:attr:`~repinterp.core.region.Region.holdout`). A region whose
held-out purity is below ``t`` (:func:`holds`) is grown again from the same seed one
:class:`Level` tighter (more candidate boundaries, a stricter purity stop; every level
*closes* the region, adding each candidate that excludes none of its counted members:
:data:`LEVELS`); a seed whose region meets ``t`` at no level is given up, and its images
stay outside any region unless a later seed's region covers them (:func:`tightened`). A
departure from the paper, whose only stop is the fixed ``delta`` rule on every
reference (``target_purity=None``).

The ladder, the closing step and the rule were chosen on the development half of the
model zoo and are reported on its held-out half (``docs/purity-contract.md``). The check
is only as strong as the held-out references inside a region: with tens of them, and
the first level that passes kept, it is optimistic for models with many small regions
(measured there).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .errors import UserError
from .metrics import wilson_interval
from .region import Region

__all__ = ["EVERY", "LEVELS", "PLAIN", "Level", "check_contract", "contract_meta",
           "holdout_mask", "holds", "interval", "tightened"]


@dataclass(frozen=True)
class Level:
    """One rung of the tightening ladder: ``boundaries`` times the interpreter's ``|Q|``
    candidates (with shared sampling: at most the bank's), the greedy's purity stop
    ``min_purity`` (``"auto"``: the interpreter's own) and how many free candidates the
    greedy closes the region with at most, nearest the seed first (``close``; 0: none;
    :func:`repinterp.core.engine.greedy`)."""

    boundaries: int
    min_purity: float | str | None
    close: int = 0

    def candidates(self, q: int | None, bank: int | None = None) -> int | None:
        """The candidates at this level for ``q`` at the loosest (``None``: a region
        index's whole bank, at every level), at most ``bank`` (a shared bank's size)."""
        if q is None:
            return None
        return int(q) * self.boundaries if bank is None else min(int(q) * self.boundaries,
                                                                  bank)

    def stop(self, default: float | str | None) -> float | str | None:
        """The purity stop at this level: ``default`` where the level says ``"auto"``."""
        return default if self.min_purity == "auto" else self.min_purity


#: ``Level.close`` for a region closed with every free candidate (the tightest cell).
#: Fewer (the nearest the seed) keep a summary smaller but were less pure on the
#: development half of the zoo (``docs/purity-contract.md``).
EVERY = 1 << 62

#: No contract: the interpreter's own settings, not closed (the paper's region).
PLAIN = Level(1, "auto")

#: The ladder, loosest first, every level closed: the interpreter's settings, then twice
#: the candidates, then four times the candidates with no other-class reference allowed
#: to stop early.
LEVELS: tuple[Level, ...] = (Level(1, "auto", EVERY), Level(2, "auto", EVERY),
                             Level(4, 1.0, EVERY))


def check_contract(target_purity: float | None, holdout: float,
                   ladder: Sequence[Level] = LEVELS) -> None:
    """Refuse a target outside ``(0, 1]`` (``None``: no contract), a held-out share
    outside ``(0, 1)`` or an empty ladder of levels (or one of fewer than 1x the
    boundaries)."""
    if target_purity is None:
        return
    if not ladder or not all(isinstance(lv, Level) and int(lv.boundaries) >= 1
                             for lv in ladder):
        raise UserError("ladder must hold at least one Level of >= 1x the boundaries")
    if isinstance(target_purity, bool) or not isinstance(target_purity, (int, float)) \
            or not 0 < target_purity <= 1:
        raise UserError(f"target_purity must be None or in (0, 1], got {target_purity!r}")
    if isinstance(holdout, bool) or not isinstance(holdout, (int, float)) \
            or not 0 < holdout < 1:
        raise UserError(f"holdout must be in (0, 1), got {holdout!r}")


def contract_meta(target_purity: float | None, holdout: float,
                  ladder: Sequence[Level]) -> dict:
    """The contract's settings as a summary's meta records them."""
    on = target_purity is not None
    return {"target_purity": target_purity, "holdout": float(holdout) if on else None,
            "ladder": [[lv.boundaries, lv.min_purity, "all" if lv.close >= EVERY
                        else lv.close] for lv in ladder]
            if on else None}


def holdout_mask(indices: torch.Tensor | int, share: float, seed: int) -> torch.Tensor:
    """Bool, one per reference index (``indices``, or ``range(n)`` for an int): whether
    it is held out. Each index is held out with probability ``share``, by a hash of the
    index and ``seed`` (SplitMix64's finaliser): no state and no array over every
    reference, so a row group of a sharded index decides for its own rows what the
    driver decides for a region's members, and the same seed holds out the same
    references."""
    idx = torch.arange(indices) if isinstance(indices, int) else torch.as_tensor(indices)
    x = idx.cpu().numpy().astype(np.uint64) + np.uint64(
        (int(seed) * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) % (1 << 64))
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return torch.from_numpy((x >> np.uint64(11)).astype(np.float64) / 2.0 ** 53 < share)


def holds(inside: int, pure: int, target: float) -> bool:
    """The contract's rule: the held-out references inside a region are at least
    ``target`` predicted as its class (``pure >= target * inside``; a region no held-out
    reference falls in holds, as nothing contradicts it)."""
    return pure >= target * inside - 1e-9


def tightened(grow: Callable[[list[int], Level], list[Region]], seeds: list[int],
              target: float, levels: tuple[Level, ...] = LEVELS) -> list[Region | None]:
    """Per seed, the first region over ``levels`` whose held-out purity :func:`holds`
    (its :attr:`~repinterp.core.region.Region.holdout` counts, set by the engine when
    the counts ignore the held-out references), or ``None`` when none does.
    ``grow(seeds, level)``: the regions of ``seeds`` at ``level``, grown without the
    held-out references; each level grows the seeds still short of ``target``
    together."""
    out: list[Region | None] = [None] * len(seeds)
    todo = list(range(len(seeds)))
    for level in levels:
        if not todo:
            break
        short = []
        for k, region in zip(todo, grow([seeds[k] for k in todo], level), strict=True):
            if region.holdout is None:
                raise ValueError("the region was grown without held-out references")
            if holds(*region.holdout, target):
                out[k] = region
            else:
                short.append(k)
        todo = short
    return out


def interval(region: Region, level: float = 0.95) -> tuple[float, float] | None:
    """The Wilson interval of a region's held-out purity (``None`` without held-out
    references inside it)."""
    if region.holdout is None or region.holdout[0] == 0:
        return None
    return wilson_interval(region.holdout[1], region.holdout[0], level)
