"""The user's own images and models, with a clear error for every bad input."""
from __future__ import annotations

import difflib
import errno
import gzip
import os
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

__all__ = ["ImageSet", "NORMALIZATIONS", "build_arch", "check_feature_map", "checked_path",
           "expected_channels", "load_images", "load_model", "parse_normalize", "read_idx"]

NORMALIZATIONS = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "none": ((0.0,), (1.0,)),
}


@dataclass
class ImageSet:
    """Images ``[N, C, H, W]`` (normalised), their names, and what was skipped."""

    images: torch.Tensor
    names: list[str]
    skipped: list[str] = field(default_factory=list)


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
            raise UserError(f"normalize must be one of {sorted(NORMALIZATIONS)} or "
                            f"MEAN,STD with positive STD, got {spec!r}")
        mean, std = tuple(vals[: len(vals) // 2]), tuple(vals[len(vals) // 2:])
    if len(mean) not in (1, channels):
        raise UserError(f"normalisation {spec!r} has {len(mean)} channels, the images {channels}")
    return mean, std


_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4",
               0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a numpy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
        zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
        if zero != 0 or dtype_code not in _IDX_DTYPES:
            raise ValueError("bad magic number")
        shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
        arr = np.frombuffer(data, dtype=_IDX_DTYPES[dtype_code], offset=4 + 4 * ndim)
        return arr.reshape(shape)
    except (OSError, ValueError, struct.error, EOFError) as exc:
        raise UserError(f"{path} is not a readable IDX file ({exc})") from exc

def _to_channels(arr: np.ndarray, channels: int | None) -> np.ndarray:
    """``[N, C, H, W]`` float array converted to ``channels`` (gray <-> RGB)."""
    c = arr.shape[1]
    if channels is None or c == channels:
        return arr
    if c == 1 and channels == 3:
        return np.repeat(arr, 3, axis=1)
    if c in (3, 4) and channels == 1:
        return (arr[:, :3] * np.array([0.299, 0.587, 0.114])[None, :, None, None]).sum(
            1, keepdims=True)
    if c == 4 and channels == 3:
        return arr[:, :3]
    raise UserError(f"the images have {c} channels but the model takes {channels}")


def _resize(arr: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    if size is None or arr.shape[-2:] == size:
        return arr
    t = torch.nn.functional.interpolate(torch.from_numpy(arr).float(), size=size,
                                        mode="bilinear", align_corners=False, antialias=True)
    return t.numpy()


def _array_images(arr: np.ndarray, source: str) -> np.ndarray:
    """Bring an array to float ``[N, C, H, W]`` in ``[0, 1]`` when it holds bytes."""
    if arr.dtype == object or arr.size == 0:
        raise UserError(f"{source} holds no image array")
    if not np.issubdtype(arr.dtype, np.number):
        raise UserError(f"{source} holds {arr.dtype} values, not numbers")
    scale = 255.0 if arr.dtype == np.uint8 else 1.0
    arr = arr.astype(np.float32) / scale
    if arr.ndim == 2:
        arr = arr[None, None]
    elif arr.ndim == 3:
        arr = arr[:, None] if arr.shape[-1] not in (1, 3, 4) else arr[None].transpose(0, 3, 1, 2)
    elif arr.ndim == 4 and arr.shape[1] not in (1, 3, 4) and arr.shape[-1] in (1, 3, 4):
        arr = arr.transpose(0, 3, 1, 2)
    elif arr.ndim != 4:
        raise UserError(f"{source}: cannot read a {arr.ndim}-d array as images")
    if not np.isfinite(arr).all():
        raise UserError(f"{source} contains NaN or infinite values")
    return np.ascontiguousarray(arr)


# most pixels an image file may declare (Pillow's own bomb limit, ~89 Mpx): a larger one
# is refused before it is decoded
MAX_PIXELS = 89_478_485


def _png16(data: bytes) -> np.ndarray:
    """A non-interlaced 16-bit PNG (gray, gray+alpha, RGB, RGBA) as float32
    ``[H, W, C]`` scaled by 65535, alpha dropped: Pillow reads 16-bit colour PNGs at 8
    bits. The PNG filters are undone here (Average and Paeth row by row)."""
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
    values = (out[:, 0::2] << 8 | out[:, 1::2]).reshape(h, w, bands).astype(np.float32)
    return values[..., : 3 if bands >= 3 else 1] / np.float32(65535)


def _pixels(path: Path, im) -> np.ndarray:
    """The pixels of an open Pillow image as float32 ``[H, W, C]`` in ``[0, 1]``, scaled
    by the range of their type: 255 for 8-bit modes, 65535 for 16-bit ones (exactly; a
    conversion to 8 bits in Pillow would clip them)."""
    if im.format == "PNG" and im.mode in ("RGB", "RGBA", "LA"):
        data = path.read_bytes()
        if data[24:25] == b"\x10":                     # IHDR bit depth 16
            return _png16(data)
    if im.mode.startswith("I;16"):
        return np.asarray(im, dtype=np.float32)[..., None] / np.float32(65535)
    if im.mode == "I":                                   # 32-bit ints: 16-bit data
        arr = np.asarray(im, dtype=np.float64)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise ValueError("32-bit integer pixels beyond the 16-bit range are not "
                             "supported")
        return (arr / 65535).astype(np.float32)[..., None]
    if im.mode == "F":
        return np.asarray(im, dtype=np.float32)[..., None]
    gray = im.mode in ("1", "L", "LA", "La")
    arr = np.asarray(im.convert("L" if gray else "RGB"), dtype=np.float32) / np.float32(255)
    return arr[..., None] if arr.ndim == 2 else arr


def _read_image_file(path: Path, channels: int | None) -> np.ndarray:
    """One image file as float32 ``[C, H, W]`` in ``[0, 1]`` with ``channels`` channels
    (``None``: its own). Refused (``ValueError``) when unreadable or when it declares
    more than :data:`MAX_PIXELS` pixels (checked before decoding)."""
    from PIL import Image, UnidentifiedImageError
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > MAX_PIXELS:
                    raise ValueError(f"it declares {w}x{h} pixels, more than the "
                                     f"{MAX_PIXELS / 1e6:.0f} Mpx repinterp reads")
                arr = _pixels(path, im)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, KeyError,
            zlib.error, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ValueError(first_line(exc)) from exc
    return _to_channels(arr.transpose(2, 0, 1)[None], channels)[0]


def _image_files(root: Path) -> list[Path]:
    """Every non-hidden file under ``root`` (sorted): non-images are reported as skipped."""
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        files += [Path(dirpath) / f for f in sorted(filenames) if not f.startswith(".")]
    return files


def _read_files(files: list[Path], root: Path, channels: int | None,
                size: tuple[int, int] | None, strict: bool, limit: int | None = None
                ) -> tuple[list[np.ndarray], list[int], list[str], list[str]]:
    """Read image files in order, resized: the arrays, their positions in ``files``,
    their names under ``root``, and the names of unreadable files (skipped, or an error
    with ``strict``); stops after ``limit`` readable images."""
    arrays, found, names, skipped = [], [], [], []
    for k, f in enumerate(files):
        if limit is not None and len(arrays) >= limit:
            break  # --references N: read only as many files as needed
        try:
            a = _read_image_file(f, channels)
        except ValueError as exc:
            if strict:
                raise UserError(f"{f} is not a readable image ({exc})") from exc
            skipped.append(str(f.relative_to(root)))
            continue
        arrays.append(_resize(a[None], size)[0] if size else a)
        found.append(k)
        names.append(str(f.relative_to(root)))
    return arrays, found, names, skipped


def _stack(arrays: list[np.ndarray], root: Path) -> np.ndarray:
    """One ``[N, C, H, W]`` array, or a clear error when the images differ in size."""
    shapes = {a.shape[1:] for a in arrays}
    if len(shapes) > 1:
        raise UserError(f"the images in {root} have {len(shapes)} different sizes; "
                        "pass size=(H, W) to resize them")
    return np.stack(arrays)


def _idx_images_in(folder: Path) -> Path | None:
    """The images file of an MNIST-style folder (the training one when there are
    several), or None for any other path."""
    idx = sorted(folder.glob("*idx3-ubyte*")) if folder.is_dir() else []
    return ([f for f in idx if f.name.startswith("train")] or idx)[0] if idx else None


def load_images(path: str | os.PathLike, *, channels: int | None = None,
                size: tuple[int, int] | None = None, normalize: str | None = None,
                strict: bool = False, limit: int | None = None) -> ImageSet:
    """Load images from a folder (ImageFolder layout or flat; labels are ignored), a
    ``.npy``/``.npz`` array, an MNIST-style IDX file, or a single image file.

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
    """
    path = checked_path(path)
    skipped: list[str] = []
    idx_file = _idx_images_in(path)
    if idx_file is not None:  # an MNIST-style folder: take the training images
        return load_images(idx_file, channels=channels, size=size, normalize=normalize,
                           strict=strict, limit=limit)
    if path.is_dir():
        files = _image_files(path)
        if not files:
            raise UserError(f"{path} holds no files")
        arrays, _, names, skipped = _read_files(files, path, channels, size, strict, limit)
        if skipped:
            warnings.warn(f"skipped {len(skipped)} unreadable file(s) in {path}, e.g. "
                          f"{skipped[0]!r}", stacklevel=2)
        if not arrays:
            raise UserError(f"{path} holds no readable image ({len(skipped)} skipped)")
        arr = _stack(arrays, path)
    else:
        name = path.name.lower()
        if name.endswith((".npy", ".npz")):
            try:
                data = np.load(path, allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise UserError(f"{path} is not a readable numpy file ({exc})") from exc
            if isinstance(data, np.lib.npyio.NpzFile):
                keys = list(data.keys())
                key = "images" if "images" in keys else ("x" if "x" in keys else keys[0]) \
                    if keys else None
                if key is None:
                    raise UserError(f"{path} holds no arrays")
                data = data[key]
            arr = _array_images(data, str(path))
        elif "idx" in name or "ubyte" in name:
            arr = _array_images(read_idx(path), str(path))
        else:
            try:
                arr = _read_image_file(path, channels)[None]
            except ValueError as exc:
                raise UserError(f"{path} is not a readable image ({exc})") from exc
        names = [f"{path.name}[{i}]" for i in range(len(arr))] if len(arr) > 1 else [path.name]
        arr = _resize(arr, size)
    if limit is not None:
        arr, names = arr[:limit], names[:limit]
    return ImageSet(_finish(arr, channels, normalize), names, skipped)


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

    A plain, picklable description (path and loading options) of the same inputs as
    :func:`load_images`: a folder (files in sorted order) or an array file (``.npy``,
    ``.npz``, IDX, or an MNIST-style folder). ``items`` are the files or array rows;
    :meth:`read` returns the readable images of a range with their item numbers.
    """

    path: str
    channels: int | None = None
    size: tuple[int, int] | None = None
    normalize: str | None = None
    strict: bool = False

    def __post_init__(self) -> None:
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

    def _load_array(self) -> np.ndarray:
        if self._array is None:
            whole = load_images(self._root, channels=self.channels, size=self.size,
                                normalize="none", strict=self.strict)
            self._array = whole.images.numpy()
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

    def read(self, start: int, end: int) -> tuple[torch.Tensor, list[int], list[str]]:
        """Images of items ``start..end-1`` (unreadable files skipped, or an error with
        ``strict``), their item numbers and names."""
        if self._files is None:
            arr = self._load_array()[start:end]
            items = list(range(start, min(end, len(self))))
            names = [f"{self._root.name}[{i}]" for i in items]
            return _finish(arr, self.channels, self.normalize), items, names
        files = self._files[start:end]
        arrays, found, names, _ = _read_files(files, self._root, self.channels, self.size,
                                              self.strict)
        items = [start + k for k in found]
        if not arrays:
            return torch.empty(0), items, names
        return _finish(_stack(arrays, self._root), self.channels, self.normalize), items, names


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
    """Class names from a file (one per line) or from a torchvision weights enum's
    ``meta["categories"]`` (nothing is downloaded)."""
    enum = torchvision_weights(spec)
    if enum is not None:
        return list(enum.meta["categories"])
    path = Path(spec)
    if not path.exists() and not path.is_symlink():
        raise UserError(f"{path} does not exist (give a file with one class name per line "
                        "or a torchvision weights name)")
    path = checked_path(path, kind="file", what="class names file")
    names = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    return [n for n in names if n]


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
        raise UserError("give either arch=NAME (with weights=FILE) or model_file=FILE")
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
        kind = "a state dict: pass arch=NAME with weights=FILE" if isinstance(obj, dict) \
            else "not a TorchScript file"
        raise UserError(f"{path} is {kind} (a whole pickled model needs trust_pickle=True)")
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
                        "trust, use model_file=FILE with trust_pickle=True") from exc


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


def load_labels(data: str | os.PathLike, names: list[str], spec: str | None = None,
                class_names: list[str] | None = None) -> torch.Tensor | None:
    """Labels ``[N]`` (class indices; -1 where unknown) of the images ``names`` loaded
    from ``data``, or ``None`` when there are none.

    ``spec``: ``"none"``; a CSV file of ``path,label`` rows (a header row is allowed;
    ``path`` as the report names the image, i.e. relative to the folder; ``label`` a
    class index or a class name); an IDX labels file (in the images' order); or ``None``
    (default): the labels the data carries, i.e. an ImageFolder's class folders (class
    names when ``class_names`` lists every folder, else integer folder names, else the
    folders' sorted order, as torchvision's ``ImageFolder``) or the labels file beside
    MNIST-style IDX images.
    """
    if spec == "none":
        return None
    lookup = {n: i for i, n in enumerate(class_names or [])}

    def to_index(value: str, where: str) -> int:
        value = value.strip()
        if value in lookup:
            return lookup[value]
        try:
            return int(value)
        except ValueError:
            raise UserError(f"{where}: label {value!r} is neither a class index nor a "
                            "class name (pass class_names)") from None

    if spec is not None:
        path = checked_path(spec, kind="file", what="labels file")
        if "idx" in path.name or "ubyte" in path.name:
            arr = read_idx(path)
            if arr.ndim != 1 or len(arr) < len(names):
                raise UserError(f"{path} holds {arr.shape} labels for {len(names)} images")
            return torch.from_numpy(arr[:len(names)].astype(np.int64))
        import csv
        with open(path, newline="", encoding="utf-8") as fh:
            rows = [r for r in csv.reader(fh) if r]
        if rows and len(rows[0]) >= 2 and rows[0][1].strip().lower() == "label":
            rows = rows[1:]
        table: dict[str, int] = {}
        duplicates = 0
        for k, row in enumerate(rows):
            if len(row) < 2:
                raise UserError(f"{path} line {k + 1}: expected path,label")
            key = row[0].strip()
            duplicates += key in table
            table[key] = to_index(row[1], f"{path} line {k + 1}")
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
            return load_labels(data, names, str(lab[0]), class_names) if lab else None
        folders = [n.split("/", 1)[0] if "/" in n else None for n in names]
        if any(f is None for f in folders) or not folders:
            return None
        distinct = folder_classes(root) or []
        if not set(folders) <= set(distinct):
            distinct = sorted(set(folders))
        if class_names and all(f in lookup for f in distinct):
            mapping = {f: lookup[f] for f in distinct}
        elif all(f.isdigit() for f in distinct):
            mapping = {f: int(f) for f in distinct}
        else:
            mapping = {f: i for i, f in enumerate(distinct)}
        return torch.tensor([mapping[f] for f in folders], dtype=torch.long)
    return None
