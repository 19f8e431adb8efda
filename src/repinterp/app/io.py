"""Files: atomic writes (a temporary file in the same directory, then a rename) and
summaries saved as plain data."""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..core.errors import UserError, first_line
from ..core.summary import Summary

__all__ = ["atomic_path", "load_summary", "save_summary", "write_bytes", "write_json",
           "write_text"]


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` on success.

    On any exception the temporary file is removed and ``path`` is left untouched, so a
    failed or interrupted run never leaves a half-written file nor destroys the old one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file normal permissions
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_summary(path: str | os.PathLike, summary: Summary) -> None:
    """Write ``summary`` as plain data (tensors, numbers, strings) with ``torch.save``,
    atomically; :func:`load_summary` reads it back without unpickling any code."""
    import torch
    with atomic_path(path) as tmp:
        torch.save(summary.to_dict(), tmp)


def load_summary(path: str | os.PathLike) -> Summary:
    """A summary written by :func:`save_summary` (loaded with ``weights_only=True``)."""
    import torch
    path = Path(path)
    if path.is_dir():
        path = path / "summary.pt"
    if not path.is_file():
        raise UserError(f"{path} does not exist (summarize writes summary.pt into --out)")
    try:
        return Summary.from_dict(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as exc:  # noqa: BLE001 - torch raises many types for bad files
        raise UserError(f"{path} is not a summary written by repinterp "
                        f"({first_line(exc)})") from exc
