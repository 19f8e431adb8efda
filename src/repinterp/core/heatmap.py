"""Heat maps shared by a decision region (METHOD §4).

Every variant is a function of the region alone (its boundary normals ``w_h`` reshaped
to the feature map shape ``C x h x w``) applied to an image's features ``psi(x')``; no
per-image gradient is taken, so one set of weights explains the whole group.

``lineage``
    ``a_h[k] = mean_ij w_h[k, i, j]``; ``map_h = ReLU(sum_k a_h[k] psi_k)``, upsampled,
    min-max normalised; the heat map is the mean over ``h``. As in the RCExplainer code.
``positive``
    ``map_h = sum_k ReLU(w_h[k]) * psi_k``: only the feature positions that push the
    seed's class up across the boundary, spatially resolved. Upsampled, min-max
    normalised, averaged over ``h``.
``contribution``
    ``map_h = ReLU(sum_k w_h[k] * psi_k)``: each position's signed contribution to the
    boundary's margin ``w_h . psi`` (gradient x activation with the region's normals).
    Upsampled, min-max normalised, averaged over ``h``.
``margin``
    ``ReLU(sum_h sum_k w_h[k] * psi_k)``: the contributions to the sum of all margins,
    so boundaries with larger normals weigh more. Upsampled, min-max normalised.
``logprob``
    ``contribution`` with ``w_h`` replaced by ``g_h = grad_z log softmax(G(z))_c`` at the
    boundary point of ``h``: the contribution of each position to the log-probability of
    the seed's class, as seen from the region's boundary points (not from the image).
    The caller passes ``g_h`` as ``weights`` (see
    :meth:`repinterp.core.network.SplitNetwork.heatmap_of_features`).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from . import defaults
from .errors import UserError

__all__ = ["METHODS", "Contribution", "HeatmapMethod", "Lineage", "Logprob", "Margin",
           "Positive", "channels_first", "heatmap_method", "unregister",
           "looks_channels_last", "minmax", "region_heatmap", "token_grid"]

_REGISTRY: dict[str, type[HeatmapMethod]] = {}


class HeatmapMethod:
    """A way to turn a region's weights into maps: a subclass sets :attr:`name` (which
    registers it) and :meth:`maps`; :attr:`needs_class_gradients` says that its weights
    are the class log-probability gradients at the boundary points, which the caller
    computes through the head, instead of the boundary normals."""

    name: ClassVar[str] = ""
    needs_class_gradients: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name:
            _REGISTRY[cls.name] = cls

    @staticmethod
    def maps(weights: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Maps ``[n, P', h, w]`` before the ReLU from ``weights [P, C, h, w]`` and
        ``features [n, C, h, w]`` (``P'`` = ``P``, or 1 for a map of all boundaries)."""
        raise NotImplementedError


