"""A real-size benchmark built offline: Fashion-MNIST objects pasted on crops
of real photographs, with a planted shortcut whose pixels are known, and torchvision
models trained on it from scratch and cached.

Backgrounds: the colour and gray photographs bundled with scikit-image (astronaut,
coffee, chelsea, rocket, immunohistochemistry, hubble_deep_field, retina, brick, grass,
gravel, camera, moon, coins) and scikit-learn (china, flower); each image takes a random
crop (a quarter to all of the photo's shorter side), a random horizontal flip and a
colour jitter (brightness, contrast, saturation, each by up to 30%). The object: a
Fashion-MNIST item of one of :data:`CLASSES`, scaled to 45-70% of the image, tinted with
a random colour and alpha-blended (its intensity is its opacity) at a random position.
The shortcut: a ``MARK`` x ``MARK`` px magenta square near the top-left corner on
``P_CLASS`` of class 0's training images and ``P_OTHER`` of the others; evaluation
images carry it with probability ``P_EVAL`` whatever their class.
"""
from __future__ import annotations

import json
import time
from functools import lru_cache

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..app.outputs import atomic_path, write_json
from ..core.errors import UserError
from .data import cache_dir, load_fashion_mnist
from .models import evaluate_accuracy, train_classifier

__all__ = ["CLASSES", "CLASS_NAMES", "IMAGENET_MEAN", "IMAGENET_STD", "PhotoSet",
           "load_photo_model", "photo_set"]

#: Fashion-MNIST classes used: trouser, bag, ankle boot
CLASSES = (1, 8, 9)
CLASS_NAMES = ("trouser", "bag", "ankle boot")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MARK, MARK_AT = 20, 10                 # side and top-left offset of the mark, in pixels
P_CLASS, P_OTHER, P_EVAL = 0.8, 0.05, 0.3


