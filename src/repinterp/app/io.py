"""Fingerprints of models and images, and summaries saved as plain data in a checked,
versioned file (:mod:`repinterp.app.schema`; written atomically by
:mod:`repinterp.app.outputs`)."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch import nn

from ..core.errors import UserError
from ..core.summary import Summary
from .outputs import atomic_path
from .schema import pack_summary, unpack_summary

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
    """Write ``summary`` as ``summary.pt`` (:mod:`repinterp.app.schema`: a versioned
    header, the SHA-256 of the payload, and the payload, plain data saved with
    ``torch.save``), atomically; :func:`load_summary` reads it back without unpickling any
    code. What is written is read back and checked first: a summary that
    :func:`load_summary` would refuse (e.g. a meta that does not record every setting
    :class:`~repinterp.core.summary.SummaryMeta` requires) is refused before anything
    is written."""
    blob = pack_summary(summary)
    try:
        unpack_summary(blob)
    except UserError as exc:
        raise UserError(f"the summary to save {exc}") from exc
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(blob)


def load_summary(path: str | os.PathLike) -> Summary:
    """The summary in ``path`` (a ``summary.pt``, or the folder holding one), after its
    checksum and then every field are checked (:func:`repinterp.app.schema.unpack_summary`):
    anything else is a :class:`UserError` naming the file and what is wrong."""
    path = Path(path)
    if path.is_dir():
        path = path / "summary.pt"
    if not path.is_file():
        raise UserError(f"{path} does not exist (`repinterp summarize` writes summary.pt "
                        "into its output folder)")
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path} cannot be read ({exc.strerror})") from exc
    try:
        return unpack_summary(blob)
    except UserError as exc:
        raise UserError(f"{path} {exc}") from exc