class Lineage(HeatmapMethod):
    name = "lineage"

    @staticmethod
    def maps(weights: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        return torch.einsum("pc,nchw->nphw", weights.mean((2, 3)), features)


class Positive(HeatmapMethod):
    name = "positive"

    @staticmethod
    def maps(weights: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        return torch.einsum("pchw,nchw->nphw", weights.relu(), features)


class Contribution(HeatmapMethod):
    name = "contribution"

    @staticmethod
    def maps(weights: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        return torch.einsum("pchw,nchw->nphw", weights, features)


class Margin(HeatmapMethod):
    name = "margin"

    @staticmethod
    def maps(weights: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        return torch.einsum("pchw,nchw->nhw", weights, features)[:, None]


class Logprob(Contribution):
    name = "logprob"
    needs_class_gradients = True


#: The built-in methods' names (:func:`heatmap_method` also finds methods registered later)
METHODS = tuple(_REGISTRY)


def heatmap_method(name: str) -> type[HeatmapMethod]:
    """The registered method ``name``; a :class:`UserError` naming the choices."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise UserError(f"unknown heat map method {name!r}; choose from "
                        f"{tuple(_REGISTRY)}") from None


def unregister(name: str) -> None:
    """Forget the method ``name`` (a built-in one cannot be forgotten)."""
    if name in METHODS:
        raise UserError(f"{name!r} is a built-in heat map method")
    _REGISTRY.pop(name, None)


def minmax(maps: torch.Tensor) -> torch.Tensor:
    """Scale each map of ``[..., H, W]`` to ``[0, 1]``; a constant map becomes 0."""
    flat = maps.flatten(-2)
    lo = flat.min(-1, keepdim=True).values
    span = flat.max(-1, keepdim=True).values - lo
    out = torch.where(span > 0, (flat - lo) / span.clamp_min(1e-30), torch.zeros_like(flat))
    return out.view_as(maps)


def channels_first(maps: torch.Tensor) -> torch.Tensor:
    """Channels-last maps ``[n, h, w, C]`` (Swin's layout) as ``[n, C, h, w]``."""
    return maps.permute(0, 3, 1, 2)


def looks_channels_last(shape: tuple[int, ...], image: tuple[int, int]) -> bool:
    """True when a feature map of ``shape`` (without the batch) is channels-last
    ``(h, w, C)`` for an input of ``image = (H, W)`` pixels: its first two sizes share one
    stride into the image and its last two do not (a ``(C, h, w)`` map's last two do).
    A map that reads both ways (``7 x 7 x 7``) is taken as ``(C, h, w)``."""
    if len(shape) != 3:
        return False

    def on_grid(h: int, w: int) -> bool:
        return 1 < h <= image[0] and 1 < w <= image[1] and \
            round(image[0] / h) == round(image[1] / w)

    return on_grid(shape[0], shape[1]) and not on_grid(shape[1], shape[2])


def token_grid(tokens: torch.Tensor) -> torch.Tensor:
    """Tokens ``[n, T, D]`` of a vision transformer as a feature map ``[n, D, h, w]``:
    the last ``h * w`` tokens are the patches in raster order (``h = w``, the largest
    square that leaves at most 8 leading tokens: a class token, distillation or register
    tokens), which are dropped, as pytorch-grad-cam's ``reshape_transform`` does."""
    t = tokens.shape[1]
    side = int(t ** 0.5)
    while side > 0 and t - side * side > 8:
        side -= 1
    if side == 0 or t - side * side > 8:
        raise ValueError(f"{t} tokens are not a square grid of patches (plus at most 8 "
                         "leading tokens)")
    grid = tokens[:, t - side * side:]
    return grid.transpose(1, 2).reshape(len(tokens), tokens.shape[2], side, side)


def region_heatmap(weights: torch.Tensor, features: torch.Tensor, size: tuple[int, int],
                   method: str = defaults.HEATMAP_METHOD, grid: tuple[int, int] | None = None,
                   reshape: Callable[[torch.Tensor], torch.Tensor] | None = None
                   ) -> torch.Tensor:
    """Heat maps ``[n, H, W]`` in ``[0, 1]`` of ``features [n, C, h, w]``.

    Parameters
    ----------
    weights
        Boundary normals ``[P, C, h, w]`` oriented towards the seed's side (for
        ``logprob``: the class log-probability gradients at the boundary points).
    size
        Output ``(H, W)``, the input image size.
    method
        A registered :class:`HeatmapMethod`'s name (:data:`METHODS`: the built-in
        ones; default :data:`repinterp.core.defaults.HEATMAP_METHOD`).
    grid
        The head's grid (:attr:`repinterp.core.network.SplitNetwork.head_grid`): when
        coarser than ``h x w``, each map (before its ReLU) is averaged over the cells of
        that grid (``adaptive_avg_pool2d``), then rectified and upsampled. A head that
        starts with a stride-2 convolution reads its input on every other position, so
        its boundary normals alternate from one position to the next and the map of
        ``w * psi`` is a grid of dots (e.g. a ResNet split at ``layer3``); the sum
        over a cell is the cell's contribution to the margin, which the head does see.
        A departure from the paper, which maps the feature grid as it is.

    Tokens (``features [n, T, D]``, ``weights [P, T, D]``) are mapped on their patch grid
    (:func:`token_grid`): the class token's own features are part of every boundary but
    have no place on the image. Other layouts (Swin's channels-last ``[n, h, w, C]``)
    take ``reshape``, applied to features and normals alike, as pytorch-grad-cam's
    ``reshape_transform`` (e.g. ``lambda t: t.permute(0, 3, 1, 2)``).
    """
    if reshape is not None:
        features, weights = reshape(features), reshape(weights)
    elif features.ndim == 3 and weights.ndim == 3:
        features, weights = token_grid(features), token_grid(weights)
    if features.ndim != 4 or weights.ndim != 4:
        raise ValueError("heat maps need a convolutional feature layer (C x H x W output)")
    maps = heatmap_method(method).maps(weights, features)
    if len(weights) == 0:
        return torch.zeros(len(features), *size, dtype=features.dtype)
    if grid is not None and tuple(grid) != tuple(maps.shape[-2:]):
        maps = F.adaptive_avg_pool2d(maps, (int(grid[0]), int(grid[1])))
    up = F.interpolate(maps.relu(), size=size, mode="bilinear", align_corners=False)
    return minmax(up).mean(1)
