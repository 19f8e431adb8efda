"""The region engine (METHOD §2-3), written once: orient -> greedy -> rank -> purity ->
:class:`Region`.

Two paths make regions and both end here: the per-seed path of
:class:`~repinterp.RepresentativeInterpreter` (the dense side values of every
reference, :func:`dense_candidates`) and a :class:`~repinterp.core.index.RegionIndex`
(bit-packed signs and float16 values of indexed images). Each turns a seed's candidate
boundaries into :class:`Candidates` (oriented so the seed is on the non-negative side of
each, with one bitset per candidate of the references it excludes); :func:`make_region`
runs the greedy (:func:`~repinterp.core.greedy.select_boundaries_bits`, one stopping
rule: ``delta`` and ``min_purity``), ranks the members by semantic distance and measures
the purity. Given the same side values, both paths give the same region.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .boundaries import Boundaries, flip, orientation
from .greedy import pack_columns, select_boundaries_bits
from .region import Region

__all__ = ["MIN_PURITY", "TANGENT_MIN_PURITY", "Candidates", "dense_candidates", "make_region"]

#: The greedy's purity stop, the same default for every path that makes regions
#: (``None``: the paper's ``delta`` rule alone). Chosen by measurement (issue 18,
#: ``benchmarks/purity_curve.py --min-purity none,0.99,0.995``, demo VGG, 10,000
#: references, held-out purity / share of test images in a region): at |Q| = 50
#: 97.66% / 96.98% without it, 97.62% / 97.22% with 0.995; at |Q| = 200 99.27% / 94.87%
#: against 99.11% / 96.14%; on a region index (bank 1024, 60,000 references,
#: ``docs/index.md``) it is what keeps regions from shattering: 94.2% of test images in a
#: region with it, 88.7% without.
MIN_PURITY: float | None = 0.995

#: The stop for tangent boundaries (smooth heads, issue 21): a tangent cell approximates
#: the decision region, so the greedy asks more purity of the references before it stops.
#: Measured (``docs/tangent-curve.md``, ``benchmarks/tangent_curve.py``, Fashion-MNIST,
#: 10,000 references, |Q| = 200): SiLU, GELU, Hardswish, LayerNorm heads and a small ViT
#: reach 99.02-99.08% held-out purity with 94.2-96.8% of test images in a region at 0.999,
#: against 98.79-98.88% at 0.995.
TANGENT_MIN_PURITY: float = 0.999


@dataclass
class Candidates:
    """A seed's candidate boundaries, oriented to it.

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
                logic: int | None = None, stacklevel: int = 2) -> Region:
    """The region of a seed of class ``cls`` from its :class:`Candidates`.

    ``same`` marks the references the region should keep (the seed's class, or its
    logic's group); ``predictions`` of every reference give the purity. The region's
    ``delta`` is the number of others it holds when the purity stop ended the greedy
    above ``delta``. The greedy stops
    at ``delta`` other-class references (``None``: the smallest feasible) or, with
    ``min_purity``, as soon as the references covered are that pure; members are ranked
    by ``Dist = sum_h |v_h(x') - v_h(x)|`` over the selected boundaries ``h``.
    """
    n = len(predictions)
    sel = select_boundaries_bits(c.excluded, n, same, delta, min_purity=min_purity,
                                 stacklevel=stacklevel + 1)
    pick = sel.indices
    inside = sel.covered.nonzero()[:, 0]
    origin = c.seed_values[pick.to(c.seed_values.device)]
    dist = (c.values(inside, pick) - origin).abs().sum(1).cpu()
    order = torch.sort(dist, stable=True).indices
    members = inside[order]
    chosen = c.boundaries(pick)
    purity = int((predictions[members] == cls).sum()) / max(len(members), 1)
    # the purity stop may end the greedy with more others inside than delta: the
    # region's delta is what it allows in the end
    delta = max(sel.delta, int((~same[inside]).sum()))
    return Region(
        predicted_class=int(cls), weights=chosen.weights, biases=chosen.biases,
        boundary_points=chosen.points, pairs=chosen.pairs, delta=delta,
        min_delta=sel.min_delta, members=members, member_distances=dist[order],
        purity=purity, seed_index=seed_index, seed_values=origin.clamp_min(0),
        feature_shape=tuple(feature_shape), approximate=approximate, logic=logic)
