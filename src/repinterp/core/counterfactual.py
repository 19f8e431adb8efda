"""The edit that leaves a region: a small change to an image, in pixel space, that takes
its features across one of the region's boundaries.

For an image ``x`` inside a region with boundaries ``s_h(z) = w_h . z + b_h >= 0``
(``z = psi(x)``), the edit crosses boundary ``h*``: the one of smallest first-order
input-space distance ``s_h(psi(x)) / ||grad_x s_h(psi(x))||`` (among the boundaries
against ``target`` when a target class is named). The edit is found as DeepFool
(Moosavi-Dezfooli et al., CVPR 2016) finds one, on the region's boundary instead of the
logits: repeatedly linearise ``f(x') = s_h*(psi(x'))`` and take the smallest L2 step to
a value just past zero, ``-(f - aim) g / ||g||^2`` with ``g = grad f`` (``aim`` starts
``overshoot`` past zero and doubles while the plane is crossed but the prediction has not
changed yet), the gradient smoothed by a Gaussian of ``smooth`` pixels (a smoothness
prior: the edit is a few soft blobs, not noise), pixels kept in ``[0, 1]`` when the
image is (a step moves no pixel that it would push out), until the boundary is crossed
and the model no longer predicts the region's class, or ``steps`` steps. Deterministic:
no random draw.

:func:`margin_edit` is the same search on the logit margin ``G_c1 - G_c2`` without the
region (a targeted DeepFool step, what a user would otherwise run), and
:func:`interpolation_edit` the shortest blend ``(1 - t) x + t x_n`` towards a contrastive
neighbour ``x_n`` (:mod:`repinterp.core.contrast`) that the model predicts otherwise: the
two baselines the region-guided edit is measured against (``docs/results.md``).

Not in the paper.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from .errors import UserError
from .region import Region

__all__ = ["Counterfactual", "interpolation_edit", "margin_edit", "nearest_boundary",
           "region_edit"]

#: the pixel-change threshold of :attr:`Counterfactual.changed` (one grey level)
LEVEL = 1 / 255


@dataclass
class Counterfactual:
    """An edited image and what the model makes of it.

    Attributes
    ----------
    image, original
        The edited image and the image, ``[C, H, W]``.
    boundary
        The region's boundary the edit aimed at (``None`` for the baselines).
    source, target
        The class the model predicted for the image, and the class the edit aimed at
        (the boundary's other class).
    predicted
        The class the model predicts for the edited image.
    crossed
        Whether the edited image is on the far side of ``boundary`` (``None`` for the
        baselines).
    steps
        Gradient steps taken (bisection steps for :func:`interpolation_edit`).
    """

    image: torch.Tensor
    original: torch.Tensor
    boundary: int | None
    source: int
    target: int
    predicted: int
    crossed: bool | None
    steps: int

    @property
    def success(self) -> bool:
        """The model now predicts the class the edit aimed at."""
        return self.predicted == self.target

    @property
    def difference(self) -> torch.Tensor:
        """``image - original``."""
        return self.image - self.original

    @property
    def l2(self) -> float:
        """``||image - original||_2`` over all pixels and channels."""
        return float(self.difference.double().norm())

    @property
    def changed(self) -> float:
        """Share of pixels changed by more than one grey level (``1/255``) in any
        channel."""
        return float((self.difference.abs() > LEVEL).any(0).double().mean())

    def __repr__(self) -> str:
        crossed = "" if self.boundary is None else \
            f"across boundary {self.boundary}{'' if self.crossed else ' (not crossed)'}, "
        return (f"Counterfactual(class {self.source} -> {self.predicted}, {crossed}"
                f"aimed at {self.target}, L2 {self.l2:.3g}, {100 * self.changed:.1f}% of "
                f"pixels changed, {self.steps} steps)")


class Network(Protocol):
    """What an edit needs of a split network (:class:`~repinterp.core.network.SplitNetwork`
    has both): ``grad_features(x)`` ``[n, D]`` and ``grad_logits(z)`` ``[n, K]``, with
    gradients to their inputs."""

    def grad_features(self, images: torch.Tensor) -> torch.Tensor: ...

    def grad_logits(self, z: torch.Tensor) -> torch.Tensor: ...


def _blur(g: torch.Tensor, sigma: float) -> torch.Tensor:
    """``g`` ``[C, H, W]`` convolved with a Gaussian of ``sigma`` pixels (reflect
    padding; ``sigma <= 0``: ``g``)."""
    if sigma <= 0:
        return g
    r = max(1, int(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=g.dtype, device=g.device)
    k = torch.exp(-t ** 2 / (2 * sigma ** 2))
    k = k / k.sum()
    c = g.shape[0]
    x = torch.nn.functional.pad(g[None], (r, r, r, r), mode="reflect")
    x = torch.nn.functional.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    x = torch.nn.functional.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return x[0]


def _search(objective: Callable[[torch.Tensor], torch.Tensor],
            done: Callable[[torch.Tensor], bool], image: torch.Tensor, *,
            steps: int, smooth: float, overshoot: float) -> tuple[torch.Tensor, int]:
    """The DeepFool search for ``objective(x) <= aim`` (a scalar, positive on the
    image's side) until ``done(x)``; the edited image and the steps taken.

    ``aim`` starts at ``-overshoot |f(image)|`` and doubles while ``f`` is past half of
    it but ``done`` does not hold (the boundary's plane crossed, the prediction not changed
    yet). With the smoothed gradient ``g'`` a step is ``-(f - aim) g' / (g . g')``: the
    linearised objective reaches ``aim`` along ``g'`` (``g . g' > 0`` for a Gaussian;
    else ``g`` itself)."""
    clamp = bool(image.min() >= 0 and image.max() <= 1)
    x = image.detach().clone()
    aim = None
    for k in range(steps):
        if done(x):
            return x, k
        xg = x.clone().requires_grad_(True)
        with torch.enable_grad():
            f = objective(xg[None])
            (g,) = torch.autograd.grad(f, xg)
        value = float(f.detach())
        if aim is None:
            aim = -overshoot * max(abs(value), 1e-12)
        elif value <= aim / 2:           # past zero by half the aim at least
            aim *= 2
        up = value > aim                 # the step goes along -g (else along +g)

        def free(d: torch.Tensor) -> torch.Tensor:
            """``d`` without the pixels a step along it would push out of [0, 1]."""
            if not clamp:
                return d
            out = (d > 0) if up else (d < 0)
            return d * ~(((x <= 0) & out) | ((x >= 1) & ~out & (d != 0)))

        g = free(g)
        direction = free(_blur(g, smooth))
        denom = float((g.double() * direction.double()).sum())
        if denom <= 0:
            direction, denom = g, float(g.double().pow(2).sum())
        if denom == 0:
            return x, k
        x = (x - (value - aim) / denom * direction).detach()
        if clamp:
            x = x.clamp(0, 1)
    return x, steps


def nearest_boundary(net: Network, region: Region, image: torch.Tensor,
                     target: int | None = None) -> int:
    """The region's boundary of smallest first-order input-space distance from
    ``image``, ``s_h / ||grad_x s_h||`` (among those against ``target`` when given)."""
    allowed = torch.arange(region.num_boundaries)
    if target is not None:
        allowed = (region.pairs[:, 1] == int(target)).nonzero()[:, 0]
        if not len(allowed):
            against = sorted({int(c) for c in region.pairs[:, 1]})
            raise UserError(f"the region has no boundary against class {target} (its "
                            f"boundaries are against {against})")
    if region.num_boundaries == 0:
        raise UserError("the region has no boundary to cross")
    if len(allowed) == 1:
        return int(allowed[0])
    x = image.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        side = region.side_values(net.grad_features(x[None]))[0, allowed]
        try:                             # every boundary's gradient in one batched pass
            (g,) = torch.autograd.grad(side, x, torch.eye(len(allowed)).to(side),
                                       is_grads_batched=True)
        except RuntimeError:             # an operation without a batching rule
            g = torch.stack([torch.autograd.grad(side[k], x, retain_graph=True)[0]
                             for k in range(len(allowed))])
    dist = side.detach().double() / g.flatten(1).double().norm(dim=1).clamp_min(1e-30)
    return int(allowed[int(dist.argmin())])


def region_edit(net: Network, region: Region, image: torch.Tensor, *,
                target: int | None = None, steps: int = 50, smooth: float = 1.0,
                overshoot: float = 0.02) -> Counterfactual:
    """The region-guided edit of ``image`` (module docstring): across the nearest
    boundary of ``region`` (against ``target`` when given)."""
    h = nearest_boundary(net, region, image, target)
    source = int(region.predicted_class)
    aim = int(region.pairs[h, 1])

    def side(x: torch.Tensor) -> torch.Tensor:
        return region.side_values(net.grad_features(x))[:, h].sum()

    def where(x: torch.Tensor) -> tuple[bool, int]:
        with torch.no_grad():
            z = net.grad_features(x[None])
            return bool(float(region.side_values(z)[0, h]) < 0), \
                int(net.grad_logits(z).argmax(1)[0])

    def done(x: torch.Tensor) -> bool:
        crossed, predicted = where(x)
        return crossed and predicted != source

    x, k = _search(side, done, image, steps=steps, smooth=smooth, overshoot=overshoot)
    crossed, predicted = where(x)
    return Counterfactual(x, image.detach().clone(), h, source, aim, predicted, crossed, k)


def margin_edit(net: Network, image: torch.Tensor, source: int, target: int, *,
                steps: int = 50, smooth: float = 1.0, overshoot: float = 0.02
                ) -> Counterfactual:
    """The baseline without the region: the same search on ``G_source - G_target``
    until the model no longer predicts ``source``."""
    def margin(x: torch.Tensor) -> torch.Tensor:
        out = net.grad_logits(net.grad_features(x))
        return (out[:, source] - out[:, target]).sum()

    def done(x: torch.Tensor) -> bool:
        with torch.no_grad():
            return int(net.grad_logits(net.grad_features(x[None])).argmax(1)[0]) != source

    x, k = _search(margin, done, image, steps=steps, smooth=smooth, overshoot=overshoot)
    with torch.no_grad():
        predicted = int(net.grad_logits(net.grad_features(x[None])).argmax(1)[0])
    return Counterfactual(x, image.detach().clone(), None, source, target, predicted,
                          None, k)


def interpolation_edit(net: Network, image: torch.Tensor, neighbour: torch.Tensor,
                       source: int, *, steps: int = 20) -> Counterfactual:
    """The other baseline: ``(1 - t) image + t neighbour`` with the smallest ``t`` in
    ``(0, 1]`` (bisection, ``steps`` halvings) at which the model no longer predicts
    ``source``; ``target`` is what it predicts for ``neighbour``."""
    def predict(t: float) -> int:
        with torch.no_grad():
            blend = ((1 - t) * image + t * neighbour)[None]
            return int(net.grad_logits(net.grad_features(blend)).argmax(1)[0])

    aim = predict(1.0)
    lo, hi = 0.0, 1.0
    if aim != source:
        for _ in range(steps):
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if predict(mid) != source else (mid, hi)
    x = ((1 - hi) * image + hi * neighbour).detach()
    return Counterfactual(x, image.detach().clone(), None, source, aim, predict(hi), None,
                          steps if aim != source else 0)
