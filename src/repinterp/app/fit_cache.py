"""Fits saved on disk, so that a command on an unchanged folder does not fit it again.

A fit of the references (:func:`repinterp.app.pipeline.fit_references`) is saved as one
file ``fit-<key>.pt`` in the cache folder (``--cache DIR``; default
:func:`default_folder`: ``~/.cache/repinterp/fits``). The key is the SHA-256 of
everything the fit depends on: the model's digest (every parameter and buffer) with its
type and structure, the layer, the data's content (every file's name and the SHA-256 of
its bytes: a file rewritten with the same size and time is another key), the loading
options (channels, size, normalisation, pixel range, array, strict), the draw of the
references (their number and, when drawn, the seed), the fit's own settings (feature
dtype, device, batch size, store options) and the versions of repinterp, torch, numpy
and Pillow. A fit given a ``preprocess`` function or a ``store_dir`` is not cached.

The file holds the interpreter's state
(:meth:`~repinterp.core.interpreter.RepresentativeInterpreter.fit_state_`), the
references' names, item numbers and skipped files, and the SHA-256 of the decoded
references (what a summary records), after a header with the SHA-256 of the payload:
a file that is corrupt, foreign, of another format or of another key is a miss, never an
error. A hit decodes no reference beyond the first batch the restore checks (the fit is
computed again when they differ: a miss too); the report reads the members it shows.

Files are written atomically; the folder is bounded (:data:`MAX_BYTES`): after a write,
the least recently used fit files are deleted (:func:`repinterp.app.outputs.evict`:
only files named as this module names them; a hit marks its file used).
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from ..core.errors import UserError
from ..core.interpreter import RepresentativeInterpreter
from .index import IndexedImages
from .io import images_digest, model_digest
from .loading import ImageSet, ImageSource
from .outputs import evict, write_bytes
from .shards import file_sha256

__all__ = ["CachedImages", "CachedReferences", "FitCache", "MAX_BYTES", "default_folder"]

#: the fit files of a cache folder hold at most this many bytes together
MAX_BYTES = 2 << 30
#: the format of a fit file (another is a miss)
CACHE_FORMAT = 1
MAGIC = b"repinterp fit cache\n"
#: a fit file's name, as a glob (``fit-`` and 64 hex digits): eviction deletes only these
PATTERN = "fit-" + "[0-9a-f]" * 64 + ".pt"
#: interpreter parameters that do not change a fit's state (what a restore gives back)
NOT_IN_STATE = {"progress", "num_boundaries", "seed", "sampling", "delta", "min_purity",
                "heatmap_method", "heatmap_grid", "approximate", "reshape_transform",
                "class_names"}
#: the first references a hit keeps once read (the restore's check, the report's seed)
KEPT = 8


def default_folder() -> Path:
    """``$REPINTERP_FIT_CACHE`` (the fits alone: a test session points it at its own
    folder), else ``$REPINTERP_CACHE/fits``, else ``$XDG_CACHE_HOME/repinterp/fits``,
    else ``~/.cache/repinterp/fits`` (the user cache folder repinterp keeps its files
    in, with the demo's data and models)."""
    if os.environ.get("REPINTERP_FIT_CACHE"):
        return Path(os.environ["REPINTERP_FIT_CACHE"])
    if os.environ.get("REPINTERP_CACHE"):
        return Path(os.environ["REPINTERP_CACHE"]) / "fits"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "repinterp" / "fits"


class CachedImages(IndexedImages, Dataset):
    """The references of a cached fit, read from their source by item when asked for
    (``images[i]``, ``images[idx]``; a Dataset for ``fit``), the first few kept once
    read. ``shape`` is that of the tensor they would make."""

    def __init__(self, source: ImageSource, items: list[int], shape: tuple[int, ...]):
        super().__init__(source, items)
        self.shape = torch.Size(shape)
        self._kept: dict[int, torch.Tensor] = {}

    def __getitem__(self, idx: Any) -> torch.Tensor:
        if not (isinstance(idx, int) or (isinstance(idx, torch.Tensor) and idx.ndim == 0)):
            return torch.stack([self[int(i)] for i in idx])
        k = range(len(self.items))[int(idx)]
        if k in self._kept:
            return self._kept[k]
        i = self.items[k]
        images, read, _ = self.source.read(i, i + 1)
        if read != [i] or tuple(images.shape[1:]) != tuple(self.shape[1:]):
            raise UserError(f"item {i} of {self.source.root} changed while repinterp read "
                            "it; run the command again")
        if k < KEPT:
            self._kept[k] = images[0]
        return images[0]


@dataclass
class CachedReferences:
    """The references of a cached fit: what an :class:`~repinterp.app.loading.ImageSet`
    holds, the images read lazily, and the SHA-256 of the decoded images."""

    images: CachedImages
    names: list[str]
    skipped: list[str]
    items: list[int]
    digest: str


@dataclass
class Hit:
    """A fit file read back: the interpreter's state, the references, the classes."""

    state: dict
    references: CachedReferences
    classes: int


def _data_fingerprint(source: ImageSource) -> str:
    """SHA-256 of the source's files, in order: each one's name and the SHA-256 of its
    bytes (``-`` for a file that cannot be read: the loader skips it too)."""
    base = source.root if source.root.is_dir() else source.root.parent
    h = hashlib.sha256()
    for name, _, _ in source.listing():
        try:
            digest = file_sha256(base / name)
        except OSError:
            digest = "-"
        h.update(f"{name}\0{digest}\n".encode())
    return h.hexdigest()


def _plain(value: Any) -> Any:
    """A setting as JSON (a dtype or a device by its name); a function has no key."""
    if isinstance(value, (torch.dtype, torch.device)):
        return str(value)
    if callable(value):
        raise TypeError("a function")
    json.dumps(value)
    return value


def _checked(payload: dict, key: str, source: ImageSource) -> Hit | None:
    """The hit a fit file's payload holds (its images read from ``source``), when every
    field is what :meth:`FitCache.save` writes for ``key``; None otherwise."""
    state, names, items, skipped = (payload.get(k) for k in ("state", "names", "items",
                                                             "skipped"))
    shape, digest = payload.get("shape"), payload.get("images_sha256")
    if payload.get("format") != CACHE_FORMAT or payload.get("key") != key \
            or not isinstance(state, dict) or not isinstance(digest, str):
        return None
    logits = state.get("logits")
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names)
            and isinstance(items, list) and all(isinstance(i, int) for i in items)
            and isinstance(skipped, list) and all(isinstance(n, str) for n in skipped)
            and isinstance(shape, list) and len(shape) == 4
            and all(isinstance(s, int) for s in shape)
            and isinstance(logits, torch.Tensor) and logits.ndim == 2
            and len(names) == len(items) == shape[0] == len(logits) > 0):
        return None
    images = CachedImages(source, items, tuple(shape))
    return Hit(state, CachedReferences(images, names, skipped, items, digest),
               int(logits.shape[1]))


