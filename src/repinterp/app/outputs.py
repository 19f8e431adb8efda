"""Everything repinterp writes, and the one rule for what it may replace or delete.

The rule: **repinterp replaces or deletes only what it wrote.**

- A file is written atomically (:func:`atomic_path`: a temporary file beside it, renamed
  over it on success), so a failed or interrupted write leaves the old file whole.
- An output folder (``--out``) is written as one unit (:func:`output_folder`): a fresh
  folder beside it, swapped in when complete. The folder then carries the marker file
  :data:`OUTPUT_MARKER`, a JSON list of every file the run wrote. A later run replaces
  the folder only when it holds nothing but the files that list names; then only those
  files are deleted. A folder without the marker (a user's folder, or a folder of an
  older repinterp that did not list its files), or with any file the list does not
  name, is refused and left as it is.
- An output that would hold, sit inside, or equal one of the run's inputs (``--data``,
  ``--index``, a model file...), or the current folder, is refused before any work. A
  symbolic link given as the output is resolved: its target is the output, the link
  stays.
- Two runs writing one output at once are refused: the second names the process that
  holds the output's lock (a lock file ``.NAME.lock`` beside the output, kept).
- An in-place folder (a region index, resumed across runs) is claimed with
  :func:`claim_folder`: the same marker, the same lock; only its own temporary files
  are ever removed (:func:`remove_temporaries`). Nothing else in the package deletes or
  renames: a structural test scans the source for it.
"""
from __future__ import annotations

import atexit
import ctypes
import errno
import fcntl
import json
import os
import shutil
import signal
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..core.errors import UserError, first_line

__all__ = ["OUTPUT_MARKER", "atomic_path", "check_output", "claim_folder", "evict", "output_folder",
           "release_locks", "remove_temporaries", "write_bytes", "write_json", "write_text"]

#: repinterp's marker in each folder it wrote: JSON ``{"written_by", "kind", "files"}``
OUTPUT_MARKER = ".repinterp-output"
_MARKER_VERSION = 1
# the errors that mean "this path cannot take the write", with a message per kind
_WRITE_ERRNOS = {errno.ENOSPC: "no space left on its device",
                 errno.EDQUOT: "the disk quota is exceeded",
                 errno.EROFS: "its file system is read-only",
                 errno.EACCES: "permission denied", errno.EPERM: "permission denied"}
_LOCKS: dict[Path, int] = {}            #: this process's lock files, by resolved output
_LIVE: set[Path] = set()                #: this process's temporary output folders


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


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


# --- ownership ----------------------------------------------------------------------------
def _files_under(folder: Path) -> list[str]:
    """Every entry below ``folder`` that is not a directory (files, links, anything
    else), as sorted relative POSIX paths."""
    found = []
    for root, dirs, files in os.walk(folder):
        base = Path(root)
        found += [(base / f).relative_to(folder).as_posix() for f in files]
        # a link to a directory is an entry of its own, never followed
        found += [(base / d).relative_to(folder).as_posix() for d in dirs
                  if (base / d).is_symlink()]
    return sorted(found)


def _marker(folder: Path) -> dict | None:
    """The marker of ``folder`` (None where it has none or it is not repinterp's)."""
    path = folder / OUTPUT_MARKER
    if not path.is_file() or path.is_symlink():
        return None
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if (not isinstance(marker, dict) or marker.get("written_by") != "repinterp"
            or not isinstance(marker.get("files"), list)):
        return None
    return marker


def _write_marker(folder: Path, kind: str, files: list[str]) -> None:
    write_json(folder / OUTPUT_MARKER, {"written_by": "repinterp",
                                        "version": _MARKER_VERSION, "kind": kind,
                                        "files": files})


def _foreign(folder: Path, kind: str | None = None) -> str | None:
    """Why ``folder`` is not repinterp's to replace (None where it is, or is empty)."""
    entries = _files_under(folder)
    if not entries:
        return None
    marker = _marker(folder)
    if marker is None:
        legacy = (folder / OUTPUT_MARKER).exists()
        return ("was written by an older repinterp that did not list its files "
                "(delete it yourself, or choose a new or empty folder)" if legacy else
                "holds files repinterp did not write; choose a new or empty folder")
    if kind is not None and marker.get("kind") != kind:
        return (f"holds a repinterp {marker.get('kind')}, not a {kind}; choose another "
                "folder")
    listed = set(marker["files"]) | {OUTPUT_MARKER}
    other = [e for e in entries if e not in listed]
    if other and kind != "index":
        return (f"holds {other[0]}, which repinterp did not write"
                + (f" (and {len(other) - 1} more)" if len(other) > 1 else "")
                + "; move it away or choose another folder")
    return None


