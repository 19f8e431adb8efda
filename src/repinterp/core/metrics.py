"""Fidelity metrics for heat maps (METHOD §5): keep the most important pixels, and
measure how the class probability reacts.

* :func:`keep_top` keeps the ``keep`` share of pixels with the highest heat and fills the
  rest with a baseline value (0 in normalised input space = the dataset mean).
* :func:`average_drop_increase`: per image, ``max(0, Y_c(e) - Y_c(e')) / Y_c(e)`` (Average
  Drop; pytorch-grad-cam's ``DropInConfidence`` without the division) and
  ``1[Y_c(e) < Y_c(e')]`` (Average Increase, its ``IncreaseInConfidence``).
* :func:`paired_ci`: the mean paired difference of two methods over seeds, with a
  bootstrap confidence interval.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .network import inference_mode

__all__ = ["average_drop_increase", "keep_top", "paired_ci"]


def keep_top(images: torch.Tensor, heat: torch.Tensor, keep: float = 0.2,
             baseline: float = 0.0) -> torch.Tensor:
    """Keep the ``keep`` share of pixels with the highest heat (``ceil(keep * H * W)``
    pixels, ties by index), set the rest of every channel to ``baseline``."""
    n, _, h, w = images.shape
    m = math.ceil(keep * h * w)
    idx = heat.reshape(n, -1).topk(m, dim=1, sorted=False).indices
    mask = torch.zeros(n, h * w, dtype=torch.bool, device=images.device)
    mask.scatter_(1, idx.to(images.device), True)
    mask = mask.view(n, 1, h, w)
    return torch.where(mask, images, torch.full_like(images, baseline))


@torch.no_grad()
def average_drop_increase(model: nn.Module, images: torch.Tensor, masked: torch.Tensor,
                          cls: int | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image: ``max(0, Y - Y') / Y`` and ``1[Y < Y']`` for class ``cls``.

    ``max(0, Y - Y') / Y = max(0, 1 - exp(log Y' - log Y))``, computed from float64
    log-softmax so that probabilities near 1 stay distinct.
    """
    with inference_mode(model):
        y = model(images).double().log_softmax(1)
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
