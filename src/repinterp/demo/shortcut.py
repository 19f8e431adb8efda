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
from typing import NamedTuple

import torch
from torch import nn

from ..app.outputs import atomic_path, write_json
from ..core.errors import UserError
from .data import FASHION_MEAN, FASHION_STD, cache_dir, load_fashion_mnist
from .models import ARCHS, evaluate_accuracy, train_classifier

__all__ = ["SETTINGS", "MarkSetting", "ShortcutSplit", "load_shortcut_model", "mark_mask",
           "mark_masks", "paste_mark", "shortcut_split"]

SHAPES = ("square", "cross", "ring", "stripes")
POSITIONS = ("fixed", "random")

#: pixels darker than this (raw intensity in [0, 1]) are background, where ``stripes``
#: are drawn
BACKGROUND = 0.05


@dataclass(frozen=True)
class MarkSetting:
    """One planted shortcut, pasted at full brightness (``stripes``: at half) on
    ``p_class`` of the training images of class ``cls`` and ``p_other`` of the others;
    reference and test images carry it with probability ``p_eval``, whatever their class.

    ``shape``: a ``size`` x ``size`` ``square``, ``cross`` or hollow ``ring`` with its
    top-left corner at ``(row, col)`` (28x28 images), or, with ``position="random"``, at
    a position drawn per image; or ``stripes``: a background texture (every other pair
    of rows, on the background pixels only). ``label_noise``: the share of the class's
    training images whose label is replaced by another class drawn at random."""

    name: str
    cls: int
    shape: str = "square"
    size: int = 4
    row: int = 1
    col: int = 1
    p_class: float = 0.9
    p_other: float = 0.02
    p_eval: float = 0.3
    position: str = "fixed"
    label_noise: float = 0.0

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise UserError(f"mark shape must be one of {SHAPES}, got {self.shape!r}")
        if self.position not in POSITIONS:
            raise UserError(f"mark position must be one of {POSITIONS}, "
                            f"got {self.position!r}")
        if not (0 <= self.row <= 28 - self.size and 0 <= self.col <= 28 - self.size):
            raise UserError(f"a {self.size}px mark at ({self.row}, {self.col}) leaves the "
                            "28x28 image")


#: The benchmark's settings: mark position, size, shape and class all vary; the last
#: three are the harder ones (a background texture, a mark anywhere, and
#: 10% label noise in the class).
SETTINGS = (
    MarkSetting("square-topleft-tshirt", cls=0, shape="square", size=4, row=1, col=1),
    MarkSetting("square-bottomright-bag", cls=8, shape="square", size=3, row=24, col=24),
    MarkSetting("cross-topright-sandal", cls=5, shape="cross", size=5, row=1, col=22),
    MarkSetting("ring-bottomleft-dress", cls=3, shape="ring", size=6, row=21, col=1),
    MarkSetting("stripes-background-coat", cls=4, shape="stripes"),
    MarkSetting("square-anywhere-sneaker", cls=7, shape="square", size=4,
                position="random"),
    MarkSetting("square-topleft-pullover-noisy", cls=2, shape="square", size=4, row=1,
                col=1, label_noise=0.1),
)


def _shape(setting: MarkSetting) -> torch.Tensor:
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
    return m


def mark_mask(setting: MarkSetting, size: tuple[int, int] = (28, 28)) -> torch.Tensor:
    """Bool ``[H, W]``: the mark's pixels at its fixed position (for ``stripes``: the
    texture's rows over the whole image; :func:`mark_masks` keeps the background)."""
    out = torch.zeros(size, dtype=torch.bool)
    if setting.shape == "stripes":
        out[torch.arange(size[0]) % 4 < 2] = True
        return out
    s = setting.size
    out[setting.row:setting.row + s, setting.col:setting.col + s] = _shape(setting)
    return out


