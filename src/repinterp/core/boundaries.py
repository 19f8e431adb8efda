"""Sampling linear decision boundaries (LDBs) of a piecewise-linear head (METHOD §1).

An LDB is a hyperplane ``w . z + b = 0`` in flattened feature space. At a point ``z``
between classes ``c1`` and ``c2`` of ``G``::

    w = grad_z (G_c1 - G_c2)(z),   b = (G_c1 - G_c2)(z) - w . z

which is exact for a PL head: inside the linear piece of ``z``, ``G_c1 - G_c2`` *is*
``w . z + b``. All points of a batch go through ``G`` at once; one backward pass gives
every gradient because the samples do not interact (BatchNorm and Dropout in eval mode).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["SEARCH_BYTES", "Boundaries", "bisect_segments", "boundaries_at", "flip",
           "orientation"]

#: at most this many bytes of segment points (``seeds x |Q| x D``) in one batched search
#: of several seeds (a summary's, :mod:`repinterp.core._summarize`)
SEARCH_BYTES = 1 << 30


@dataclass
class Boundaries:
    """A set of LDBs: ``weights [Q, D]``, ``biases [Q]``, the points they were taken at
    ``points [Q, D]`` and the class pair ``pairs [Q, 2]`` (c1, c2) they separate."""

    weights: torch.Tensor
    biases: torch.Tensor
    points: torch.Tensor
    pairs: torch.Tensor

    def __len__(self) -> int:
        return self.weights.shape[0]

    def select(self, idx: torch.Tensor) -> Boundaries:
        return Boundaries(self.weights[idx], self.biases[idx], self.points[idx],
                          self.pairs[idx])

    def cat(self, other: Boundaries) -> Boundaries:
        """These boundaries followed by ``other``'s (moved to this set's dtypes and
        devices)."""
        return Boundaries(*(torch.cat([a, b.to(a)]) for a, b in zip(
            (self.weights, self.biases, self.points, self.pairs),
            (other.weights, other.biases, other.points, other.pairs), strict=True)))


def _logits(head: nn.Module, z: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    return head(z.reshape(-1, *shape))


def boundaries_at(head: nn.Module, points: torch.Tensor, shape: tuple[int, ...],
                  c1: torch.Tensor | None = None) -> Boundaries:
    """LDBs at ``points [Q, D]`` between ``c1`` (default: the top class) and the
    highest-scoring other class.

    ``shape`` is the feature map shape ``(C, H, W)`` that ``head`` expects.
    """
    z = points.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logits = _logits(head, z, shape)
        if c1 is None:
            c1 = logits.argmax(1)
        others = logits.detach().clone()
        others[torch.arange(len(z)), c1] = -torch.inf
        c2 = others.argmax(1)
        margin = logits.gather(1, c1[:, None]) - logits.gather(1, c2[:, None])
        (w,) = torch.autograd.grad(margin.sum(), z)
    b = margin.detach()[:, 0] - (w * z.detach()).sum(1)
    return Boundaries(w, b, points.detach(), torch.stack([c1, c2], 1))


def _margin_of(logits: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    """``G_cls - max_{c != cls} G_c`` of logits ``[n, K]`` with one class per row
    (``cls [n]``): > 0 where ``cls`` wins."""
    own = cls[:, None].to(logits.device)
    return logits.gather(1, own)[:, 0] - logits.scatter(1, own, -torch.inf).max(1).values


def _margin(head: nn.Module, z: torch.Tensor, shape: tuple[int, ...],
            cls: torch.Tensor) -> torch.Tensor:
    """:func:`_margin_of` at points ``[n, D]``."""
    return _margin_of(_logits(head, z, shape), cls)


@torch.no_grad()
def bisect_segments(head: nn.Module, origin: torch.Tensor, targets: torch.Tensor,
                    cls: int | torch.Tensor, shape: tuple[int, ...], *, max_iter: int = 40,
                    tol: float = 1e-5, target_logits: torch.Tensor | None = None,
                    owner: torch.Tensor | None = None) -> torch.Tensor:
    """For every segment ``origin -> targets[q]``, the position ``t [Q, 1]`` of the last
    point still classified ``cls``: a point on the decision boundary.

    Several seeds' searches share the head passes: ``origin [k, D]`` holds ``k`` seeds,
    ``owner [Q]`` the seed of each segment (default: all the first) and ``cls`` their
    classes (an int, or ``[k]``). Each segment's result is the one a search of its seed
    alone finds (its tolerance and noise floor are its own seed's); a summary searches
    the seeds of every class at once (:meth:`RepresentativeInterpreter.summarize`), so
    that a GPU runs a few large head passes instead of many small ones.

    Along a segment the margin ``m(t) = G_cls - max_{c != cls} G_c`` is piecewise linear
    in ``t`` for a PL head, so the search is *regula falsi* on the bracket ``[lo, hi]``
    (``m(lo) >= 0 > m(hi)``), with the Illinois safeguard (the endpoint kept twice in a
    row has its margin halved) and a bisection step whenever a step shrinks the bracket
    by less than half. Once the bracket lies in one linear piece the next step is exact.
    Only unfinished segments go through the head. A segment is finished when
    ``m(lo) < tol`` (as the paper lineage's bisection), when its whole bracket is within
    the head's rounding noise (``m(lo) - m(hi) < 256 eps max|G(origin)|``: both ends are
    zero to the precision the head is evaluated in, and a further step only follows the
    noise), when no float ``t`` is left between ``lo`` and ``hi`` (the noise jumps by
    more than that between neighbouring points), or after ``max_iter`` steps; ``tol`` is
    raised to ``64 eps max|G(origin)|``. One host synchronisation per pass (the list of
    unfinished segments).
    ``target_logits`` (``G`` at the targets, when already known) saves the first pass.
    Departure from the lineage: bisection there (about 40 head passes). Measured on
    resnet50 at 224x224 in float32 (``docs/performance.md``): 19 passes for 50 segments,
    median 11 per segment; without the noise rule 5 of them followed the noise to
    ``max_iter`` (a float32 resnet50 head's margin is noisy at about ``3e-4`` for logits
    of size 8, about ``300 eps``; checked against the same head in float64).
    """
    n = len(targets)
    if owner is None:
        owner = torch.zeros(n, dtype=torch.long, device=origin.device)
    owner = owner.to(origin.device)
    seg_cls = (cls.to(origin.device)[owner] if isinstance(cls, torch.Tensor)
               else torch.full((n,), int(cls), dtype=torch.long, device=origin.device))
    start = origin[owner]
    direction = targets - start
    lo = torch.zeros(n, dtype=origin.dtype, device=origin.device)
    hi = torch.ones_like(lo)
    at_origin = _logits(head, origin, shape)
    # below the rounding floor of the logits a margin is noise: never ask for less
    floor = (torch.finfo(origin.dtype).eps * at_origin.abs().amax(1))[owner]
    tol_, noise = torch.clamp(64 * floor, min=tol), 256 * floor
    m_lo = _margin_of(at_origin[owner], seg_cls)           # true margins at lo
    m_hi = (_margin(head, targets, shape, seg_cls) if target_logits is None
            else _margin_of(target_logits.to(m_lo), seg_cls))
    w_lo, w_hi = m_lo.clone(), m_hi.clone()        # the secant's (Illinois-weighted) ones
    # a target still classified cls (a tie at the end of the segment): the end is the point
    done = m_hi >= 0
    lo = torch.where(done, hi, lo)
    kept = torch.zeros(n, dtype=torch.int8, device=origin.device)  # +1 lo kept, -1 hi kept
    bisect = torch.zeros(n, dtype=torch.bool, device=origin.device)
    for _ in range(max_iter):
        open_ = torch.nextafter(lo, hi) < hi        # a float t still lies inside
        act = (~done & open_ & (m_lo >= tol_) & (m_lo - m_hi >= noise)).nonzero()[:, 0]
        if len(act) == 0:
            break
        a, b = lo[act], hi[act]
        t = a + w_lo[act] * (b - a) / (w_lo[act] - w_hi[act])
        t = torch.where(bisect[act] | ~((t > a) & (t < b)), (a + b) / 2, t)
        m = _margin(head, start[act] + t[:, None] * direction[act], shape, seg_cls[act])
        inside = m >= 0
        lo[act], hi[act] = torch.where(inside, t, a), torch.where(inside, b, t)
        m_lo[act] = torch.where(inside, m, m_lo[act])
        m_hi[act] = torch.where(inside, m_hi[act], m)
        side = torch.where(inside, -1, 1).to(kept.dtype)       # the endpoint not moved
        again = kept[act] == side
        # Illinois: an endpoint kept twice in a row counts half in the next secant
        w_lo[act] = torch.where(inside, m, torch.where(again, w_lo[act] / 2, w_lo[act]))
        w_hi[act] = torch.where(inside, torch.where(again, w_hi[act] / 2, w_hi[act]), m)
        kept[act] = side
        bisect[act] = (hi[act] - lo[act]) > (b - a) / 2          # too slow: halve next
    return lo[:, None]


def flip(b: Boundaries, signs: torch.Tensor) -> Boundaries:
    """Multiply each boundary by its sign (``[Q]``, +1 or -1). A flipped boundary's class
    pair is swapped too, so that ``weights[q]`` stays ``grad (G_c1 - G_c2)`` for
    ``(c1, c2) = pairs[q]``."""
    s = signs.to(b.weights)
    swap = (signs < 0).to(b.pairs.device)[:, None]
    return Boundaries(b.weights * s[:, None], b.biases * s, b.points,
                      torch.where(swap, b.pairs.flip(1), b.pairs))


def orientation(seed_values: torch.Tensor) -> torch.Tensor:
    """``[Q]`` signs that put the seed on the non-negative side of every boundary, from
    its side values ``w . psi(x) + b`` as membership computes them (so that the seed
    always lies in its own region, whatever the rounding)."""
    return torch.where(seed_values >= 0, 1.0, -1.0).to(seed_values.dtype)
