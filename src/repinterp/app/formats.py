"""The files on disk and what each format holds: a path checked, the files of a folder
(links to folders followed once), and the raw pixels of one file in their own type
(image files through Pillow, 16-bit PNGs decoded here, ``.npy``/``.npz`` arrays, IDX
files) as ``[N, C, H, W]``. :func:`repinterp.app.loading.decode_file` scales them by
the pixel rule; nothing here changes a value.
"""
from __future__ import annotations

import errno
import gzip
import os
import re
import stat
import struct
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import UserError, first_line

__all__ = ["MAX_PIXELS", "UnreadableFile", "checked_path", "read_file", "read_idx"]


def checked_path(path: str | os.PathLike, *, kind: str = "any", what: str = "") -> Path:
    """``path``, after checking that it exists (and with ``kind="file"`` that it is not a
    folder): a missing path, a broken link, a link loop, a folder where a file is needed
    and an unreadable path each get their own message."""
    p = Path(path)
    label = f"{what} {p}" if what else str(p)
    try:
        p.resolve(strict=True)
        st = p.stat()
    except FileNotFoundError:
        if p.is_symlink():
            raise UserError(f"{label} is a broken symbolic link") from None
        raise UserError(f"{label} does not exist") from None
    except (OSError, RuntimeError) as exc:   # RuntimeError: a link loop (Python < 3.13)
        if isinstance(exc, RuntimeError) or exc.errno == errno.ELOOP:
            raise UserError(f"{label} is a symbolic link loop") from None
        raise UserError(f"{label} cannot be read ({exc.strerror})") from None
    if kind == "file" and stat.S_ISDIR(st.st_mode):
        raise UserError(f"{label} is a folder, not a file")
    return p


class UnreadableFile(UserError):
    """A file that is not an image (unreadable, not a regular file, not numbers): a
    folder's reader skips it (``strict``: the error); values of an image that the pixel
    rule cannot scale are a plain ``UserError``, never skipped."""

    def __init__(self, reason: str, what: str = "image", path: Path | None = None):
        self.reason, self.what, self.path = reason, what, path
        super().__init__(reason if path is None else
                         f"{path} is not a readable {what} ({reason})")


def image_files(root: Path, *, warn: bool = True) -> list[Path]:
    """Every non-hidden file under ``root``, sorted (folder by folder; anything that is
    not an image is reported as skipped when read). Symbolic links to folders are
    followed (with one warning) and a folder reached twice, e.g. through a link loop, is
    listed once."""
    files, links, seen = [], [], set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        links += [Path(dirpath, d) for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        files += [Path(dirpath) / f for f in sorted(filenames) if not f.startswith(".")]
    if links and warn:
        warnings.warn(f"followed {len(links)} symbolic link(s) to folders in {root}, e.g. "
                      f"{str(links[0].relative_to(root))!r}", stacklevel=3)
    for f in files:                  # names go into reports, JSON, CSV and Parquet
        try:
            str(f.relative_to(root)).encode("utf-8")
        except UnicodeEncodeError:
            shown = os.fsencode(f.relative_to(root)).decode("utf-8", "backslashreplace")
            raise UserError(f"the file name {shown!r} in {root} is not valid UTF-8; rename "
                            "it (reports and memberships need readable names)") from None
    return files


def idx_images_in(folder: Path) -> Path | None:
    """The images file of an MNIST-style folder (the training one when there are
    several), or None for any other path."""
    idx = sorted(folder.glob("*idx3-ubyte*")) if folder.is_dir() else []
    return ([f for f in idx if f.name.startswith("train")] or idx)[0] if idx else None


_IDX_DTYPES: dict[int, Any] = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4",
               0x0E: ">f8"}
_IDX_ERRORS = (OSError, ValueError, struct.error, EOFError, zlib.error)


