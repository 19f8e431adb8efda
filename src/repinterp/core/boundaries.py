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

__all__ = ["Boundaries", "bisect_segments", "bisect_to_boundary", "boundaries_at", "flip",
           "orientation"]


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


@torch.no_grad()
def bisect_segments(head: nn.Module, origin: torch.Tensor, targets: torch.Tensor, cls: int,
                    shape: tuple[int, ...], *, max_iter: int = 40,
                    tol: float = 1e-5) -> torch.Tensor:
    """For every segment ``origin -> targets[q]``, the position ``t [Q, 1]`` of the last
    point still classified ``cls``.

    Bisection on ``t`` in ``[0, 1]`` keeps ``lo`` classified ``cls`` and ``hi`` not; it
    stops after ``max_iter`` halvings or once every ``lo`` point has a top-2 margin below
    ``tol``.
    """
    direction = targets - origin
    lo = torch.zeros(len(targets), 1, dtype=origin.dtype, device=origin.device)
    hi = torch.ones_like(lo)
    lo_margin = torch.full_like(lo, torch.inf)
    for _ in range(max_iter):
        mid = (lo + hi) / 2
        top2 = _logits(head, origin + mid * direction, shape).topk(2, 1)
        inside = (top2.indices[:, :1] == cls)
        lo = torch.where(inside, mid, lo)
        hi = torch.where(inside, hi, mid)
        margin = top2.values[:, :1] - top2.values[:, 1:]
        lo_margin = torch.where(inside, margin, lo_margin)
        if bool((lo_margin < tol).all()):
            break
    return lo


def bisect_to_boundary(head: nn.Module, origin: torch.Tensor, targets: torch.Tensor,
                       cls: int, shape: tuple[int, ...], **kw) -> torch.Tensor:
    """The points ``[Q, D]`` of :func:`bisect_segments`."""
    return origin + bisect_segments(head, origin, targets, cls, shape, **kw) * (targets - origin)


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