def _contains(outer: Path, inner: Path) -> bool:
    return inner == outer or outer in inner.parents


def _resolved(out: str | os.PathLike) -> Path:
    """``out`` as an absolute path with every symbolic link resolved (a link given as
    the output stands for its target)."""
    return Path(os.path.realpath(os.path.abspath(out)))


def check_output(out: str | os.PathLike, inputs: Iterable[str | os.PathLike | None] = (),
                 *, kind: str = "report") -> Path:
    """Refuse an output folder before any work, and claim it for this process.

    Refused: an existing file; a folder that is not repinterp's to replace (see the
    module's rule); the current folder or one that holds it; a folder that holds, sits
    inside or equals one of ``inputs``; a folder another run is writing (its lock is
    held); a place that cannot be written. Returns the resolved output path (a symbolic
    link's target) and holds its lock until :func:`output_folder` ends or the process
    does.
    """
    shown, out = Path(out), _resolved(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"the output {shown} is an existing file, not a folder")
    if _contains(out, _resolved(os.getcwd())):
        raise UserError(f"the output {shown} is the current folder or holds it; choose "
                        "a new folder (e.g. --out out/run)")
    for given in inputs:
        if given is None or not os.path.lexists(given):
            continue
        where = _resolved(given)
        if _contains(out, where) or _contains(where, out):
            relation = ("is" if where == out else "holds" if _contains(out, where)
                        else "is inside")
            raise UserError(f"the output {shown} {relation} the input {given}; choose an "
                            "output folder apart from the inputs")
    if out.is_dir():
        why = _foreign(out, kind)
        if why is not None:
            raise UserError(f"the output folder {shown} {why}")
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK | os.X_OK):
        try:
            read_only = bool(os.statvfs(parent).f_flag & os.ST_RDONLY)
        except OSError:
            read_only = False
        raise UserError(f"cannot write the output {shown}: "
                        f"{'its file system is read-only' if read_only else 'permission denied'}")
    _lock(out, shown)
    return out


def _lock(out: Path, shown: Path) -> None:
    """Hold the lock of ``out`` (a lock file beside it) for this process."""
    if out in _LOCKS:
        return
    lock = out.parent / f".{out.name}.lock"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
    except OSError as exc:
        raise _write_error(out, exc) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # a lock won on a file no longer at that path (its holder deleted it) is too late
        if os.fstat(fd).st_ino != os.stat(lock).st_ino:
            raise BlockingIOError
    except OSError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise UserError(f"another repinterp run (pid {holder}) is writing {shown}; wait "
                        "for it to end or choose another --out") from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    _LOCKS[out] = fd


def _unlock(out: Path) -> None:
    """Release the lock of ``out``: its file is deleted first, while still held."""
    fd = _LOCKS.pop(out, None)
    if fd is not None:
        (out.parent / f".{out.name}.lock").unlink(missing_ok=True)
        os.close(fd)                                   # closing releases the flock


def release_locks() -> None:
    """Release this process's output locks and remove its temporary output folders
    never swapped in (interrupted before the caller's ``with``); by the CLI, at exit."""
    for out in list(_LOCKS):
        _unlock(out)
    for tmp in list(_LIVE):
        _remove_own_temporary(tmp)


atexit.register(release_locks)


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


def _delete_listed(folder: Path) -> list[str]:
    """Delete the files ``folder``'s marker lists (then the marker, then the empty
    folders); returns what is left: entries repinterp did not write."""
    marker = _marker(folder)
    for name in (marker or {}).get("files", []):
        path = folder / name
        if _contains(folder, Path(os.path.abspath(path))) and (
                path.is_file() or path.is_symlink()):
            path.unlink(missing_ok=True)
    if marker is not None:
        (folder / OUTPUT_MARKER).unlink(missing_ok=True)
    for root, _, _ in sorted(os.walk(folder), key=lambda w: -len(w[0])):
        if not os.listdir(root):
            os.rmdir(root)
    return _files_under(folder) if folder.exists() else []


