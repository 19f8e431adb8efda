"""Full float32 while repinterp computes: TF32 switched off, the process-wide settings
restored on exit (:func:`exact_float32`, and the :func:`exact` decorator)."""
from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

import torch

__all__ = ["exact", "exact_float32"]


@contextlib.contextmanager
def exact_float32() -> Iterator[None]:
    """Full float32 in convolutions and matrix products while repinterp computes: TF32
    (cuDNN's default on Ampere and later GPUs, 10-bit mantissa) would make the head's
    margins noisy at about ``1e-3`` of the logits, and boundaries inexact (measured on an
    H200: top-2 margin 0.077 at sampled points with TF32, logits of size 13).

    The process-wide settings are restored exactly on exit, whatever happens. With
    PyTorch's precision API (``torch.backends.*.fp32_precision``, PyTorch >= 2.9) only
    that API is used: touching the legacy ``allow_tf32`` flags after a user set either
    API makes PyTorch raise on mixed settings (then and in
    ``torch.get_float32_matmul_precision()``). Not thread-safe: the settings are global.
    """
    b: Any = torch.backends
    exact_values: dict[int, object]
    if hasattr(b.cuda.matmul, "fp32_precision"):
        # the root first, so that restoring it does not overwrite the children
        targets = [(b, "fp32_precision"), (b.cuda.matmul, "fp32_precision"),
                   (b.cudnn, "fp32_precision"), (b.cudnn.conv, "fp32_precision"),
                   (b.cudnn.rnn, "fp32_precision")]
        exact_values = {id(b.cuda.matmul): "ieee", id(b.cudnn.conv): "ieee"}
    else:  # pragma: no cover - PyTorch < 2.9
        targets = [(b.cudnn, "allow_tf32"), (b.cuda.matmul, "allow_tf32")]
        exact_values = {id(b.cudnn): False, id(b.cuda.matmul): False}
    saved = [getattr(obj, name) for obj, name in targets]
    try:
        for obj, name in targets:
            if id(obj) in exact_values:
                setattr(obj, name, exact_values[id(obj)])
        yield
    finally:
        for (obj, name), value in zip(targets, saved, strict=True):
            setattr(obj, name, value)


def exact(method):
    """Decorator: run ``method`` under :func:`exact_float32`."""
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with exact_float32():
            return method(*args, **kwargs)
    return wrapper
