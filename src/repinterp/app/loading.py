"""The user's own images, with a clear error for every bad input.

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

Each format's reader is in :mod:`repinterp.app.formats`, the pixel rule in
:mod:`repinterp.app.pixels`; models are in
:mod:`repinterp.app.models`, labels and class names in :mod:`repinterp.app.labels`.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..core.errors import UserError
from .formats import (
    RowFile,
    UnreadableFile,
    checked_path,
    idx_images_in,
    image_files,
    read_file,
)
from .pixels import apply_rule, checked_range, parse_pixel_range, pixel_rule

__all__ = ["ImageSet", "ImageSource", "NORMALIZATIONS", "decode_file", "load_images",
           "parse_normalize", "parse_pixel_range"]

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


def read_raw(path: str | os.PathLike, *, pixel_range: tuple[float, float] | str | None = None,
             array: str | None = None, single: bool = False
             ) -> tuple[np.ndarray | RowFile, tuple[float, float] | None]:
    """The images of one file as ``[N, C, H, W]`` in their own type (an ``.npy`` file,
    or an array ``np.savez`` stored uncompressed, as a
    :class:`~repinterp.app.formats.RowFile`: rows read when indexed), and the pixel rule
    that scales them (checked on all of them, a block at a time): :func:`decode_file`
    scales all the rows; a source holding many images scales only the rows it reads."""
    path = Path(path)
    try:
        raw = read_file(path, array=array, single=single)
        return raw, pixel_rule(raw, str(path), pixel_range)
    except UnreadableFile as exc:
        if exc.path is not None:
            raise
        raise UnreadableFile(exc.reason, exc.what, path) from exc


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
    raw, rule = read_raw(path, pixel_range=pixel_range, array=array, single=single)
    return apply_rule(np.asarray(raw[:]), rule)


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


def _stack(arrays: list[np.ndarray], root: Path) -> np.ndarray:
    """One ``[N, C, H, W]`` array, or a clear error when the images differ in size."""
    shapes = {a.shape[1:] for a in arrays}
    if len(shapes) > 1:
        raise UserError(f"the images in {root} have {len(shapes)} different sizes; "
                        "pass {param} to resize them", param="size", api="size=(H, W)")
    return np.stack(arrays)


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
            h, w = (int(s) for s in self.size)
            self.size = (h, w)
        self.pixel_range = checked_range(self.pixel_range)
        root = checked_path(self.path)
        root = idx_images_in(root) or root
        self._raw: tuple[np.ndarray | RowFile, tuple[float, float] | None] | None = None
        self._files: list[Path] | None
        if root.is_dir():
            self._files = image_files(root)
            if not self._files:
                raise UserError(f"{root} holds no files")
            self._root = root
        else:
            self._files, self._root = None, root
            self._count = len(self._raw_array()[0])

    @property
    def root(self) -> Path:
        """The folder or the file read (an MNIST-style folder's images file)."""
        return self._root

    def _raw_array(self) -> tuple[np.ndarray | RowFile, tuple[float, float] | None]:
        """An array file's images in their own type (read in place where the file
        allows: :func:`read_raw`) and their pixel rule: rows are read, scaled, converted
        and resized when asked for, so a source holds at most its raw array (a
        compressed one), never every image as float32."""
        if self._raw is None:
            self._raw = read_raw(self._root, pixel_range=self.pixel_range, array=self.array)
        return self._raw

    def _rows(self, rows: slice | list[int]) -> np.ndarray:
        raw, rule = self._raw_array()
        return _resize(_to_channels(apply_rule(raw[rows], rule), self.channels), self.size)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_raw"] = None               # each process reads the array itself
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
            if not found:
                return None, [], []
            run = len(found) and found[-1] - found[0] == len(found) - 1 and (
                len(found) == 1 or bool((np.diff(found) == 1).all()))
            return (self._rows(slice(found[0], found[-1] + 1) if run else found), found,
                    [])
        arrays: list[np.ndarray] = []
        found = []
        skipped: list[str] = []
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
