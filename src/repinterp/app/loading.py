"""The user's own images and models, with a clear error for every bad input.

Images of every format go through one decoder, :func:`decode_file` (image files through
Pillow: PNG, JPEG, TIFF, ...; ``.npy``/``.npz`` arrays; IDX files), whether read at once
(:func:`load_images`) or a range at a time (:class:`ImageSource`), with one rule for the
pixel values, set by their type alone, whatever the format:

* ``uint8``: divided by 255; ``uint16`` (16-bit PNG and TIFF too): divided by 65535;
* ``bool`` (1-bit images): 0 and 1;
* floating point: taken as they are, and they must lie in ``[0, 1]``;
* any other integer type (``int8``, ``int16``, ``int32``, ``int64``, ``uint32``, ...):
  its range is not known from the type.

Values the rule cannot settle (floats outside ``[0, 1]``, another integer type) are a
``UserError`` naming the file, until the user states their range with ``pixel_range``:
``(LO, HI)`` maps ``LO`` to 0 and ``HI`` to 1 in every file (values outside are refused),
``"raw"`` takes the values as they are (arrays that already are the model's input).
"""
from __future__ import annotations

import difflib
import errno
import gzip
import os
import re
import stat
import struct
import warnings
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..core.errors import UserError, first_line

__all__ = ["ImageSet", "ImageSource", "MAX_PIXELS", "NORMALIZATIONS", "UnreadableFile",
           "build_arch", "check_class_names", "check_feature_map", "check_folder_classes",
           "checked_path", "decode_file", "expected_channels", "folder_classes", "load_class_names",
           "load_images", "load_labels", "load_model", "model_classes", "parse_normalize",
           "parse_pixel_range", "read_idx"]

NORMALIZATIONS = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "none": ((0.0,), (1.0,)),
}


@dataclass
class ImageSet:
    """Images ``[N, C, H, W]`` (normalised), their names, what was skipped, and their
    item numbers (positions among the files or rows of the source)."""

    images: torch.Tensor
    names: list[str]
    skipped: list[str] = field(default_factory=list)
    items: list[int] = field(default_factory=list)


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


