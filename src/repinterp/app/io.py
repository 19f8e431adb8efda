"""Fingerprints of models and images, and summaries saved as plain data (written
atomically by :mod:`repinterp.app.outputs`)."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch import nn

from ..core.errors import UserError, first_line
from ..core.summary import Summary
from .outputs import atomic_path

__all__ = ["images_digest", "load_summary", "model_digest", "save_summary"]

def model_digest(model: nn.Module) -> str:
    """SHA-256 of every parameter and buffer (names, dtypes, shapes, bytes)."""
    h = hashlib.sha256()
    for name, t in [*model.state_dict().items()]:
        if not isinstance(t, torch.Tensor):
            continue
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
                 .tobytes() if t.numel() else b"")
    return h.hexdigest()


def images_digest(images: torch.Tensor) -> str:
    """SHA-256 of an image tensor (dtype, shape, bytes): the fingerprint of the
    references a summary was made from."""
    t = images.detach().cpu().contiguous()
    h = hashlib.sha256(f"{t.dtype}|{tuple(t.shape)}|".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().data if t.numel() else b"")
    return h.hexdigest()


def save_summary(path: str | os.PathLike, summary: Summary) -> None:
    """Write ``summary`` as plain data (tensors, numbers, strings) with ``torch.save``,
    atomically; :func:`load_summary` reads it back without unpickling any code."""
    with atomic_path(path) as tmp:
        torch.save(summary.to_dict(), tmp)


def load_summary(path: str | os.PathLike) -> Summary:
    """A summary written by :func:`save_summary` (loaded with ``weights_only=True``)."""
    path = Path(path)
    if path.is_dir():
        path = path / "summary.pt"
    if not path.is_file():
        raise UserError(f"{path} does not exist (`repinterp summarize` writes summary.pt "
                        "into its output folder)")
    try:
        return Summary.from_dict(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as exc:  # noqa: BLE001 - torch raises many types for bad files
        raise UserError(f"{path} is not a summary written by repinterp "
                        f"({first_line(exc)})") from exc
