"""Fidelity metrics for heat maps (METHOD §5): keep the most important pixels, and
measure how the class probability reacts.

* :func:`keep_top` keeps the ``keep`` share of pixels with the highest heat and fills the
  rest with a baseline value (0 in normalised input space = the dataset mean).
* :func:`average_drop_increase`: per image, ``max(0, Y_c(e) - Y_c(e')) / Y_c(e)`` (Average
  Drop; pytorch-grad-cam's ``DropInConfidence`` without the division) and
  ``1[Y_c(e) < Y_c(e')]`` (Average Increase, its ``IncreaseInConfidence``).
* :func:`blur`: a Gaussian blur of each image, the in-distribution fill (a masked pixel
  takes its blurred value instead of the dataset mean).
* :func:`deletion_insertion`: the class probability as the most important pixels are
  removed (deletion) or, from the fill, restored (insertion), step by step, with the
  areas under both curves (Petsiuk et al., RISE, BMVC 2018).
* :func:`wilson_interval`: the Wilson score interval of a proportion (a region's
  held-out purity: ``k`` of ``n`` images inside predicted as its class).
* :func:`paired_ci`: the mean paired difference of two methods over seeds, with a
  bootstrap confidence interval.
* :func:`precision_at_k`, :func:`auroc` and :func:`heat_share`: how well a score of
  every image (a region's ranking, a cluster's distance) matches a known slice, as
  dcbench scores slice discovery (Eyuboglu et al., "Domino", ICLR 2022), and how much of
  a heat map lies on a mask.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .copies import inference_mode
from .logits import logits_of

__all__ = ["auroc", "average_drop_increase", "blur", "deletion_insertion", "heat_share",
           "keep_top", "paired_ci", "precision_at_k", "rank_pixels", "wilson_interval"]


def keep_top(images: torch.Tensor, heat: torch.Tensor, keep: float = 0.2,
             baseline: float | torch.Tensor = 0.0) -> torch.Tensor:
    """Keep the ``keep`` share of pixels with the highest heat (``ceil(keep * H * W)``
    pixels, ties by index), set the rest of every channel to ``baseline``: a number, or
    images of the same shape (e.g. :func:`blur` of ``images``)."""
    n, _, h, w = images.shape
    m = math.ceil(keep * h * w)
    idx = heat.reshape(n, -1).topk(m, dim=1, sorted=False).indices
    mask = torch.zeros(n, h * w, dtype=torch.bool, device=images.device)
    mask.scatter_(1, idx.to(images.device), True)
    mask = mask.view(n, 1, h, w)
    fill = torch.as_tensor(baseline, dtype=images.dtype, device=images.device)
    return torch.where(mask, images, fill.expand_as(images))


def blur(images: torch.Tensor, sigma: float = 2.0) -> torch.Tensor:
    """Gaussian blur of every channel of ``images`` ``[n, C, H, W]`` (kernel radius
    ``ceil(3 sigma)``, reflected borders): the in-distribution fill."""
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    k = torch.exp(-x ** 2 / (2 * sigma ** 2))
    k = k / k.sum()
    c = images.shape[1]
    pad = min(radius, images.shape[-1] - 1, images.shape[-2] - 1)
    out = nn.functional.pad(images, (pad, pad, pad, pad), mode="reflect")
    if pad < radius:                                  # tiny images: zero-pad the rest
        out = nn.functional.pad(out, [radius - pad] * 4, mode="replicate")
    out = nn.functional.conv2d(out, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return nn.functional.conv2d(out, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def rank_pixels(heat: torch.Tensor) -> torch.Tensor:
    """``[n, H*W]`` pixel indices of each heat map, most important first (ties by index)."""
    flat = heat.reshape(len(heat), -1)
    return torch.sort(-flat, dim=1, stable=True).indices


@torch.no_grad()
def deletion_insertion(model: nn.Module, images: torch.Tensor, heat: torch.Tensor,
                       cls: int | torch.Tensor, *, steps: int = 10,
                       fill: float | torch.Tensor = 0.0) -> dict[str, torch.Tensor]:
    """Deletion and insertion curves of heat maps and their areas.

    At step ``s = 0..steps`` the ``round(s / steps * H * W)`` most important pixels
    (:func:`rank_pixels`) are replaced by ``fill`` (deletion) or, in an image that is all
    ``fill``, restored (insertion); ``P_cls`` is the softmax probability. The area is
    the trapezoid rule over the removed share ``0..1``:
    ``sum_s (P_s + P_{s+1}) / (2 steps)``. Deletion: lower is better; insertion: higher.

    Returns ``deletion`` and ``insertion`` ``[n, steps + 1]`` and their areas
    ``deletion_auc``, ``insertion_auc`` ``[n]`` (float64).
    """
    n, _, h, w = images.shape
    order = rank_pixels(heat).to(images.device)
    base = torch.as_tensor(fill, dtype=images.dtype, device=images.device).expand_as(images)
    c = torch.as_tensor(cls, device=images.device).expand(n)
    dele: list[torch.Tensor] = []
    ins: list[torch.Tensor] = []
    with inference_mode(model):
        for s in range(steps + 1):
            k = round(s / steps * h * w)
            mask = torch.zeros(n, h * w, dtype=torch.bool, device=images.device)
            mask.scatter_(1, order[:, :k], True)
            mask = mask.view(n, 1, h, w)
            for curve, x in ((dele, torch.where(mask, base, images)),
                             (ins, torch.where(mask, images, base))):
                p = logits_of(model(x)).double().softmax(1)
                curve.append(p.gather(1, c[:, None])[:, 0])
    d, i = torch.stack(dele, 1), torch.stack(ins, 1)

    def area(curve: torch.Tensor) -> torch.Tensor:
        return ((curve[:, 1:] + curve[:, :-1]) / (2 * steps)).sum(1)

    return {"deletion": d, "insertion": i, "deletion_auc": area(d), "insertion_auc": area(i)}


@torch.no_grad()
def average_drop_increase(model: nn.Module, images: torch.Tensor, masked: torch.Tensor,
                          cls: int | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image: ``max(0, Y - Y') / Y`` and ``1[Y < Y']`` for class ``cls``.

    ``max(0, Y - Y') / Y = max(0, 1 - exp(log Y' - log Y))``, computed from float64
    log-softmax so that probabilities near 1 stay distinct.
    """
    with inference_mode(model):
        y = logits_of(model(images)).double().log_softmax(1)
        y2 = model(masked).double().log_softmax(1)
    c = torch.as_tensor(cls).expand(len(images)).to(y.device)
    lp, lp2 = y.gather(1, c[:, None])[:, 0], y2.gather(1, c[:, None])[:, 0]
    # in float64 log space: a float32 softmax rounds confident images to exactly 1.0,
    # where no increase could ever be seen
    return (1 - (lp2 - lp).exp()).clamp_min(0), (lp < lp2).double()