@contextmanager
def output_folder(out: str | os.PathLike, inputs: Iterable[str | os.PathLike | None] = ()
                  ) -> Iterator[Path]:
    """Write a run's whole output as one unit: yield a fresh folder beside ``out``; on
    success it replaces ``out`` in one atomic exchange (Linux; elsewhere two renames
    with interrupts held), on any error or interrupt it is removed. A reader sees the
    old set of files or the new one, never a mix.

    ``out`` is checked by :func:`check_output` (with ``inputs``). The earlier output's
    files (those its marker lists) are deleted after the swap, nothing else.
    """
    shown, out = Path(out), check_output(out, inputs)
    parent, tmp = out.parent, None
    try:
        try:
            parent.mkdir(parents=True, exist_ok=True)
            for stale in parent.glob(f".{out.name}.tmp-*"):   # killed runs' leftovers
                pid = stale.name.rsplit(".tmp-", 1)[1].split("-", 1)[0]
                if pid.isdigit() and not _pid_alive(int(pid)) and _marker(stale) is not None:
                    _remove_own_temporary(stale)
            with _interrupts_held():           # an interrupt finds the folder marked
                tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-",
                                            dir=parent))
                os.chmod(tmp, 0o777 & ~_umask())           # mkdtemp makes 0700
                _write_marker(tmp, "temporary", [])        # ours, should the run be killed
                _LIVE.add(tmp)
        except OSError as exc:
            raise _write_error(shown, exc) from None
        yield tmp
        _write_marker(tmp, "report", [f for f in _files_under(tmp) if f != OUTPUT_MARKER])
        _swap_in(tmp, out)
        _LIVE.discard(tmp)
    except BaseException as exc:
        if tmp is not None:
            _remove_own_temporary(tmp)
        if _is_write_failure(exc):
            raise _write_error(shown, exc) from None
        raise
    finally:
        _unlock(out)


@contextmanager
def _interrupts_held() -> Iterator[None]:
    """SIGINT and SIGTERM held back while the block runs (delivered when it ends)."""
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _remove_own_temporary(tmp: Path) -> None:
    """Delete a temporary folder this process (or a killed run) created with
    ``mkdtemp`` under repinterp's prefix: everything in it was written by repinterp."""
    shutil.rmtree(tmp, ignore_errors=True)
    _LIVE.discard(tmp)


def _swap_in(new: Path, out: Path) -> None:
    """Put the folder ``new`` at ``out``; of the old ``out``, only the files its marker
    lists are deleted (a file that appeared meanwhile is kept: the rest of the old
    folder is then left beside ``out`` and named in a warning)."""
    if not out.exists():
        os.rename(new, out)
        return
    if _exchange(new, out):
        old = new                                      # now holds the old output
    else:
        old = new.with_name(new.name + ".old")
        with _interrupts_held():
            os.rename(out, old)
            os.rename(new, out)
    left = _delete_listed(old)
    if left:
        kept = out.with_name(f"{out.name}.kept-{os.getpid()}")
        os.rename(old, kept)
        warnings.warn(f"{out} held {left[0]} (not written by repinterp) when it was "
                      f"replaced; it is kept in {kept}", stacklevel=3)


@contextmanager
def claim_folder(out: str | os.PathLike, kind: str,
                 inputs: Iterable[str | os.PathLike | None] = ()) -> Iterator[Path]:
    """Claim a folder written in place across runs (a region index: resumed, never
    replaced): checked as :func:`check_output` does for a folder of ``kind``, created,
    marked as repinterp's and locked while the block runs. Yields the resolved path."""
    shown = Path(out)
    path = check_output(out, inputs, kind=kind)
    try:
        try:
            path.mkdir(parents=True, exist_ok=True)
            if _marker(path) is None:
                _write_marker(path, kind, [])
        except OSError as exc:
            raise _write_error(shown, exc) from None
        yield path
    finally:
        _unlock(path)


def remove_temporaries(folder: str | os.PathLike, pattern: str) -> None:
    """Delete the files matching ``pattern`` in ``folder``, a folder repinterp claimed
    (:func:`claim_folder`; refused otherwise): the temporary files of its own writers
    that were killed mid-write."""
    folder = Path(folder)
    if not folder.exists():
        return
    if _marker(folder) is None and _marker(folder.parent) is None:
        raise UserError(f"{folder} is not a folder repinterp wrote")
    for stale in folder.glob(pattern):
        if stale.is_file():
            stale.unlink(missing_ok=True)


def evict(folder: str | os.PathLike, pattern: str, max_bytes: int) -> None:
    """Delete the least recently used (oldest modified) files of ``folder`` matching the
    glob ``pattern`` until those left hold at most ``max_bytes``: a cache's own files."""
    found = sorted((s.st_mtime_ns, s.st_size, p) for p in Path(folder).glob(pattern)
                   if p.is_file() and not p.is_symlink() and (s := p.stat()))
    total = sum(size for _, size, _ in found)
    while found and total > max_bytes:
        _, size, path = found.pop(0)
        path.unlink(missing_ok=True)
        total -= size