def _idx_array(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code not in _IDX_DTYPES:
        raise ValueError("bad magic number")
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=_IDX_DTYPES[dtype_code], offset=4 + 4 * ndim)
    return arr.reshape(shape)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a numpy array."""
    path = Path(path)
    try:
        return _idx_array(path)
    except _IDX_ERRORS as exc:
        raise UserError(f"{path} is not a readable IDX file ({exc})") from exc


_CHANNELS = (1, 3, 4)


def _layout(arr: np.ndarray, single: bool) -> np.ndarray:
    """``arr`` as ``[N, C, H, W]``: ``[H, W]`` is one gray image, ``[H, W, C]`` one image
    (``C`` of 1, 3, 4), ``[N, H, W]`` N gray images (``[C, H, W]`` one image where the
    file must hold one, ``single``), ``[N, C, H, W]`` or ``[N, H, W, C]`` N images."""
    if arr.ndim == 2:
        return arr[None, None]
    if arr.ndim == 3:
        if arr.shape[-1] in _CHANNELS:
            return arr[None].transpose(0, 3, 1, 2)
        return arr[None] if single and arr.shape[0] in _CHANNELS else arr[:, None]
    if arr.ndim == 4:
        if arr.shape[1] not in _CHANNELS and arr.shape[-1] in _CHANNELS:
            return arr.transpose(0, 3, 1, 2)
        return arr
    raise UnreadableFile(f"a {arr.ndim}-d array cannot be read as images", "image array")


# most pixels an image file may declare (Pillow's own bomb limit, ~89 Mpx): a larger one
# is refused before it is decoded
MAX_PIXELS = 89_478_485


def _png16(data: bytes) -> np.ndarray:
    """A non-interlaced 16-bit PNG (gray, gray+alpha, RGB, RGBA) as uint16 ``[H, W, C]``,
    alpha dropped: Pillow reads 16-bit colour PNGs at 8 bits. The PNG filters are undone
    here (Average and Paeth row by row)."""
    pos, idat, header = 8, [], None
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + size]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + size
    if header is None:
        raise ValueError("no PNG header")
    w, h, depth, color, _, _, interlace = header
    bands = {0: 1, 4: 2, 2: 3, 6: 4}[color]
    if interlace:
        raise ValueError("interlaced 16-bit PNGs are not supported; save it without "
                         "interlacing")
    bpp, stride = 2 * bands, 2 * bands * w
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), np.uint8)
    if len(raw) < h * (stride + 1):
        raise ValueError("truncated PNG data")
    rows = raw[: h * (stride + 1)].reshape(h, stride + 1)
    out = np.zeros((h, stride), np.int64)
    prev = np.zeros(stride, np.int64)
    cur: Any
    for y in range(h):
        kind, f = int(rows[y, 0]), rows[y, 1:].astype(np.int64)
        if kind == 0:
            cur = f
        elif kind == 1:                                  # Sub: a running sum per byte lane
            cur = np.cumsum(f.reshape(w, bpp), axis=0).reshape(-1) & 255
        elif kind == 2:                                  # Up
            cur = (f + prev) & 255
        elif kind in (3, 4):                             # Average, Paeth: pixel by pixel
            cur, fl, up = [0] * stride, f.tolist(), prev.tolist()
            for i in range(stride):
                a = cur[i - bpp] if i >= bpp else 0
                b = up[i]
                if kind == 3:
                    pred = (a + b) >> 1
                else:
                    c = up[i - bpp] if i >= bpp else 0
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                cur[i] = (fl[i] + pred) & 255
            cur = np.asarray(cur, np.int64)
        else:
            raise ValueError(f"bad PNG filter type {kind}")
        out[y] = prev = cur
    values = (out[:, 0::2] << 8 | out[:, 1::2]).reshape(h, w, bands).astype(np.uint16)
    return values[..., : 3 if bands >= 3 else 1]


def _pillow_values(path: Path, im) -> np.ndarray:
    """The pixels of an open Pillow image in their own type: ``bool`` (1-bit),
    ``uint8`` (8-bit modes, as gray or RGB), ``uint16`` (16-bit PNG and TIFF, read
    exactly: Pillow converts 16-bit colour PNGs to 8 bits), ``int32`` or ``float32``
    (32-bit TIFF modes); ``[H, W]`` or ``[H, W, C]``."""
    mode = im.mode
    if im.format == "PNG" and mode in ("RGB", "RGBA", "LA"):
        data = path.read_bytes()
        if data[24:25] == b"\x10":                     # IHDR bit depth 16
            return _png16(data)
    if mode == "1":
        return np.asarray(im, dtype=bool)
    if mode.startswith("I;16") or (mode == "I" and im.format == "PNG"):
        arr = np.asarray(im)                           # a PNG's "I" is 16-bit gray
        return arr.astype(np.uint16) if arr.dtype.kind == "u" or mode == "I" else arr
    if mode in ("I", "F"):
        return np.asarray(im)
    gray = mode in ("L", "LA", "La")
    return np.asarray(im.convert("L" if gray else "RGB"))


def _pillow_file(path: Path) -> np.ndarray:
    """An image file through Pillow, as its own type ``[1, C, H, W]``; refused before
    decoding when it declares more than :data:`MAX_PIXELS` pixels."""
    from PIL import Image, UnidentifiedImageError
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > MAX_PIXELS:
                    raise ValueError(f"it declares {w}x{h} pixels, more than the "
                                     f"{MAX_PIXELS / 1e6:.0f} Mpx repinterp reads")
                arr = _pillow_values(path, im)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, KeyError,
            zlib.error, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UnreadableFile(first_line(exc)) from exc
    return (arr[..., None] if arr.ndim == 2 else arr).transpose(2, 0, 1)[None]


def _numpy_file(path: Path, array: str | None) -> np.ndarray:
    """The array of a ``.npy`` file, or of an ``.npz`` file: its only array, the one
    named ``array``, else the one named ``images``; several others are refused by name."""
    import zipfile
    bad = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)
    try:
        data = np.load(path, allow_pickle=False)
    except bad as exc:
        raise UnreadableFile(first_line(exc), "numpy file") from exc
    if not isinstance(data, np.lib.npyio.NpzFile):
        return data
    with data:
        keys = list(data.files)
        if array is not None and array not in keys:
            raise UserError(f"{path} has no array {array!r}; it holds "
                            f"{', '.join(map(repr, keys)) or 'none'}")
        if not keys:
            raise UnreadableFile("it holds no arrays", "numpy file")
        if array is None and len(keys) > 1 and "images" not in keys:
            raise UserError(f"{path} holds {len(keys)} arrays ({', '.join(map(repr, keys))}): "
                            "name the one with the images, {param}", param="array",
                            api="array=NAME")
        key = array or (keys[0] if len(keys) == 1 else "images")
        try:
            return data[key]
        except bad as exc:
            raise UnreadableFile(first_line(exc), "numpy file") from exc


def _is_idx(name: str) -> bool:
    return "ubyte" in name or re.search(r"idx\d", name) is not None


def read_file(path: Path, *, array: str | None = None, single: bool = False) -> np.ndarray:
    """The images of one file as ``[N, C, H, W]`` in their own type, unscaled (see
    :func:`repinterp.app.loading.decode_file` for the layouts, ``array`` and ``single``).
    A file that is not an image is refused with :class:`UnreadableFile` (without its
    path: the decoder names it)."""
    try:
        st = path.stat()
    except OSError as exc:
        raise UnreadableFile(exc.strerror or first_line(exc)) from exc
    if not stat.S_ISREG(st.st_mode):                     # a FIFO would block for ever
        raise UnreadableFile("not a regular file")
    name = path.name.lower()
    if name.endswith((".npy", ".npz")):
        arr = _layout(_numpy_file(path, array), single)
    elif _is_idx(name):
        try:
            arr = _layout(_idx_array(path), single)
        except _IDX_ERRORS as exc:
            raise UnreadableFile(first_line(exc), "IDX file") from exc
    else:
        arr = _pillow_file(path)
    if single and len(arr) != 1:
        raise UnreadableFile(f"it holds {len(arr)} images; a folder's files hold one each")
    return arr