def parse_normalize(spec: str | None, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``imagenet``, ``fashion-mnist``, ``none`` or ``MEAN,STD`` (one value or one per
    channel each, e.g. ``0.5,0.5`` or ``0.4,0.4,0.4,0.2,0.2,0.2``). ``None``: ImageNet
    statistics for RGB, none for other channel counts."""
    if spec is None:
        spec = "imagenet" if channels == 3 else "none"
    if spec in NORMALIZATIONS:
        mean, std = NORMALIZATIONS[spec]
    else:
        try:
            vals = [float(v) for v in spec.split(",")]
        except ValueError:
            vals = []
        if len(vals) not in (2, 2 * channels) or any(v <= 0 for v in vals[len(vals) // 2:]):
            raise UserError("{param} must be one of " f"{sorted(NORMALIZATIONS)} or "
                            f"MEAN,STD with positive STD, got {spec!r}", param="normalize")
        mean, std = tuple(vals[: len(vals) // 2]), tuple(vals[len(vals) // 2:])
    if len(mean) not in (1, channels):
        raise UserError(f"normalisation {spec!r} has {len(mean)} channels, the images {channels}")
    return mean, std


_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4",
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
    return _checked_range((lo, hi))


def _checked_range(pixel_range) -> tuple[float, float] | str | None:
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


class UnreadableFile(UserError):
    """A file that is not an image (unreadable, not a regular file, not numbers): a
    folder's reader skips it (``strict``: the error); values of an image that the pixel
    rule cannot scale are a plain ``UserError``, never skipped."""

    def __init__(self, reason: str, what: str = "image", path: Path | None = None):
        self.reason, self.what, self.path = reason, what, path
        super().__init__(reason if path is None else
                         f"{path} is not a readable {what} ({reason})")


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


def _suggested_range(lo: float, hi: float) -> str:
    """The range of 8-bit or 16-bit pictures when the values fit it (`` (here 0,255)``),
    or nothing."""
    if lo >= 0 and hi <= 255:
        return " (here 0,255)"
    if lo >= 0 and hi <= 65535:
        return " (here 0,65535)"
    return ""


def _scale(arr: np.ndarray, source: str,
           pixel_range: tuple[float, float] | str | None) -> np.ndarray:
    """Pixel values as float32 by the module's pixel rule: ``(v - LO) / (HI - LO)`` with
    ``(LO, HI)`` the stated ``pixel_range`` or the range of the values' type (``uint8``
    0..255, ``uint16`` 0..65535, ``bool`` and floats 0..1); unchanged with ``"raw"``.
    Refused: no numbers (unreadable), NaN or infinite values, values outside the range,
    and a type whose range is unknown (other integer types) without ``pixel_range``."""
    if arr.dtype == object or arr.size == 0:
        raise UnreadableFile("it holds no image array", "image array")
    if arr.dtype.kind not in "buif":
        raise UnreadableFile(f"it holds {arr.dtype} values, not numbers", "image array")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise UserError(f"{source} contains NaN or infinite values")
    if isinstance(pixel_range, str):                        # "raw": the model's input
        return np.ascontiguousarray(arr, dtype=np.float32)
    native = {"b": (0, 1), "f": (0, 1)}.get(arr.dtype.kind) or {
        np.dtype(np.uint8): (0, 255), np.dtype(np.uint16): (0, 65535)}.get(arr.dtype)
    if pixel_range is not None or native is None or arr.dtype.kind == "f":
        vmin, vmax = arr.min().item(), arr.max().item()
    if pixel_range is not None:
        lo, hi = pixel_range
        if vmin < lo or vmax > hi:
            raise UserError(f"{source} has pixel values in [{vmin:g}, {vmax:g}], outside the "
                            f"stated pixel range ({lo:g}, {hi:g})")
    elif native is not None:
        lo, hi = native
        if arr.dtype.kind == "f" and (vmin < 0 or vmax > 1):
            raise UserError(
                f"{source} holds {arr.dtype} pixels in [{vmin:g}, {vmax:g}], not in [0, 1]: "
                "state their range with {pixel_range}" f"{_suggested_range(vmin, vmax)}, "
                "or {raw} for values that already are the model's input",
                params={"pixel_range": "pixel_range=(LO, HI)",
                        "raw": "pixel_range='raw'"})
    else:
        raise UserError(
            f"{source} holds {arr.dtype} pixels ({vmin}..{vmax}), a type whose range is not "
            "known: state it with {pixel_range}" f"{_suggested_range(vmin, vmax)}",
            params={"pixel_range": "pixel_range=(LO, HI)",
                        "raw": "pixel_range='raw'"})
    out = arr.astype(np.float32)
    if lo:
        out -= np.float32(lo)
    if hi - lo != 1:
        out /= np.float32(hi - lo)
    return out


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


def decode_file(path: str | os.PathLike, *,
                pixel_range: tuple[float, float] | str | None = None,
                array: str | None = None, single: bool = False) -> np.ndarray:
    """The images of one file as float32 ``[N, C, H, W]`` (their own channels), scaled by
    the pixel rule of the module's docstring: the one decoder of every format.

    An image file (PNG, JPEG, TIFF, ... through Pillow) holds one image; ``.npy`` and
    ``.npz`` (``array``: the name of the array in an ``.npz`` holding several) and IDX
    files hold ``[H, W]``, ``[H, W, C]``, ``[N, H, W]``, ``[N, C, H, W]`` or
    ``[N, H, W, C]``. With ``single`` the file must hold one image (a folder's files),
    and ``[C, H, W]`` is read as one. Raises ``UserError`` for values the rule cannot
    scale; a file that is not an image (not a regular file, unreadable, not numbers) is
    refused with :class:`UnreadableFile`, a ``UserError`` too."""
    path = Path(path)
    try:
        return _decode(path, pixel_range, array, single)
    except UnreadableFile as exc:
        if exc.path is not None:
            raise
        raise UnreadableFile(exc.reason, exc.what, path) from exc


def _decode(path: Path, pixel_range, array: str | None, single: bool) -> np.ndarray:
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
    return _scale(arr, str(path), pixel_range)


def _to_channels(arr: np.ndarray, channels: int | None) -> np.ndarray:
    """``[N, C, H, W]`` float32 array converted to ``channels`` (gray <-> RGB)."""
    c = arr.shape[1]
    if channels is None or c == channels:
        return arr
    if c == 1 and channels == 3:
        return np.repeat(arr, 3, axis=1)
    if c in (3, 4) and channels == 1:
        gray = (arr[:, :3] * np.array([0.299, 0.587, 0.114])[None, :, None, None]).sum(
            1, keepdims=True)
        return gray.astype(np.float32)
    if c == 4 and channels == 3:
        return arr[:, :3]
    raise UserError(f"the images have {c} channels but the model takes {channels}")


def _resize(arr: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    if size is None or arr.shape[-2:] == tuple(size):
        return arr
    t = torch.nn.functional.interpolate(torch.from_numpy(arr).float(), size=tuple(size),
                                        mode="bilinear", align_corners=False, antialias=True)
    return t.numpy()


def _image_files(root: Path, *, warn: bool = True) -> list[Path]:
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


def _stack(arrays: list[np.ndarray], root: Path) -> np.ndarray:
    """One ``[N, C, H, W]`` array, or a clear error when the images differ in size."""
    shapes = {a.shape[1:] for a in arrays}
    if len(shapes) > 1:
        raise UserError(f"the images in {root} have {len(shapes)} different sizes; "
                        "pass {param} to resize them", param="size", api="size=(H, W)")
    return np.stack(arrays)


def _idx_images_in(folder: Path) -> Path | None:
    """The images file of an MNIST-style folder (the training one when there are
    several), or None for any other path."""
    idx = sorted(folder.glob("*idx3-ubyte*")) if folder.is_dir() else []
    return ([f for f in idx if f.name.startswith("train")] or idx)[0] if idx else None


def load_images(path: str | os.PathLike, *, channels: int | None = None,
                size: tuple[int, int] | None = None, normalize: str | None = None,
                strict: bool = False, limit: int | None = None, seed: int = 0,
                pixel_range: tuple[float, float] | str | None = None,
                array: str | None = None) -> ImageSet:
    """Load images from a folder (ImageFolder layout or flat; labels are ignored), a
    ``.npy``/``.npz`` array, an MNIST-style IDX file or folder, or a single image file:
    the images of :class:`ImageSource` (the same decoder, names and values).

    Pixel values follow one rule whatever the format (see the module's docstring):
    ``uint8`` / 255, ``uint16`` / 65535, ``bool`` as 0/1, floats as they are and only
    within ``[0, 1]``; floats outside ``[0, 1]`` and other integer types (``int16``,
    ``int32``, ...) are refused, naming the file, unless ``pixel_range`` is given.

    Parameters
    ----------
    channels
        Convert to this many channels (gray <-> RGB); ``None`` keeps the files' own.
    size
        Resize to ``(H, W)``; ``None`` requires all images to share one size.
    normalize
        See :func:`parse_normalize`.
    strict
        Fail on an unreadable file instead of skipping it with a warning.
    limit
        Keep this many images, drawn at random (``seed``) stratified over the class
        folders of a folder (as many from each as its share of the files, within one;
        a flat folder or an array is one stratum), in their sorted order; an unreadable
        file drawn is replaced by the next draw. ``None``: every image.
    seed
        Seed of the draw of ``limit`` images.
    pixel_range
        ``(LO, HI)``: every file's values map ``LO -> 0``, ``HI -> 1`` (values outside
        are refused), e.g. ``(0, 255)`` for float or ``int16`` data of 8-bit pictures;
        ``"raw"``: values taken as they are (arrays that already are the model's input,
        e.g. normalised; pair with ``normalize="none"``). ``None``: the rule above.
    array
        The array of an ``.npz`` holding several (otherwise its only array, or the one
        named ``images``).
    """
    source = ImageSource(str(path), channels=channels, size=size, normalize=normalize,
                         strict=strict, pixel_range=pixel_range, array=array)
    got = source.load(limit=limit, seed=seed)
    if got.skipped:
        warnings.warn(f"skipped {len(got.skipped)} unreadable file(s) in {source.root}, e.g. "
                      f"{got.skipped[0]!r}", stacklevel=2)
    return got


def _finish(arr: np.ndarray, channels: int | None, normalize: str | None) -> torch.Tensor:
    """Channels converted and normalised: the model's input."""
    arr = _to_channels(arr, channels)
    mean, std = parse_normalize(normalize, arr.shape[1])
    m = np.asarray(mean, dtype=np.float32)[None, :, None, None]
    s = np.asarray(std, dtype=np.float32)[None, :, None, None]
    return torch.from_numpy(((arr - m) / s).astype(np.float32))


@dataclass
class ImageSource:
    """Images read a range at a time, for passes over more images than memory holds.

    A plain, picklable description (path and loading options, as :func:`load_images`
    takes them) of the same inputs as :func:`load_images`, which reads through it: a
    folder (its files in sorted order, each decoded by :func:`decode_file`) or an array
    file (``.npy``, ``.npz``, IDX, or an MNIST-style folder), or one image file.
    ``items`` are the files or array rows; :meth:`read` returns the readable images of a
    range with their item numbers and names. Names: a folder's files by their path under
    it; the rows of a file holding several images ``NAME[i]``; a file holding one image
    by its name.
    """

    path: str
    channels: int | None = None
    size: tuple[int, int] | None = None
    normalize: str | None = None
    strict: bool = False
    pixel_range: tuple[float, float] | str | None = None
    array: str | None = None

    def __post_init__(self) -> None:
        if self.size is not None:
            self.size = tuple(int(s) for s in self.size)
        self.pixel_range = _checked_range(self.pixel_range)
        root = checked_path(self.path)
        root = _idx_images_in(root) or root
        self._array: np.ndarray | None = None
        if root.is_dir():
            self._files = _image_files(root)
            if not self._files:
                raise UserError(f"{root} holds no files")
            self._root = root
        else:
            self._files, self._root = None, root
            self._count = len(self._load_array())

    @property
    def root(self) -> Path:
        """The folder or the file read (an MNIST-style folder's images file)."""
        return self._root

    def _load_array(self) -> np.ndarray:
        if self._array is None:
            arr = decode_file(self._root, pixel_range=self.pixel_range, array=self.array)
            self._array = _resize(_to_channels(arr, self.channels), self.size)
        return self._array

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_array"] = None             # each process reads the array itself
        return state

    def __len__(self) -> int:
        return len(self._files) if self._files is not None else self._count

    def listing(self) -> list[tuple[str, int, int]]:
        """What the items are read from, in order: ``(name, size, mtime_ns)`` of every
        file of a folder, or of the one array file. An index records it, so that a
        changed source (a file added, removed, replaced) is refused, not misread."""
        files = self._files if self._files is not None else [self._root]
        base = self._root if self._files is not None else self._root.parent
        out = []
        for f in files:
            try:
                st = f.stat()
            except OSError:
                st = None
            out.append((str(f.relative_to(base)), st.st_size if st else -1,
                        st.st_mtime_ns if st else -1))
        return out

    def _names(self, items: list[int]) -> list[str]:
        if self._files is not None:
            return [str(self._files[k].relative_to(self._root)) for k in items]
        if self._count == 1:
            return [self._root.name for _ in items]
        return [f"{self._root.name}[{k}]" for k in items]

    def _gather(self, items, limit: int | None = None
                ) -> tuple[np.ndarray | None, list[int], list[str]]:
        """The readable images of ``items`` (in that order, stopping after ``limit``),
        their item numbers, and the names of the unreadable files (skipped, or an error
        with ``strict``)."""
        if self._files is None:
            found = list(items)[:limit]
            whole = self._load_array()
            run = len(found) and found[-1] - found[0] == len(found) - 1 and (
                len(found) == 1 or bool((np.diff(found) == 1).all()))
            return (whole[found[0]:found[-1] + 1] if run else whole[found]), found, []
        arrays, found, skipped = [], [], []
        for k in items:
            if limit is not None and len(found) >= limit:
                break                        # read only as many files as needed
            f = self._files[k]
            try:
                a = decode_file(f, pixel_range=self.pixel_range, array=self.array,
                                single=True)
            except UnreadableFile:
                if self.strict:
                    raise
                skipped.append(str(f.relative_to(self._root)))
                continue
            arrays.append(_resize(_to_channels(a, self.channels), self.size)[0])
            found.append(k)
        return (_stack(arrays, self._root) if arrays else None), found, skipped

    def read(self, start: int, end: int) -> tuple[torch.Tensor, list[int], list[str]]:
        """Images of items ``start..end-1`` (unreadable files skipped, or an error with
        ``strict``), their item numbers and names."""
        arr, items, _ = self._gather(range(start, min(end, len(self))))
        if arr is None or not len(arr):
            return torch.empty(0), items, self._names(items)
        return _finish(arr, self.channels, self.normalize), items, self._names(items)

    def _strata(self) -> np.ndarray:
        """The stratum of each item: a folder's top-level class folder, else one."""
        if self._files is None:
            return np.zeros(len(self), np.int64)
        tops = [f.relative_to(self._root).parts for f in self._files]
        return np.unique([p[0] if len(p) > 1 else "" for p in tops], return_inverse=True)[1]

    def draw(self, limit: int | None, seed: int = 0) -> list[int]:
        """Every item in the order a draw of ``limit`` takes them (all of them, in order,
        when ``limit`` is None or not below their number): a seeded random order in
        which any first ``n`` items hold each stratum (:meth:`_strata`) in proportion to
        its size, within one."""
        n = len(self)
        if limit is None or limit >= n:
            return list(range(n))
        strata = self._strata()
        rng = np.random.default_rng(seed)
        keys = np.empty(n)
        for s in range(int(strata.max()) + 1):
            members = np.flatnonzero(strata == s)
            order = rng.permutation(len(members))
            keys[members[order]] = (np.arange(len(members)) + rng.random()) / len(members)
        return np.argsort(keys, kind="stable").tolist()

    def load(self, limit: int | None = None, seed: int = 0) -> ImageSet:
        """The images (every one, or ``limit`` drawn by :meth:`draw` with ``seed``, in
        item order) as one :class:`ImageSet`; no readable image is an error."""
        arr, items, skipped = self._gather(self.draw(limit, seed), limit)
        if arr is None:
            raise UserError(f"{self._root} holds no readable image ({len(skipped)} skipped)")
        if limit is not None and limit < len(self):
            keep = np.argsort(items, kind="stable")
            arr, items = arr[keep], [items[k] for k in keep]
        return ImageSet(_finish(arr, self.channels, self.normalize), self._names(items),
                        skipped, items)


def expected_channels(model: nn.Module) -> int | None:
    """Input channels of the first convolution, if there is one."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv1d, nn.Conv3d)):
            return m.in_channels
        if hasattr(m, "original_name") and hasattr(m, "in_channels"):
            return int(m.in_channels)
    return None


def check_feature_map(model: nn.Module, layer: str, image: torch.Tensor) -> None:
    """Refuse, before any fit, a layer whose output is not a ``C x H x W`` map (the
    reports draw heat maps on it): one image through the layers up to it."""
    from ..core.network import inference_mode
    from ..core.split import split_model
    features = split_model(model, layer).features
    param = next(model.parameters(), None)
    x = image[None].to(param.dtype if param is not None else torch.float32)
    try:
        with torch.no_grad(), inference_mode(model):
            out = features(x)
    except Exception:  # noqa: BLE001 - a bad input size is reported by the fit itself
        return
    if isinstance(out, torch.Tensor) and out.ndim == 3:
        from ..core.heatmap import token_grid
        try:
            token_grid(out[:1])                  # tokens on a square grid of patches
            return
        except ValueError:
            pass
    if isinstance(out, torch.Tensor) and out.ndim != 4:
        raise UserError(f"layer {layer!r} outputs {tuple(out.shape[1:])}, not a feature map "
                        "C x H x W nor tokens on a square grid of patches: heat maps need "
                        "one; choose an earlier layer (see `repinterp layers`)")


def _torchvision_archs() -> list[str]:
    import torchvision
    return sorted(torchvision.models.list_models(module=torchvision.models))


def build_arch(arch: str, num_classes: int | None,
               archs: Mapping[str, Callable[..., nn.Module]] | None = None) -> nn.Module:
    """A randomly initialised model: one of ``archs`` (name -> constructor taking
    ``num_classes``), any torchvision classifier, or ``timm:NAME`` (any of timm's
    architectures, when timm is installed)."""
    archs = archs or {}
    kwargs = {"num_classes": num_classes} if num_classes else {}
    if arch in archs:
        return archs[arch](**kwargs)
    if arch.startswith("timm:"):
        return _timm_model(arch[len("timm:"):], kwargs)
    names = _torchvision_archs()
    if arch not in names:
        close = difflib.get_close_matches(arch, names + sorted(archs), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UserError(f"unknown architecture {arch!r}{hint}")
    import torchvision
    try:
        return torchvision.models.get_model(arch, weights=None, **kwargs)
    except (TypeError, ValueError) as exc:
        raise UserError(f"cannot build {arch}: {exc}") from exc


def _timm_model(name: str, kwargs: dict) -> nn.Module:
    """``timm.create_model(name, pretrained=False)``: random weights, nothing downloaded
    (``weights=FILE`` loads a state dict afterwards)."""
    try:
        import timm
    except ImportError:
        raise UserError(f"--arch timm:{name} needs timm: pip install 'repinterp[timm]'") \
            from None
    names = timm.list_models()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3)
        hint = f"; did you mean {', '.join('timm:' + c for c in close)}?" if close else ""
        raise UserError(f"timm has no architecture {name!r}{hint}")
    try:
        return timm.create_model(name, pretrained=False, **kwargs)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise UserError(f"cannot build timm:{name}: {first_line(exc)}") from exc


def torchvision_weights(name: str):
    """The torchvision weights enum named ``name`` (``ResNet50_Weights.IMAGENET1K_V2``),
    or None when ``name`` does not look like one (a file name, say)."""
    if "_Weights." not in name or Path(name).exists():
        return None
    from torchvision.models import get_weight
    try:
        return get_weight(name)
    except (KeyError, ValueError, AttributeError):
        raise UserError(f"{name!r} is not a torchvision weights name (e.g. "
                        "ResNet50_Weights.IMAGENET1K_V2)") from None


def load_class_names(spec: str) -> list[str]:
    """Class names from a file (one per line, blank lines ignored; a name given twice is
    refused, naming both lines) or from a torchvision weights enum's
    ``meta["categories"]`` (nothing is downloaded)."""
    enum = torchvision_weights(spec)
    if enum is not None:
        return list(enum.meta["categories"])
    path = Path(spec)
    if not path.exists() and not path.is_symlink():
        raise UserError(f"{path} does not exist (give a file with one class name per line "
                        "or a torchvision weights name)")
    path = checked_path(path, kind="file", what="class names file")
    names: list[str] = []
    first: dict[str, int] = {}
    for line, text in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        name = text.strip()
        if not name:
            continue
        if name in first:
            raise UserError(f"{path} line {line}: class name {name!r} is also on line "
                            f"{first[name]}; each class needs a name of its own")
        first[name] = line
        names.append(name)
    return names


def load_model(*, arch: str | None = None, weights: str | None = None,
               num_classes: int | None = None, model_file: str | None = None,
               trust_pickle: bool = False,
               archs: Mapping[str, Callable[..., nn.Module]] | None = None) -> nn.Module:
    """The user's model, in eval mode.

    * ``arch`` (+ ``weights``, a state dict, loaded with ``weights_only=True``): one of
      ``archs`` (the CLI passes the demo architectures ``vgg``, ``resnet``) or a
      torchvision name such as ``resnet18``. ``weights`` may also name torchvision
      weights (``ResNet50_Weights.IMAGENET1K_V2``): their file is taken from torch's hub
      cache, and fetched only if missing there.
    * ``model_file``: a TorchScript file, a state dict of one of ``archs``, or a whole
      pickled model only when ``trust_pickle`` is set (unpickling runs arbitrary code).
    """
    if (arch is None) == (model_file is None):
        raise UserError("give either {param}", param="model",
                        api="arch=NAME (with weights=FILE) or model_file=FILE")
    if arch is not None:
        model = build_arch(arch, num_classes, archs)
        enum = torchvision_weights(weights) if weights else None
        if enum is not None:
            try:
                state = enum.get_state_dict(progress=False, check_hash=True)
            except Exception as exc:  # noqa: BLE001 - URLError, hash mismatch, ...
                raise UserError(f"cannot get the {weights} file ({first_line(exc)}); put "
                                f"{enum.url.rsplit('/', 1)[-1]} in torch's hub cache "
                                "(~/.cache/torch/hub/checkpoints)") from exc
        elif weights:
            state = _load_weights_only(Path(weights))
        if weights:
            if isinstance(state, dict) and "state_dict" in state and isinstance(
                    state["state_dict"], dict):
                state = state["state_dict"]
            if not isinstance(state, dict):
                raise UserError(f"{weights} is not a state dict")
            try:
                model.load_state_dict(state)
            except RuntimeError as exc:
                own = model.state_dict()
                missing = [k for k in own if k not in state]
                extra = [k for k in state if k not in own]
                shapes = [f"{k} is {tuple(state[k].shape)} in the file, "
                          f"{tuple(own[k].shape)} in the model" for k in own
                          if k in state and isinstance(state[k], torch.Tensor)
                          and state[k].shape != own[k].shape]
                detail = "; ".join(
                    ([f"{len(missing)} missing keys (e.g. {missing[0]})"] if missing else [])
                    + ([f"{len(extra)} unexpected keys (e.g. {extra[0]})"] if extra else [])
                    + shapes[:2]) or first_line(exc)
                raise UserError(f"{weights} does not fit {arch} with "
                                f"{num_classes or 'default'} classes ({detail}); check "
                                "arch and num_classes") from exc
        return model.eval()
    path = checked_path(model_file, kind="file", what="model file")
    try:
        with warnings.catch_warnings():  # torch >= 2.9 flags TorchScript as deprecated
            warnings.simplefilter("ignore", FutureWarning)
            return torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as exc:  # noqa: BLE001 - not TorchScript: try a state dict next
        if _is_torchscript_archive(path):
            raise UserError(f"{path} is a corrupt TorchScript file ({first_line(exc)})") \
                from exc
    if not trust_pickle:
        obj = _load_weights_only(path)
        if isinstance(obj, dict):
            demo = _match_arch(obj, num_classes, archs or {})
            if demo is not None:
                return demo.eval()
        kind = "a state dict: pass {weights}" if isinstance(obj, dict) \
            else "not a TorchScript file"
        raise UserError(f"{path} is {kind} " "(a whole pickled model needs {trust_pickle})",
                        params={"weights": "arch=NAME with weights=FILE",
                                "trust_pickle": "trust_pickle=True"})
    try:
        model = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - anything the unpickler raises
        raise UserError(f"cannot unpickle {path} ({first_line(exc)})") from exc
    if not isinstance(model, nn.Module):
        raise UserError(f"{path} holds a {type(model).__name__}, not a torch model")
    return model.eval()


def _is_torchscript_archive(path: Path) -> bool:
    """True for a zip archive laid out as TorchScript saves it (``code/`` and
    ``constants.pkl``), which ``torch.save`` archives do not have."""
    import zipfile
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (OSError, zipfile.BadZipFile, ValueError):
        return False
    return any("/code/" in n for n in names) and any(n.endswith("/constants.pkl")
                                                     for n in names)


def _match_arch(state: dict, num_classes: int | None,
               archs: Mapping[str, Callable[..., nn.Module]]) -> nn.Module | None:
    """One of ``archs`` (e.g. the demo architectures) that the state dict fits."""
    for cls in archs.values():
        model = cls(num_classes=num_classes or 10)
        try:
            model.load_state_dict(state)
        except RuntimeError:
            continue
        return model
    return None


def _load_weights_only(path: Path):
    path = checked_path(path, kind="file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for bad files
        raise UserError(f"{path} cannot be loaded safely: it is neither TorchScript nor a "
                        "state dict (weights_only=True); if it is a whole pickled model you "
                        "trust, use {param}", param="trusted_model",
                        api="model_file=FILE with trust_pickle=True") from exc


def folder_classes(data: str | os.PathLike | None) -> list[str] | None:
    """The class folders of an ImageFolder ``data`` (its subfolders, sorted: torchvision's
    ``ImageFolder`` order), or None for any other data (a flat folder, a file, an
    MNIST-style folder)."""
    if data is None:
        return None
    root = Path(data)
    if not root.is_dir() or _idx_images_in(root) is not None:
        return None
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        return None
    if any(e.is_file() and not e.name.startswith(".") for e in entries):
        return None
    folders = [e.name for e in entries if e.is_dir() and not e.name.startswith(".")]
    return folders or None


def model_classes(model: nn.Module, image: torch.Tensor) -> int:
    """The number of classes ``model`` scores: one image through it (no gradients; the
    model is left as it was); 0 when it cannot tell (an image the model refuses is
    reported by the fit's own checks, with a better message)."""
    from ..core.network import inference_mode
    from ..core.split import logits_of
    param = next(model.parameters(), None)
    x = image[None].to(param.dtype if param is not None else torch.float32)
    try:
        with torch.no_grad(), inference_mode(model):
            out = model(x)
    except Exception:  # noqa: BLE001 - the fit names the problem
        return 0
    out = logits_of(out)
    return int(out.shape[-1]) if isinstance(out, torch.Tensor) else 0


def check_class_names(names: list[str] | None, classes: int, source: str) -> None:
    """Refuse class names that do not match the model's classes one for one."""
    if names is not None and classes and len(names) != classes:
        raise UserError(f"{source} has {len(names)} class names for a model with "
                        f"{classes} classes: give one name per class, in the model's order")


def _few(items: list[str], k: int = 4) -> str:
    shown = ", ".join(repr(i) for i in items[:k])
    return shown + (f" and {len(items) - k} more" if len(items) > k else "")


def check_folder_classes(data: str | os.PathLike | None, classes: int,
                         class_names: list[str] | None = None) -> None:
    """Refuse an ImageFolder ``data`` whose class folders are not the model's
    ``classes`` classes, naming the extra and the missing folders: folders named by
    class index (``0`` .. ``classes - 1``, when every folder is a number and not a class
    name), else with ``class_names`` one folder per class name, else one folder per
    class. Other data (a flat folder, a file, an MNIST-style folder) and ``classes`` 0
    (unknown) pass."""
    folders = folder_classes(data)
    if not folders or not classes:
        return
    names = list(class_names or [])
    if all(f.isdigit() for f in folders) and not set(folders) <= set(names):
        have = {int(f) for f in folders}
        extra = [f for f in folders if int(f) >= classes]
        missing = [str(i) for i in range(classes) if i not in have]
    elif names:
        extra = [f for f in folders if f not in names]
        missing = [n for n in names if n not in folders]
    elif len(folders) != classes:
        raise UserError(f"{data} has {len(folders)} class folders ({_few(folders)}) for a "
                        f"model with {classes} classes: give one folder per class, or "
                        "{param} to match them by name", param="class_names")
    else:
        return
    if extra or missing:
        parts = ([f"extra folder(s) {_few(extra)}"] if extra else []) + (
            [f"no folder for {_few(missing)}"] if missing else [])
        raise UserError(f"the class folders of {data} do not match the model's {classes} "
                        f"classes: {'; '.join(parts)}")


def _items_of(data: str | os.PathLike, names: list[str]) -> tuple[list[int] | None, int]:
    """The item numbers of images named ``names`` (:class:`ImageSource`'s naming: a
    folder's files by position in its sorted listing, unreadable ones included; rows of
    an array ``NAME[i]``; a one-image file 0), and the number of files of a folder
    (0 for other data); ``None`` when a name is none of these."""
    root = Path(data)
    position: dict[str, int] = {}
    if root.is_dir() and _idx_images_in(root) is None:
        position = {str(f.relative_to(root)): k
                    for k, f in enumerate(_image_files(root, warn=False))}
    items, by_position = [], False
    for n in names:
        row = re.fullmatch(r".*\[(\d+)\]", n)
        if n in position:
            items.append(position[n])
            by_position = True
        elif row:
            items.append(int(row.group(1)))
        elif not root.is_dir() and n == root.name:
            items.append(0)
        else:
            return None, 0
    return items, len(position) if by_position else 0


def load_labels(data: str | os.PathLike, names: list[str], spec: str | None = None,
                class_names: list[str] | None = None, *,
                classes: int | None = None) -> torch.Tensor | None:
    """Labels ``[N]`` (class indices; -1 where unknown) of the images ``names`` loaded
    from ``data``, or ``None`` when there are none.

    ``spec``: ``"none"``; a CSV file of ``path,label`` rows (a header row is allowed;
    ``path`` as the report names the image, i.e. relative to the folder; ``label`` a
    class index or a class name); an IDX labels file (one label per item of ``data``, in
    order: per file of a folder in sorted order, unreadable files included, or per array
    row; each image gets its own item's label, whatever was skipped or drawn); or
    ``None`` (default): the labels the data carries, i.e. an ImageFolder's class folders
    (class names when ``class_names`` lists every folder, else integer folder names,
    else the folders' sorted order, as torchvision's ``ImageFolder``) or the labels file
    beside MNIST-style IDX images.

    ``classes``: the model's number of classes (else ``len(class_names)`` when given);
    a label outside ``0 .. classes - 1`` is refused, naming its line, item or folder. A
    negative label is always refused.
    """
    if spec == "none":
        return None
    lookup = {n: i for i, n in enumerate(class_names or [])}
    bound = classes or len(lookup) or None
    span = f" (0..{bound - 1})" if bound else ""

    def checked(value: int, where: str) -> int:
        if value < 0 or (bound is not None and value >= bound):
            raise UserError(f"{where}: label {value} is not a class of the model{span}")
        return value

    def to_index(value: str, where: str) -> int:
        value = value.strip()
        if value in lookup:
            return lookup[value]
        try:
            number = int(value)
        except ValueError:
            raise UserError(f"{where}: label {value!r} is neither a class index nor a "
                            "class name (pass {param})", param="class_names") from None
        return checked(number, where)

    if spec is not None:
        path = checked_path(spec, kind="file", what="labels file")
        if "idx" in path.name or "ubyte" in path.name:
            arr = read_idx(path)
            if arr.ndim != 1:
                raise UserError(f"{path} holds {arr.shape} labels, not one per image")
            items, files = _items_of(data, names)
            if items is None:
                if len(arr) != len(names):
                    raise UserError(f"{path} holds {len(arr)} labels for {len(names)} images "
                                    "whose items are unknown: give as many labels")
                items = list(range(len(names)))
            if files and len(arr) != files:
                raise UserError(f"{path} holds {len(arr)} labels for the {files} files of "
                                f"{data}: give one label per file, in sorted order")
            if items and max(items) >= len(arr):
                raise UserError(f"{path} holds {len(arr)} labels; item {max(items)} of "
                                f"{data} has none")
            got = arr[np.asarray(items, dtype=np.int64)].astype(np.int64)
            bad = np.flatnonzero((got < 0) | (got >= (bound or np.iinfo(np.int64).max)))
            if len(bad):
                checked(int(got[bad[0]]), f"{path} item {items[bad[0]]} ({names[bad[0]]})")
            return torch.from_numpy(got)
        import csv
        with open(path, newline="", encoding="utf-8-sig") as fh:     # a BOM is no name
            reader = csv.reader(fh)
            rows = [(reader.line_num, r) for r in reader if r]      # (line in the file, row)
        if rows and len(rows[0][1]) >= 2 and rows[0][1][1].strip().lower() == "label":
            rows = rows[1:]
        table: dict[str, int] = {}
        duplicates = 0
        for line, row in rows:
            if len(row) < 2:
                raise UserError(f"{path} line {line}: expected path,label")
            key = row[0].strip()
            duplicates += key in table
            table[key] = to_index(row[1], f"{path} line {line}")
        known = set(names)
        unmatched = [key for key in table if key not in known]
        if table and len(unmatched) == len(table):
            raise UserError(f"none of the {len(table)} paths in {path} names an image of "
                            f"the data (e.g. {unmatched[0]!r}; images are named like "
                            f"{names[0]!r})")
        if unmatched:
            warnings.warn(f"{len(unmatched)} row(s) of {path} name no image of the data "
                          f"(e.g. {unmatched[0]!r}); they are ignored", stacklevel=2)
        if duplicates:
            warnings.warn(f"{duplicates} duplicate row(s) in {path}; the last label of each "
                          "path is used", stacklevel=2)
        return torch.tensor([table.get(n, -1) for n in names], dtype=torch.long)
    root = Path(data)
    if root.is_dir():
        idx_file = _idx_images_in(root)
        if idx_file is not None:
            lab = sorted(root.glob(idx_file.name.split("-images")[0] + "-labels-idx1*"))
            return load_labels(data, names, str(lab[0]), class_names, classes=classes) \
                if lab else None
        folders = [n.split("/", 1)[0] if "/" in n else None for n in names]
        if any(f is None for f in folders) or not folders:
            return None
        distinct = folder_classes(root) or []
        if not set(folders) <= set(distinct):
            distinct = sorted(set(folders))
        if class_names and all(f in lookup for f in distinct):
            mapping = {f: lookup[f] for f in distinct}
        elif all(f.isdigit() for f in distinct):
            mapping = {f: checked(int(f), f"{root} class folder {f!r}") for f in distinct}
        else:
            mapping = {f: i for i, f in enumerate(distinct)}
        return torch.tensor([mapping[f] for f in folders], dtype=torch.long)
    return None