def mark_masks(setting: MarkSetting, images: torch.Tensor, which: torch.Tensor,
               gen: torch.Generator | None = None, normalized: bool = True
               ) -> torch.Tensor:
    """Bool ``[n, H, W]``: the pixels the mark takes on each of ``images`` ``[n, 1, H,
    W]`` (none where ``which`` is False). ``position="random"`` draws each top-left
    corner uniformly from ``gen``; ``stripes`` keep the background pixels only."""
    n, _, h, w = images.shape
    out = torch.zeros(n, h, w, dtype=torch.bool)
    if setting.shape == "stripes":
        raw = images[:, 0] * FASHION_STD + FASHION_MEAN if normalized else images[:, 0]
        out[:] = mark_mask(setting, (h, w)) & (raw < BACKGROUND)
    elif setting.position == "random":
        s = setting.size
        rows = torch.randint(0, h - s + 1, (n,), generator=gen)
        cols = torch.randint(0, w - s + 1, (n,), generator=gen)
        shape = _shape(setting)
        for i in range(n):                           # n small masks: cheap
            out[i, rows[i]:rows[i] + s, cols[i]:cols[i] + s] = shape
    else:
        out[:] = mark_mask(setting, (h, w))
    out[~which] = False
    return out


def paste_mark(images: torch.Tensor, setting: MarkSetting, which: torch.Tensor,
               normalized: bool = True, gen: torch.Generator | None = None
               ) -> torch.Tensor:
    """A copy of ``images`` ``[N, 1, H, W]`` with the mark on the images where ``which``
    is True (at full brightness; ``stripes`` at half)."""
    return _paste(images, setting, mark_masks(setting, images, which, gen, normalized),
                  normalized)


def _paste(images: torch.Tensor, setting: MarkSetting, masks: torch.Tensor,
           normalized: bool) -> torch.Tensor:
    level = 0.5 if setting.shape == "stripes" else 1.0
    value = (level - FASHION_MEAN) / FASHION_STD if normalized else level
    return torch.where(masks[:, None], torch.as_tensor(value, dtype=images.dtype), images)


class ShortcutSplit(NamedTuple):
    """A split with the mark pasted: ``images`` (normalised), ``labels`` (with the
    setting's label noise on a training split), ``marked`` (bool ``[N]``) and ``masks``
    (bool ``[N, H, W]``, the mark's pixels on each image)."""

    images: torch.Tensor
    labels: torch.Tensor
    marked: torch.Tensor
    masks: torch.Tensor


def shortcut_split(setting: MarkSetting, split: str, *, seed: int = 0,
                   data_root: str | None = None, train_marks: bool = False
                   ) -> ShortcutSplit:
    """A Fashion-MNIST split with the mark pasted: with ``train_marks``, as for training
    (``p_class`` of the class, ``p_other`` of the rest, and ``label_noise`` of the
    class's labels replaced), else at random with ``p_eval`` (labels untouched). Seeded
    by ``seed`` and the split."""
    images, labels = load_fashion_mnist(split, data_root)
    gen = torch.Generator().manual_seed(seed * 1009 + (0 if split == "train" else 1)
                                        + (2 if train_marks else 0))
    if train_marks:
        p = torch.where(labels == setting.cls, setting.p_class, setting.p_other)
    else:
        p = torch.full((len(labels),), setting.p_eval)
    marked = _draw(len(labels), p, gen)
    masks = mark_masks(setting, images, marked, gen)
    if train_marks and setting.label_noise > 0:
        noisy = (labels == setting.cls) & _draw(len(labels), torch.tensor(
            setting.label_noise), gen)
        other = torch.randint(1, 10, (len(labels),), generator=gen)
        labels = torch.where(noisy, (setting.cls + other) % 10, labels)
    return ShortcutSplit(_paste(images, setting, masks, True), labels, marked, masks)


def _draw(n: int, p: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=gen) < p


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
        x, y, _, _ = shortcut_split(setting, "train", seed=seed, data_root=data_root,
                                    train_marks=True)
        start = time.perf_counter()
        train_classifier(model, x, y, epochs=epochs, seed=seed, progress=progress)
    xt, yt = load_fashion_mnist("test", data_root)
    all_marked = paste_mark(xt, setting, torch.ones(len(xt), dtype=torch.bool),
                            gen=torch.Generator().manual_seed(seed))
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
