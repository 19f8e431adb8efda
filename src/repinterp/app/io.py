"""Files: atomic writes (a temporary file in the same directory, then a rename), whole
output folders swapped in at once, fingerprints of models and images, and summaries
saved as plain data."""
from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.errors import UserError, first_line
from ..core.summary import Summary

__all__ = ["OUTPUT_MARKER", "atomic_path", "check_output", "images_digest", "load_summary",
           "model_digest", "output_folder", "save_summary", "write_bytes", "write_json",
           "write_text"]

# written last into every output folder: the folder is repinterp's to replace
OUTPUT_MARKER = ".repinterp-output"
# the errors that mean "this path cannot take the write", with a message per kind
_WRITE_ERRNOS = {errno.ENOSPC: "no space left on its device",
                 errno.EDQUOT: "the disk quota is exceeded",
                 errno.EROFS: "its file system is read-only",
                 errno.EACCES: "permission denied", errno.EPERM: "permission denied"}


def _write_error(path: Path, exc: BaseException) -> UserError:
    """A one-line :class:`UserError` for a failed write of ``path``: which path, why,
    and how much space is left on its device."""
    try:
        space = shutil.disk_usage(path.parent if path.parent.exists() else path.anchor).free
    except OSError:
        space = None
    why = _WRITE_ERRNOS.get(getattr(exc, "errno", None) or 0)
    if why is None:          # torch's zip writer does not say why: look at the space
        why = ("no space left on its device" if space is not None and space < 2**20
               else f"the write failed ({first_line(exc)})")
    free = "" if space is None else f"; {space / 2**20:.1f} MiB free there"
    return UserError(f"cannot write {path}: {why}{free}")


def _is_write_failure(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return exc.errno in _WRITE_ERRNOS or exc.errno in (errno.EIO, errno.EFBIG)
    # torch.save reports a full disk as a RuntimeError of its zip writer
    return isinstance(exc, RuntimeError) and any(
        mark in str(exc) for mark in ("PytorchStreamWriter", "inline_container"))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` on success.

    On any exception the temporary file is removed and ``path`` is left untouched, so a
    failed or interrupted run never leaves a half-written file nor destroys the old one.
    A write that the file system refuses (full disk, read-only, no permission) is a
    :class:`UserError` naming the path and the space left.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _write_error(path, exc) from None
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if _is_write_failure(exc):
            raise _write_error(path, exc) from None
        raise


def _exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two paths (Linux ``renameat2(RENAME_EXCHANGE)``); False
    where the system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b),
                     rename_exchange) == 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_output(out: str | os.PathLike) -> None:
    """Refuse an output folder before any work: an existing file, a folder of files
    repinterp did not write (never replaced), or a place that cannot be written."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"the output {out} is an existing file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not any(
            (out / name).exists() for name in (OUTPUT_MARKER, "report.html", "summary.json")):
        raise UserError(f"the output folder {out} holds files repinterp did not write; "
                        "choose a new or empty folder")
    parent = out.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK | os.X_OK):
        try:
            read_only = bool(os.statvfs(parent).f_flag & os.ST_RDONLY)
        except OSError:
            read_only = False
        raise UserError(f"cannot write the output {out}: "
                        f"{'its file system is read-only' if read_only else 'permission denied'}")


@contextmanager
def output_folder(out: str | os.PathLike) -> Iterator[Path]:
    """Write a run's whole output as one unit: yield a fresh folder beside ``out``; on
    success it replaces ``out`` in one atomic exchange (Linux; elsewhere two renames
    with interrupts held), on any error or interrupt it is removed. A reader sees the
    old set of files or the new one, never a mix, and nothing of an earlier run stays.

    ``out`` must be new, empty, or an earlier output (it holds :data:`OUTPUT_MARKER`, or
    the ``report.html`` / ``summary.json`` of a repinterp before the marker): a folder
    of other files is never replaced.
    """
    out = Path(out)
    check_output(out)
    parent = out.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        for stale in parent.glob(f".{out.name}.tmp-*"):   # killed runs' leftovers
            pid = stale.name.rsplit(".tmp-", 1)[1].split("-", 1)[0]
            if pid.isdigit() and not _pid_alive(int(pid)):
                shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=parent))
        os.chmod(tmp, 0o777 & ~_umask())           # mkdtemp makes 0700
    except OSError as exc:
        raise _write_error(out, exc) from None
    try:
        yield tmp
        (tmp / OUTPUT_MARKER).write_text("written by repinterp; replaced as a whole by "
                                         "the next run with this --out\n")
        _swap_in(tmp, out)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if _is_write_failure(exc):
            raise _write_error(out, exc) from None
        raise


def _swap_in(new: Path, out: Path) -> None:
    """Put the folder ``new`` at ``out``; the old ``out`` (if any) is deleted."""
    if not out.exists():
        os.rename(new, out)
        return
    if _exchange(new, out):
        shutil.rmtree(new, ignore_errors=True)          # now holds the old output
        return
    old = new.with_name(new.name + ".old")
    blocked = {signal.SIGINT, signal.SIGTERM}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
    try:
        os.rename(out, old)
        os.rename(new, out)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    shutil.rmtree(old, ignore_errors=True)


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
