"""Across each boundary: the references a region excludes by one decision alone.

For a region with boundaries ``h = 1 .. P`` and side values ``s_h(x) = w_h . psi(x) + b_h``
(the seed on the side ``s_h >= 0``), the *crossing* of boundary ``h`` is the set of
references other than its members with ``s_h(x) < 0`` and ``s_j(x) >= 0`` for every
``j != h``: images the region would hold but for that one decision. Nearest first by
``|s_h(x)|``, they are the region's contrastive neighbours ("these look like the members
to the model, except for this boundary, and then it says Pullover").

How near is stated against the region itself: ``spread`` is the median (the lower middle
one of an even count) of the members' ``s_h``, how far inside the boundary a typical
member lies, and a neighbour's ``relative`` distance is ``|s_h(x)| / spread`` (below 1:
closer to the boundary, on the wrong side, than the typical member is on the right one).

Not in the paper, which shows a region's members only.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Crossing", "crossings"]


@dataclass
class Crossing:
    """The references outside a region by boundary ``boundary`` alone.

    Attributes
    ----------
    boundary
        Index of the boundary in the region (``Region.weights[boundary]``).
    pair
        ``(c1, c2)``: the classes the boundary separates (``Region.pairs``).
    count
        References outside by this boundary alone (all of them, not only those listed).
    indices
        The nearest ``k`` of them (reference indices), nearest first.
    values
        Their side values ``s_h(x) < 0``.
    predictions
        The class the model predicts for each.
    spread
        Median side value of the region's members on this boundary (``nan`` for a region
        without members).
    """

    boundary: int
    pair: tuple[int, int]
    count: int
    indices: torch.Tensor
    values: torch.Tensor
    predictions: torch.Tensor
    spread: float

    @property
    def relative(self) -> torch.Tensor:
        """``|s_h(x)| / spread`` of each listed neighbour (float64)."""
        return self.values.double().abs() / self.spread

    def __repr__(self) -> str:
        c1, c2 = self.pair
        return (f"Crossing(boundary {self.boundary}, classes {c1} vs {c2}, {self.count} "
                f"outside by it alone, nearest {self.indices.tolist()[:4]})")


def crossings(side: torch.Tensor, predictions: torch.Tensor, pairs: torch.Tensor,
              members: torch.Tensor, k: int = 8) -> list[Crossing]:
    """The :class:`Crossing` of every boundary of a region.

    ``side``: ``[N, P]`` side values of the references at the region's boundaries;
    ``predictions``: ``[N]`` the model's classes; ``pairs``: ``[P, 2]``; ``members``: the
    region's members (indices, for the spread); ``k``: neighbours listed per boundary
    (``k >= 0``). Ties in ``|s_h|`` go to the lower index. One pass over ``side``.
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    side = side.cpu()
    outside = side < 0
    alone = outside.sum(1) == 1
    alone[members.cpu()] = False        # a member is inside, whatever rounding says
    rows = alone.nonzero()[:, 0]
    which = outside[rows].to(torch.int8).argmax(1)
    inside = side[members.cpu()] if len(members) else side[:0]
    result = []
    for h in range(side.shape[1]):
        idx = rows[which == h]
        val = side[idx, h]
        order = torch.sort(val.abs().double(), stable=True).indices[:k]
        spread = float(inside[:, h].double().median()) if len(inside) else float("nan")
        result.append(Crossing(boundary=h, pair=(int(pairs[h, 0]), int(pairs[h, 1])),
                               count=len(idx), indices=idx[order], values=val[order],
                               predictions=predictions.cpu()[idx[order]], spread=spread))
    return result