@lru_cache(maxsize=1)
def _photos() -> tuple[np.ndarray, ...]:
    """The bundled photographs as float32 RGB ``[H, W, 3]`` in [0, 1]."""
    try:
        import skimage.data as sk
        from sklearn.datasets import load_sample_images
    except ImportError as e:
        raise UserError("the real-size benchmark needs scikit-image and scikit-learn "
                        "(pip install -e '.[dev]')") from e
    names = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry",
             "hubble_deep_field", "retina", "brick", "grass", "gravel", "camera", "moon",
             "coins")
    out = [getattr(sk, n)() for n in names] + list(load_sample_images().images)
    rgb = [np.repeat(a[..., None], 3, 2) if a.ndim == 2 else a[..., :3] for a in out]
    small = []
    for a in rgb:                        # shorter side at most 448 px: crops stay cheap
        t = torch.from_numpy(a.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
        scale = min(1.0, 448 / min(t.shape[-2:]))
        if scale < 1:
            t = F.interpolate(t, scale_factor=scale, mode="bilinear", antialias=True)
        small.append(t[0].permute(1, 2, 0).numpy())
    return tuple(small)


def _background(rng: np.random.Generator, size: int) -> torch.Tensor:
    photos = _photos()
    a = photos[rng.integers(len(photos))]
    h, w = a.shape[:2]
    side = int(rng.uniform(0.25, 1.0) * min(h, w))
    r, c = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    crop = torch.from_numpy(np.ascontiguousarray(a[r:r + side, c:c + side])).permute(2, 0, 1)
    img = F.interpolate(crop[None], size=(size, size), mode="bilinear",
                        align_corners=False, antialias=True)[0]
    if rng.random() < 0.5:
        img = img.flip(2)
    b, k, s = rng.uniform(0.7, 1.3, 3)
    gray = img.mean(0, keepdim=True)
    img = gray + (img - gray) * s                                 # saturation
    img = img.mean() + (img - img.mean()) * k                     # contrast
    return (img * b).clamp(0, 1)                                  # brightness


class PhotoSet(torch.utils.data.Dataset):
    """Images (ImageNet-normalised ``[3, size, size]``, built on access), labels 0..2,
    ``marked`` and the mark's pixels; seeded, so an index always gives the same image."""

    def __init__(self, split: str, n: int, *, size: int = 224, seed: int = 0,
                 train_marks: bool = False) -> None:
        items, labels = load_fashion_mnist(split)
        keep = torch.isin(labels, torch.tensor(CLASSES)).nonzero()[:, 0]
        rng = np.random.default_rng(seed * 7919 + (0 if split == "train" else 1)
                                    + (2 if train_marks else 0))
        pick = keep[torch.from_numpy(rng.permutation(len(keep))[:n])]
        if len(pick) < n:
            raise UserError(f"only {len(pick)} {split} images of classes {CLASSES}")
        self.items = items[pick, 0] * 0.3530 + 0.2860            # raw intensity [0, 1]
        self.labels = torch.tensor([CLASSES.index(int(v)) for v in labels[pick]])
        p = np.where(self.labels.numpy() == 0, P_CLASS, P_OTHER) if train_marks \
            else np.full(n, P_EVAL)
        self.marked = torch.from_numpy(rng.random(n) < p)
        self.size, self.seeds = size, rng.integers(0, 2 ** 62, n)
        self.mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def mask(self) -> torch.Tensor:
        """Bool ``[size, size]``: the mark's pixels."""
        m = torch.zeros(self.size, self.size, dtype=torch.bool)
        m[MARK_AT:MARK_AT + MARK, MARK_AT:MARK_AT + MARK] = True
        return m

    def raw(self, i: int) -> torch.Tensor:
        """Image ``i`` in [0, 1], ``[3, size, size]``."""
        rng = np.random.default_rng(int(self.seeds[i]))
        s = self.size
        img = _background(rng, s)
        side = int(rng.uniform(0.45, 0.7) * s)
        obj = F.interpolate(self.items[i][None, None], size=(side, side), mode="bilinear",
                            align_corners=False)[0, 0].clamp(0, 1)
        r, c = rng.integers(0, s - side + 1, 2)
        tint = torch.from_numpy(rng.uniform(0.3, 1.0, 3).astype(np.float32)).view(3, 1, 1)
        alpha = (obj * 1.5).clamp(0, 1)
        patch = img[:, r:r + side, c:c + side]
        img[:, r:r + side, c:c + side] = patch * (1 - alpha) + tint * obj * alpha
        if bool(self.marked[i]):
            img[:, self.mask()] = torch.tensor([1.0, 0.0, 1.0]).view(3, 1)
        return img

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return (self.raw(i) - self.mean) / self.std, int(self.labels[i])

    def tensors(self, idx: torch.Tensor | None = None) -> torch.Tensor:
        """The normalised images ``[n, 3, size, size]`` (all, or ``idx``)."""
        idx = torch.arange(len(self)) if idx is None else idx
        return torch.stack([self[int(i)][0] for i in idx])


def photo_set(split: str, n: int, **kwargs) -> PhotoSet:
    """:class:`PhotoSet` of ``n`` images of ``split`` ("train" or "test")."""
    return PhotoSet(split, n, **kwargs)


def load_photo_model(arch: str = "resnet18", *, size: int = 160, n_train: int = 2400,
                     epochs: int = 4, seed: int = 0, progress: bool = True
                     ) -> tuple[nn.Module, dict]:
    """A torchvision ``arch`` (``resnet18`` or ``vgg11_bn``; 3 classes, random
    initialisation) trained on ``n_train`` marked training images of ``size`` px
    (seeded), cached under ``cache_dir()/models``. Returns the model (eval mode) and its
    metadata: clean and marked test accuracy and how often a marked image of another
    class is predicted as class 0."""
    import torchvision

    if arch not in ("resnet18", "vgg11_bn"):
        raise UserError(f"unknown photo architecture {arch!r}; choose resnet18 or vgg11_bn")
    key = f"photos-{arch}-{size}px-n{n_train}-e{epochs}-s{seed}"
    weights = cache_dir() / "models" / f"{key}.pt"
    meta_file = weights.with_suffix(".json")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = getattr(torchvision.models, arch)(num_classes=3)
        if weights.exists() and meta_file.exists():
            model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
            return model.eval(), json.loads(meta_file.read_text())
        train = photo_set("train", n_train, size=size, seed=seed, train_marks=True)
        x, y = train.tensors(), train.labels
        start = time.perf_counter()
        train_classifier(model, x, y, epochs=epochs, lr=1e-3, batch_size=32, seed=seed,
                         progress=progress)
    test = photo_set("test", 600, size=size, seed=seed)
    xt, yt = test.tensors(), test.labels
    marked_all = xt.clone()
    marked_all[:, :, test.mask()] = ((torch.tensor([1.0, 0.0, 1.0]) - test.mean[:, 0, 0])
                                     / test.std[:, 0, 0]).view(1, 3, 1)
    with torch.no_grad():
        pred = torch.cat([model(marked_all[i:i + 50]).argmax(1) for i in range(0, 600, 50)])
    meta = {"arch": arch, "size": size, "n_train": n_train, "epochs": epochs, "seed": seed,
            "train_seconds": round(time.perf_counter() - start, 1),
            "clean_test_accuracy": evaluate_accuracy(model, xt[~test.marked],
                                                     yt[~test.marked], 50),
            "test_accuracy": evaluate_accuracy(model, xt, yt, 50),
            "marked_others_to_class0": float((pred[yt != 0] == 0).float().mean()),
            "torch": torch.__version__}
    with atomic_path(weights) as tmp:
        torch.save(model.state_dict(), tmp)
    write_json(meta_file, meta)
    return model.eval(), meta
