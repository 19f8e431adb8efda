"""The pixel rule of :mod:`repinterp.app.loading`: how an image's values become the
model's ``[0, 1]`` input, set by their type alone (or a stated ``pixel_range``), checked
on a whole file a block of rows at a time and applied row by row."""
from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..core.errors import UserError
from .formats import RowFile, UnreadableFile

__all__ = ["apply_rule", "checked_range", "parse_pixel_range", "pixel_rule"]


def parse_pixel_range(spec: str | None) -> tuple[float, float] | str | None:
    """What ``pixel_range`` takes, from text: ``LO,HI`` (e.g. ``0,255``) as a pair,
    ``raw`` as is, ``None`` as None (the pixel rule of the module's docstring)."""
    if spec is None:
        return None
    if spec.strip().lower() == "raw":
        return "raw"
    try:
        lo, hi = (float(v) for v in spec.split(","))
    except ValueError:
        raise UserError(f"the pixel range must be LO,HI (e.g. 0,255) or raw, got {spec!r}") \
            from None
    return checked_range((lo, hi))


def checked_range(pixel_range) -> tuple[float, float] | str | None:
    """``pixel_range`` checked: None, ``"raw"``, or ``(LO, HI)`` with ``LO < HI`` (a
    list, as a JSON manifest holds it, or ``"LO,HI"`` text are taken too)."""
    if pixel_range is None or (isinstance(pixel_range, str) and pixel_range == "raw"):
        return pixel_range
    if isinstance(pixel_range, str):
        return parse_pixel_range(pixel_range)
    try:
        lo, hi = (float(v) for v in pixel_range)
    except (TypeError, ValueError):
        raise UserError(f"pixel_range must be (LO, HI), e.g. (0, 255), or 'raw', got "
                        f"{pixel_range!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise UserError(f"pixel_range ({lo:g}, {hi:g}) must have finite LO < HI")
    return lo, hi


def _suggested_range(lo: float, hi: float) -> str:
    """The range of 8-bit or 16-bit pictures when the values fit it (`` (here 0,255)``),
    or nothing."""
    if lo >= 0 and hi <= 255:
        return " (here 0,255)"
    if lo >= 0 and hi <= 65535:
        return " (here 0,65535)"
    return ""


def pixel_rule(arr: np.ndarray | RowFile, source: str,
                pixel_range: tuple[float, float] | str | None) -> tuple[float, float] | None:
    """The module's pixel rule for ``arr`` (checked on all of it, in its own type):
    ``(LO, HI)``, the stated ``pixel_range`` or the range of the values' type (``uint8``
    0..255, ``uint16`` 0..65535, ``bool`` and floats 0..1), or ``None`` for ``"raw"``.
    Refused: no numbers (unreadable), NaN or infinite values, values outside the range,
    and a type whose range is unknown (other integer types) without ``pixel_range``."""
    if arr.dtype == object or arr.size == 0:
        raise UnreadableFile("it holds no image array", "image array")
    if arr.dtype.kind not in "buif":
        raise UnreadableFile(f"it holds {arr.dtype} values, not numbers", "image array")
    if arr.dtype.kind == "f" and not all(np.isfinite(b).all() for b in _blocks(arr)):
        raise UserError(f"{source} contains NaN or infinite values")
    if isinstance(pixel_range, str):                        # "raw": the model's input
        return None
    native = {"b": (0, 1), "f": (0, 1)}.get(arr.dtype.kind) or {
        np.dtype(np.uint8): (0, 255), np.dtype(np.uint16): (0, 65535)}.get(arr.dtype)
    if pixel_range is not None or native is None or arr.dtype.kind == "f":
        vmin = min(b.min().item() for b in _blocks(arr))
        vmax = max(b.max().item() for b in _blocks(arr))
    if pixel_range is not None:
        lo, hi = pixel_range
        if vmin < lo or vmax > hi:
            raise UserError(f"{source} has pixel values in [{vmin:g}, {vmax:g}], outside the "
                            f"stated pixel range ({lo:g}, {hi:g})")
        return lo, hi
    if native is None:
        raise UserError(
            f"{source} holds {arr.dtype} pixels ({vmin}..{vmax}), a type whose range is not "
            "known: state it with {pixel_range}" f"{_suggested_range(vmin, vmax)}",
            params={"pixel_range": "pixel_range=(LO, HI)",
                    "raw": "pixel_range='raw'"})
    if arr.dtype.kind == "f" and (vmin < 0 or vmax > 1):
        raise UserError(
            f"{source} holds {arr.dtype} pixels in [{vmin:g}, {vmax:g}], not in [0, 1]: "
            "state their range with {pixel_range}" f"{_suggested_range(vmin, vmax)}, "
            "or {raw} for values that already are the model's input",
            params={"pixel_range": "pixel_range=(LO, HI)",
                    "raw": "pixel_range='raw'"})
    return native


def _blocks(arr: Any, nbytes: int = 1 << 26) -> Iterator[np.ndarray]:
    """``arr`` (an array, or a :class:`~repinterp.app.formats.RowFile`) a block of rows
    at a time, about ``nbytes`` each: checked without a copy of all of it."""
    step = max(1, nbytes // max(1, arr.dtype.itemsize * math.prod(arr.shape[1:])))
    for start in range(0, len(arr), step):
        yield np.asarray(arr[start:start + step])


def apply_rule(arr: np.ndarray, rule: tuple[float, float] | None) -> np.ndarray:
    """``(v - LO) / (HI - LO)`` as float32 (``rule`` from :func:`pixel_rule`; ``None``:
    the values unchanged). Element by element: any rows of an array give the rows of
    the whole array's result."""
    if rule is None:
        return np.ascontiguousarray(arr, dtype=np.float32)
    lo, hi = rule
    out = arr.astype(np.float32)
    if lo:
        out -= np.float32(lo)
    if hi - lo != 1:
        out /= np.float32(hi - lo)
    return out
