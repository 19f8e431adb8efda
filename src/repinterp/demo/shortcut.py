"""A planted shortcut on Fashion-MNIST (after dcbench's correlation slices, Eyuboglu et
al., "Domino", ICLR 2022): a small synthetic mark pasted on most training images of one
class and on a few of the others, so that the model learns "mark => class".

Reference and test images then carry the mark at random, whatever their class; the
*slice* is the images predicted as the class that carry the mark: the images the model
may put there for the wrong reason. :func:`load_shortcut_model` trains (seeded) and
caches one demo model per setting.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..app.io import atomic_path, write_json
from ..core.errors import UserError
from .data import FASHION_MEAN, FASHION_STD, cache_dir, load_fashion_mnist
from .models import ARCHS, evaluate_accuracy, train_classifier

__all__ = ["SETTINGS", "MarkSetting", "load_shortcut_model", "mark_mask", "paste_mark",
           "shortcut_split"]

SHAPES = ("square", "cross", "ring")


@dataclass(frozen=True)
class MarkSetting:
    """One planted shortcut: a ``shape`` of ``size`` x ``size`` pixels at ``(row, col)``
    (top-left corner, 28x28 images), pasted at full brightness on ``p_class`` of the
    training images of class ``cls`` and ``p_other`` of the others; reference and test
    images carry it with probability ``p_eval``, whatever their class."""

    name: str
    cls: int
    shape: str = "square"
    size: int = 4
    row: int = 1
    col: int = 1
    p_class: float = 0.9
    p_other: float = 0.02
    p_eval: float = 0.3

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise UserError(f"mark shape must be one of {SHAPES}, got {self.shape!r}")
        if not (0 <= self.row <= 28 - self.size and 0 <= self.col <= 28 - self.size):
            raise UserError(f"a {self.size}px mark at ({self.row}, {self.col}) leaves the "
                            "28x28 image")


#: The benchmark's settings: mark position, size, shape and class all vary.
SETTINGS = (
    MarkSetting("square-topleft-tshirt", cls=0, shape="square", size=4, row=1, col=1),
    MarkSetting("square-bottomright-bag", cls=8, shape="square", size=3, row=24, col=24),
    MarkSetting("cross-topright-sandal", cls=5, shape="cross", size=5, row=1, col=22),
    MarkSetting("ring-bottomleft-dress", cls=3, shape="ring", size=6, row=21, col=1),
)


def mark_mask(setting: MarkSetting, size: tuple[int, int] = (28, 28)) -> torch.Tensor:
    """Bool ``[H, W]``: the mark's pixels."""
    s = setting.size
    m = torch.zeros(s, s, dtype=torch.bool)
    if setting.shape == "square":
        m[:] = True
    elif setting.shape == "cross":
        m[s // 2, :] = True
        m[:, s // 2] = True
    else:                                                    # ring: a hollow square
        m[[0, -1], :] = True
        m[:, [0, -1]] = True
    out = torch.zeros(size, dtype=torch.bool)
    out[setting.row:setting.row + s, setting.col:setting.col + s] = m
    return out


def paste_mark(images: torch.Tensor, setting: MarkSetting, which: torch.Tensor,
               normalized: bool = True) -> torch.Tensor:
    """A copy of ``images`` ``[N, 1, H, W]`` with the mark (full brightness) on the
    images where ``which`` is True."""
    out = images.clone()
    bright = (1.0 - FASHION_MEAN) / FASHION_STD if normalized else 1.0
    mask = mark_mask(setting, tuple(images.shape[-2:]))
    sel = out[which]
    sel[:, :, mask] = bright
    out[which] = sel
    return out


def _draw(n: int, p: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=gen) < p


def shortcut_split(setting: MarkSetting, split: str, *, seed: int = 0,
                   data_root: str | None = None, train_marks: bool = False
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images (normalised), labels and the bool ``marked`` of a Fashion-MNIST split with
    the mark pasted: with ``train_marks``, as for training (``p_class`` of the class,
    ``p_other`` of the rest), else at random with ``p_eval``. Seeded by ``seed`` and the
    split."""
    images, labels = load_fashion_mnist(split, data_root)
    gen = torch.Generator().manual_seed(seed * 1009 + (0 if split == "train" else 1)
                                        + (2 if train_marks else 0))
    if train_marks:
        p = torch.where(labels == setting.cls, setting.p_class, setting.p_other)
    else:
        p = torch.full((len(labels),), setting.p_eval)
    marked = _draw(len(labels), p, gen)
    return paste_mark(images, setting, marked), labels, marked


def load_shortcut_model(setting: MarkSetting, *, arch: str = "vgg", epochs: int = 2,
                        seed: int = 0, data_root: str | None = None,
                        progress: bool = True) -> tuple[nn.Module, dict]:
    """A demo model trained on the marked training split (seeded; cached under
    ``cache_dir()/models``). Returns the model (eval mode) and its metadata, with its
    accuracy on clean and on marked test images and how often a marked test image of
    another class is predicted as the setting's class."""
    if arch not in ARCHS:
        raise UserError(f"unknown demo architecture {arch!r}; choose from {sorted(ARCHS)}")
    key = f"shortcut-{setting.name}-{arch}-e{epochs}-s{seed}"
    weights = cache_dir() / "models" / f"{key}.pt"
    meta_file = weights.with_suffix(".json")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = ARCHS[arch]()
        if weights.exists() and meta_file.exists():
            meta = json.loads(meta_file.read_text())
            if meta.get("setting") == asdict(setting):
                model.load_state_dict(torch.load(weights, map_location="cpu",
                                                 weights_only=True))
                return model.eval(), meta
        x, y, _ = shortcut_split(setting, "train", seed=seed, data_root=data_root,
                                 train_marks=True)
        start = time.perf_counter()
        train_classifier(model, x, y, epochs=epochs, seed=seed, progress=progress)
    xt, yt = load_fashion_mnist("test", data_root)
    all_marked = paste_mark(xt, setting, torch.ones(len(xt), dtype=torch.bool))
    with torch.no_grad():
        pred = torch.cat([model(all_marked[i:i + 1000]).argmax(1)
                          for i in range(0, len(xt), 1000)])
    others = yt != setting.cls
    meta = {"setting": asdict(setting), "arch": arch, "epochs": epochs, "seed": seed,
            "train_seconds": round(time.perf_counter() - start, 1),
            "clean_test_accuracy": evaluate_accuracy(model, xt, yt),
            "marked_test_accuracy": evaluate_accuracy(model, all_marked, yt),
            "marked_others_to_class": float((pred[others] == setting.cls).float().mean()),
            "torch": torch.__version__}
    with atomic_path(weights) as tmp:
        torch.save(model.state_dict(), tmp)
    write_json(meta_file, meta)
    return model.eval(), meta
