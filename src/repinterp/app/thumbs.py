"""The images of a report and a notebook: an image with a region's heat map drawn on
top, encoded small (WebP; PNG where that is smaller, for tiny images) as data URIs, so
that a report is one folder of self-contained pages and stays small."""
from __future__ import annotations

import base64
import io
import math

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image, features

__all__ = ["CARD_LIMIT", "GRID_LIMIT", "NATIVE_MAX", "SHOW_SIZE", "THUMBNAIL", "Thumb",
           "colour_bar_css", "encode", "heat_uri", "overlay", "thumb", "upscale"]

_JET = colormaps["jet"]
#: Displayed tile size in CSS pixels (the report's cards and member grids).
THUMBNAIL = 112
#: Images up to this many pixels a side are embedded at their own size and scaled up
#: by the page, pixel by pixel (a 28 px Fashion-MNIST tile is about 400 bytes as WebP).
NATIVE_MAX = 64
#: Larger images are shrunk to at most this many pixels a side: on the cards, and in the
#: member grids (:data:`GRID_LIMIT`).
CARD_LIMIT = 128
GRID_LIMIT = 80
#: Where a notebook shows an image (:func:`repinterp.show`, :func:`~repinterp.app.notebook
#: .show`): small images are scaled up to about this many pixels a side.
SHOW_SIZE = 224
_WEBP = features.check("webp")


class Thumb(str):
    """A data URI (a ``str``) that knows whether the page should scale it up pixel by
    pixel (:attr:`pixelated`: an image kept at its own, small size)."""

    pixelated: bool = False

    def __new__(cls, uri: str, pixelated: bool = False) -> Thumb:
        self = super().__new__(cls, uri)
        self.pixelated = pixelated
        return self


def _to_display(image: torch.Tensor, minmax: bool = True) -> np.ndarray:
    """``[C, H, W]`` -> ``[H, W, 3]`` in ``[0, 1]``, min-max scaled for display (or
    clipped, with ``minmax=False``)."""
    t = image.detach().float().cpu()
    t = (t - t.min()) / (t.max() - t.min()).clamp_min(1e-12) if minmax else t.clamp(0, 1)
    a = t.permute(1, 2, 0).numpy()
    return np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a[..., :3]


def overlay(image: torch.Tensor, heat: torch.Tensor | None, alpha: float = 0.7,
            minmax: bool = True) -> np.ndarray:
    """``image`` ``[C, H, W]`` as ``[H, W, 3]`` in ``[0, 1]`` (min-max scaled, or as it
    is with ``minmax=False``) with ``heat`` (``[H, W]`` in ``[0, 1]``) drawn in the jet
    colours, each pixel's opacity ``alpha * heat``: where the map is low the image shows
    through undimmed."""
    rgb = _to_display(image, minmax)
    if heat is None:
        return rgb
    h = heat.detach().float().cpu().clamp(0, 1).numpy()
    a = alpha * h[..., None]
    return (1 - a) * rgb + a * _JET(h)[..., :3]


def _bytes(img: Image.Image, fmt: str, quality: int) -> bytes:
    buf = io.BytesIO()
    if fmt == "PNG":
        img.save(buf, format="PNG", optimize=True)
    elif fmt == "WEBP":
        img.save(buf, format="WEBP", quality=quality, method=6)
    else:
        img.save(buf, format="JPEG", quality=quality, optimize=True)
    return buf.getvalue()


def encode(rgb: np.ndarray, *, limit: int = CARD_LIMIT, quality: int = 70) -> Thumb:
    """A data URI of ``rgb`` ``[H, W, 3]`` in ``[0, 1]``: an image of at most
    :data:`NATIVE_MAX` pixels a side at its own size (:attr:`Thumb.pixelated`: the page
    scales it up), a larger one shrunk to ``limit`` pixels a side; WebP (JPEG where
    Pillow has no WebP), or PNG where that is smaller (tiny images of few colours)."""
    img = Image.fromarray((np.clip(rgb, 0, 1) * 255).round().astype(np.uint8))
    native = max(img.size) <= NATIVE_MAX
    if not native:
        img.thumbnail((limit, limit), Image.Resampling.LANCZOS)
    lossy = "WEBP" if _WEBP else "JPEG"
    data, mime = _bytes(img, lossy, quality), f"image/{lossy.lower()}"
    if max(img.size) <= 32:
        png = _bytes(img, "PNG", quality)
        if len(png) < len(data):
            data, mime = png, "image/png"
    return Thumb(f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}", native)


def thumb(image: torch.Tensor, heat: torch.Tensor | None = None, *, alpha: float = 0.7,
          limit: int = CARD_LIMIT) -> Thumb:
    """:func:`encode` of :func:`overlay` (``image`` with ``heat`` on top)."""
    return encode(overlay(image, heat, alpha), limit=limit)


def heat_uri(heat: torch.Tensor) -> Thumb:
    """A data URI of a heat map ``[H, W]`` alone, in the jet colours of its own range
    (smooth: meant to be scaled up by the page as it is, not pixel by pixel)."""
    h = heat.detach().double().cpu()
    h = (h - h.min()) / (h.max() - h.min()).clamp_min(1e-12)
    return Thumb(encode(_JET(h.float().numpy())[..., :3], quality=85))


def colour_bar_css(alpha: float = 0.7, stops: int = 9) -> str:
    """The CSS gradient of the heat maps' colours as :func:`overlay` draws them (opacity
    rising with the heat), for the report's colour bar."""
    parts = []
    for k in range(stops):
        v = k / (stops - 1)
        r, g, b, _ = _JET(v)
        parts.append(f"rgba({round(255 * r)},{round(255 * g)},{round(255 * b)},"
                     f"{alpha * v:.2f}) {100 * v:.0f}%")
    return "linear-gradient(to right, " + ", ".join(parts) + ")"


def upscale(img: Image.Image, size: int) -> Image.Image:
    """``img`` enlarged by a whole factor (nearest neighbours) to about ``size`` pixels a
    side, for a small image shown where it cannot be scaled by a page."""
    scale = max(1, math.ceil(size / max(img.size)))
    return img.resize((img.width * scale, img.height * scale),
                      Image.Resampling.NEAREST) if scale > 1 else img
