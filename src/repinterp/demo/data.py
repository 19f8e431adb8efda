"""Fashion-MNIST (and any MNIST-style IDX files) as normalised tensors."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..app.formats import read_idx
from ..core.errors import UserError

__all__ = ["FASHION_CLASSES", "FASHION_MEAN", "FASHION_STD", "DEFAULT_DATA_DIRS", "cache_dir",
           "find_fashion_mnist", "load_fashion_mnist"]

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                   "Shirt", "Sneaker", "Bag", "Ankle boot"]
FASHION_MEAN = 0.2860
FASHION_STD = 0.3530
DEFAULT_DATA_DIRS = [Path("/usr/share/datasets/fashion-mnist")]
_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def _find_file(root: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"),
                 stem.replace("-idx", ".idx") + ".gz"):
        for cand in (root / name, root / "raw" / name, root / "FashionMNIST" / "raw" / name):
            if cand.exists():
                return cand
    return None


def find_fashion_mnist(root: str | os.PathLike | None = None) -> Path | None:
    """The first directory holding the Fashion-MNIST IDX files, or None. A directory the
    user names is the only one searched."""
    if root:
        dirs = [Path(root)]
    else:
        env = os.environ.get("REPINTERP_DATA")
        dirs = ([Path(env)] if env else []) + DEFAULT_DATA_DIRS + [cache_dir() / "fashion-mnist"]
    for d in dirs:
        if all(_find_file(d, f) for pair in _FILES.values() for f in pair):
            return d
    return None


def cache_dir() -> Path:
    """``$REPINTERP_CACHE``, else ``$XDG_CACHE_HOME/repinterp``, else ``~/.cache/repinterp``."""
    if os.environ.get("REPINTERP_CACHE"):
        return Path(os.environ["REPINTERP_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "repinterp"


def _download(dest: Path) -> Path:
    try:
        from torchvision.datasets import FashionMNIST
        FashionMNIST(str(dest), train=True, download=True)
        FashionMNIST(str(dest), train=False, download=True)
    except Exception as exc:  # any network or IO failure
        raise UserError(
            "Fashion-MNIST not found and could not be downloaded "
            f"({type(exc).__name__}). Install Debian's package `dataset-fashion-mnist` "
            "(files in /usr/share/datasets/fashion-mnist) or pass --data DIR with the "
            "IDX files") from exc
    return dest


def load_fashion_mnist(split: str = "train", root: str | os.PathLike | None = None, *,
                       normalize: bool = True, download: bool = True
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``[N, 1, 28, 28]`` (float32, normalised with the dataset mean and std
    unless ``normalize=False``, then in ``[0, 1]``) and labels ``[N]``.

    Looks in ``root``, ``$REPINTERP_DATA``, ``/usr/share/datasets/fashion-mnist`` and the
    cache; downloads with torchvision as a last resort when ``download`` is true.
    """
    if split not in _FILES:
        raise UserError(f"split must be 'train' or 'test', got {split!r}")
    if root is not None and not Path(root).exists():
        raise UserError(f"data directory {root} does not exist")
    where = find_fashion_mnist(root)
    if where is None:
        if root is not None or not download:
            raise UserError(
                f"no Fashion-MNIST IDX files in {root or 'the default places'}; install "
                "Debian's `dataset-fashion-mnist` or pass --data DIR with the IDX files")
        where = _download(cache_dir() / "fashion-mnist")
        where = find_fashion_mnist(where) or where
    img_file, lab_file = (_find_file(where, f) for f in _FILES[split])
    if img_file is None or lab_file is None:
        raise UserError(f"{where} lacks {' or '.join(_FILES[split])}")
    images = torch.from_numpy(read_idx(img_file).astype(np.float32) / 255.0).unsqueeze(1)
    labels = torch.from_numpy(read_idx(lab_file).astype(np.int64))
    if normalize:
        images = (images - FASHION_MEAN) / FASHION_STD
    return images, labels