class FitCache:
    """The cache file of one fit: its folder and key (:meth:`open` computes them)."""

    def __init__(self, folder: Path, key: str, source: ImageSource):
        self.folder, self.key, self.source = folder, key, source

    @property
    def path(self) -> Path:
        return self.folder / f"fit-{self.key}.pt"

    @classmethod
    def open(cls, cache: str | os.PathLike | bool | None, model: nn.Module, layer: str,
             data: str | os.PathLike, options: dict, limit: int | None,
             interpreter: dict) -> FitCache | None:
        """The cache file of the fit of ``model`` at ``layer`` on the images of ``data``
        (``options``, ``limit`` and ``interpreter`` as
        :func:`~repinterp.app.pipeline.fit_references` takes them) in the folder
        ``cache`` (True: :func:`default_folder`); None when ``cache`` is None or False,
        or the fit cannot be cached (see the module)."""
        if cache is None or cache is False:
            return None
        if interpreter.get("preprocess") is not None or interpreter.get("store_dir"):
            return None
        folder = default_folder() if cache is True else Path(cache)
        source = ImageSource(str(data), **options)
        settings = {k: v for k, v in sorted(interpreter.items()) if k not in NOT_IN_STATE}
        param = next(model.parameters(), None)
        settings["device"] = settings.get("device") or (
            param.device if param is not None else "cpu")
        try:
            settings = {k: _plain(v) for k, v in settings.items()}
            opts = {k: _plain(list(v) if isinstance(v, tuple) else v)
                    for k, v in sorted(options.items())}
        except (TypeError, ValueError):
            return None
        import PIL

        from .. import __version__
        spec = {"format": CACHE_FORMAT, "repinterp": __version__,
                "torch": torch.__version__, "numpy": np.__version__,
                "pillow": PIL.__version__, "model": model_digest(model),
                "model_type": f"{type(model).__module__}.{type(model).__qualname__}",
                "model_structure": hashlib.sha256(str(model).encode()).hexdigest(),
                "layer": layer, "data": _data_fingerprint(source), "options": opts,
                "references": limit, "draw_seed": None if limit is None
                else int(interpreter.get("seed", 0)), "interpreter": settings}
        key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
        return cls(folder, key, source)

    def load(self) -> Hit | None:
        """The fit saved under this key, or None (no file, or one that is not a
        complete fit file of this key: a miss). A hit marks the file used."""
        try:
            blob = self.path.read_bytes()
        except OSError:
            return None
        head = len(MAGIC) + 65
        if not blob.startswith(MAGIC) or len(blob) <= head:
            return None
        if hashlib.sha256(blob[head:]).hexdigest().encode() != blob[len(MAGIC):head - 1]:
            return None
        try:
            payload = torch.load(io.BytesIO(blob[head:]), weights_only=True)
        except Exception:  # noqa: BLE001 - anything unreadable is a miss
            return None
        hit = _checked(payload, self.key, self.source) if isinstance(payload, dict) else None
        if hit is None:
            return None
        if hit.references.skipped:
            warnings.warn(f"skipped {len(hit.references.skipped)} unreadable file(s) in "
                          f"{self.source.root}, e.g. {hit.references.skipped[0]!r}",
                          stacklevel=3)
        with contextlib.suppress(OSError):
            os.utime(self.path)
        return hit

    def save(self, interp: RepresentativeInterpreter,
             references: ImageSet | CachedReferences) -> str:
        """Save the fit (``interp`` on ``references``) under this key, then evict the
        least recently used files beyond :data:`MAX_BYTES`; returns the SHA-256 of the
        decoded references. A fit that cannot be written (a full disk, a read-only
        folder) is not saved, with a warning."""
        refs = references
        digest = refs.digest if isinstance(refs, CachedReferences) else \
            images_digest(refs.images)
        payload = {"format": CACHE_FORMAT, "key": self.key, "state": interp.fit_state_(),
                   "names": list(refs.names), "skipped": list(refs.skipped),
                   "items": [int(i) for i in refs.items],
                   "shape": [int(s) for s in refs.images.shape], "images_sha256": digest}
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        body = buffer.getvalue()
        blob = MAGIC + hashlib.sha256(body).hexdigest().encode() + b"\n" + body
        if len(blob) > MAX_BYTES:
            return digest
        try:
            write_bytes(self.path, blob)
            evict(self.folder, PATTERN, MAX_BYTES)
        except (OSError, UserError) as exc:
            warnings.warn(f"the fit was not cached in {self.folder} ({exc}); --no-cache "
                          "turns the cache off", stacklevel=3)
        return digest
