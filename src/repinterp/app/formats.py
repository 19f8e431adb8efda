"""The files on disk and what each format holds: a path checked, the files of a folder
(links to folders followed once), and the raw pixels of one file in their own type
(image files through Pillow, 16-bit PNGs decoded here, ``.npy``/``.npz`` arrays, IDX
files) as ``[N, C, H, W]``. :func:`repinterp.app.loading.decode_file` scales them by
the pixel rule; nothing here changes a value.
"""
from __future__ import annotations

import errno
import gzip
import math
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


class RowFile:
    """The rows (first axis) of a C-order array stored as raw bytes in a file at
    ``offset`` (an ``.npy``, or a member ``np.savez`` stored uncompressed), read with
    ``os.pread`` when indexed: never mapped into the process, so its resident set does
    not grow with the rows read however scattered they are (the page cache holds them,
    as for any read). ``rows[a:b]`` and ``rows[[i, j, ...]]`` give the rows as an
    array; ``laid`` is a function applied to every block read (the layout's
    transpose)."""

    def __init__(self, path: Path, offset: int, shape: tuple[int, ...], dtype: np.dtype,
                 laid: Any = None):
        self.path, self.offset, self.file_shape = path, int(offset), tuple(shape)
        self.dtype, self.laid = np.dtype(dtype), laid
        self.row_bytes = self.dtype.itemsize * math.prod(self.file_shape[1:])

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of all the rows as read (laid out)."""
        if self.laid is None:
            return self.file_shape
        one = self.laid(np.zeros((1, *self.file_shape[1:]), self.dtype)).shape
        return (self.file_shape[0], *one[1:])

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.file_shape)

    def __len__(self) -> int:
        return self.file_shape[0]

    def with_layout(self, laid: Any) -> RowFile:
        return RowFile(self.path, self.offset, self.file_shape, self.dtype, laid)

    def _run(self, fd: int, start: int, stop: int) -> np.ndarray:
        n = max(stop - start, 0)
        data = os.pread(fd, n * self.row_bytes, self.offset + start * self.row_bytes)
        if len(data) != n * self.row_bytes:
            raise UnreadableFile("it is shorter than its header says", "numpy file")
        return np.frombuffer(data, self.dtype).reshape(n, *self.file_shape[1:])

    def __getitem__(self, rows: Any) -> np.ndarray:
        n = self.file_shape[0]
        with open(self.path, "rb") as f:
            fd = f.fileno()
            if isinstance(rows, slice):
                start, stop, step = rows.indices(n)
                block = self._run(fd, start, stop)[::step] if step > 0 else \
                    np.asarray([self._run(fd, i, i + 1)[0] for i in range(start, stop, step)],
                               self.dtype).reshape(-1, *self.file_shape[1:])
            else:
                idx = np.asarray(rows, dtype=np.int64).reshape(-1)
                if len(idx) and (idx.min() < -n or idx.max() >= n):
                    raise IndexError(f"row index out of range for {n} rows")
                idx = np.where(idx < 0, idx + n, idx)
                cut = np.flatnonzero(np.diff(idx) != 1) + 1   # runs of consecutive rows
                parts = [self._run(fd, int(r[0]), int(r[-1]) + 1)
                         for r in np.split(idx, cut) if len(r)]
                block = np.concatenate(parts) if parts else \
                    np.empty((0, *self.file_shape[1:]), self.dtype)
        return block if self.laid is None else self.laid(block)


def _layout(arr: np.ndarray | RowFile, single: bool) -> np.ndarray | RowFile:
    """``arr`` as ``[N, C, H, W]``: ``[H, W]`` is one gray image, ``[H, W, C]`` one image
    (``C`` of 1, 3, 4), ``[N, H, W]`` N gray images (``[C, H, W]`` one image where the
    file must hold one, ``single``), ``[N, C, H, W]`` or ``[N, H, W, C]`` N images. A
    :class:`RowFile` of N images stays one, laid out block by block as it is read."""
    if isinstance(arr, RowFile):
        many = arr.ndim == 4 or (arr.ndim == 3 and arr.shape[-1] not in _CHANNELS
                                 and not (single and arr.shape[0] in _CHANNELS))
        if not many:
            return _layout(arr[:], single)           # one image: small, read whole
        return arr.with_layout(lambda block: _layout(block, single))
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


def _numpy_file(path: Path, array: str | None) -> np.ndarray | RowFile:
    """The array of a ``.npy`` file, or of an ``.npz`` file: its only array, the one
    named ``array``, else the one named ``images``; several others are refused by name."""
    import zipfile
    bad = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)
    try:
        rows = _npy_rows(path) if path.suffix.lower() == ".npy" else None
        if rows is not None:
            return rows                          # its rows are read when used
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
            rows = _stored_member(path, key)
            return data[key] if rows is None else rows
        except bad as exc:
            raise UnreadableFile(first_line(exc), "numpy file") from exc


def _header_rows(path: Path, f: Any, start: int, size: int | None) -> RowFile | None:
    """A :class:`RowFile` of the ``.npy`` bytes at ``start`` of the open file ``f``
    (``size``: how many bytes they take, checked when known), or ``None`` where its rows
    cannot be read in place (Fortran order, objects, one value, another header)."""
    from numpy.lib import format as npy
    headers = {(1, 0): npy.read_array_header_1_0, (2, 0): npy.read_array_header_2_0}
    f.seek(start)
    header = headers.get(npy.read_magic(f))
    if header is None:
        return None
    shape, fortran, dtype = header(f)
    offset = f.tell()
    if fortran or dtype.hasobject or not shape:
        return None
    if size is not None and offset - start + dtype.itemsize * math.prod(shape) != size:
        return None
    return RowFile(path, offset, shape, dtype)


def _npy_rows(path: Path) -> RowFile | None:
    """An ``.npy`` file's rows, read in place (:func:`_header_rows`); ``None``: read it
    with numpy (which says what is wrong with a bad one)."""
    try:
        with open(path, "rb") as f:
            rows = _header_rows(path, f, 0, None)
            if rows is None or path.stat().st_size < rows.offset + rows.size * \
                    rows.dtype.itemsize:
                return None
            return rows
    except (OSError, ValueError, EOFError):
        return None


def _stored_member(path: Path, key: str) -> RowFile | None:
    """The rows of the array ``key`` of an ``.npz``, read in place where ``np.savez``
    stored it uncompressed (its ``.npy`` bytes lie in the file as they are), else
    ``None`` (a compressed member is read whole instead)."""
    import zipfile
    with zipfile.ZipFile(path) as z:
        try:
            info = z.getinfo(f"{key}.npy")
        except KeyError:
            return None
        if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
            return None
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)                      # the member's local header
        if local[:4] != b"PK\x03\x04":
            return None
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        return _header_rows(path, f, info.header_offset + 30 + name_len + extra_len,
                            info.file_size)


def _is_idx(name: str) -> bool:
    return "ubyte" in name or re.search(r"idx\d", name) is not None


def read_file(path: Path, *, array: str | None = None, single: bool = False
              ) -> np.ndarray | RowFile:
    """The images of one file as ``[N, C, H, W]`` in their own type, unscaled (an
    ``.npy``, or an array ``np.savez`` stored uncompressed, of several images as a
    :class:`RowFile`, its rows read when indexed; see
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