def paired_ci(a: np.ndarray, b: np.ndarray, *, n_boot: int = 10000, seed: int = 0,
              level: float = 0.95) -> tuple[float, float, float]:
    """Mean of ``a - b`` over seeds where both are defined, and its bootstrap CI."""
    ok = ~(np.isnan(a) | np.isnan(b))
    d = (a - b)[ok]
    if len(d) == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(1)
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return float(d.mean()), float(lo), float(hi)


def precision_at_k(scores: torch.Tensor, in_slice: torch.Tensor, k: int) -> float:
    """Share of the slice among the ``k`` items with the highest ``scores``, as dcbench
    defines it (``slice[argsort(-scores)[:k]].mean()``): always over ``k`` items of a
    score of *every* item, so that a method returning few items is not rewarded (items it
    leaves out still fill the top ``k`` in the order its scores give them). Ties go to
    the lower index; ``k`` larger than the number of items counts them all.
    """
    s = torch.as_tensor(scores, dtype=torch.float64).flatten()
    y = torch.as_tensor(in_slice, dtype=torch.bool).flatten()
    if len(s) != len(y):
        raise ValueError(f"precision@k needs a score for every item: {len(s)} scores "
                         f"for {len(y)} items")
    if k < 1 or len(s) == 0:
        raise ValueError(f"precision@k needs k >= 1 and at least one item (k={k}, "
                         f"{len(s)} items)")
    top = torch.sort(-s, stable=True).indices[:k]
    return float(y[top].double().mean())


def auroc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve of ``scores`` for bool ``labels``: the probability that a
    positive scores above a negative, ties counting one half (Mann-Whitney U with mid
    ranks). NaN when a class is missing."""
    s = torch.as_tensor(scores, dtype=torch.float64).flatten()
    y = torch.as_tensor(labels, dtype=torch.bool).flatten()
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = torch.argsort(s, stable=True)
    sorted_s = s[order]
    ranks = torch.empty_like(s)
    ranks[order] = torch.arange(1, len(s) + 1, dtype=torch.float64)
    # mid ranks for ties: the mean rank of each run of equal scores
    _, inverse, counts = torch.unique_consecutive(sorted_s, return_inverse=True,
                                                  return_counts=True)
    ends = counts.cumsum(0).double()
    mid = ends - (counts.double() - 1) / 2
    ranks[order] = mid[inverse]
    u = float(ranks[y].sum()) - n_pos * (n_pos + 1) / 2
    return u / (n_pos * n_neg)


def heat_share(heat: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per heat map ``[n, H, W]`` (non-negative), the share of its total mass on the
    pixels of ``mask`` (``[H, W]``, or ``[n, H, W]``: one per map); NaN for an all-zero
    map."""
    h = heat.double().flatten(1)
    m = torch.as_tensor(mask, dtype=torch.bool).to(h.device)
    m = m.flatten(-2).expand_as(h)
    total = h.sum(1)
    return torch.where(total > 0, (h * m).sum(1) / total.clamp_min(1e-300),
                       torch.full_like(total, float("nan")))


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of the proportion ``k / n`` at ``confidence``:
    ``(p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)``, ``z`` the normal
    quantile of ``(1 + confidence) / 2`` (Wilson, JASA 1927). Unlike the normal
    approximation it stays in [0, 1] and is not empty at ``k = n``: for 200 of 200 the
    95% interval is about [0.981, 1]. Raises ValueError for ``n < 1`` or ``k`` outside
    ``0..n``."""
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    from statistics import NormalDist
    z = NormalDist().inv_cdf((1 + confidence) / 2)
    p, z2 = k / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    low = 0.0 if k == 0 else max(0.0, centre - half)       # exact at the ends
    return low, 1.0 if k == n else min(1.0, centre + half)
