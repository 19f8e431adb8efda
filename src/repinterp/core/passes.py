"""Images in batches through the network: how many at a time, how they are read from a
tensor or a Dataset, and what a pass keeps of each image (its class and margin)."""
from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from .errors import UserError

__all__ = ["auto_batch_size", "batches", "check_floating", "decisions", "warn_if_normalised"]


def auto_batch_size(images: Any, device: torch.device) -> int:
    """Images per batch when none is given: 256, fewer for large images so that a batch
    holds at most ``2**20`` input numbers on the CPU (6 images at 3x224x224, where the
    activations of a ResNet-50 are about 13 MB per image; smaller batches were also
    faster there) or ``2**24`` on an accelerator (111 at 224)."""
    first = images[0] if len(images) else None
    if isinstance(first, (tuple, list)):
        first = first[0]
    numel = first.numel() if isinstance(first, torch.Tensor) else 1
    budget = 2 ** 20 if device.type == "cpu" else 2 ** 24
    return max(1, min(256, budget // max(numel, 1)))


def batches(images: Any, batch_size: int) -> Iterator[torch.Tensor]:
    """Image batches from a Tensor ``[N, C, H, W]`` or a Dataset (labels ignored)."""
    if isinstance(images, torch.Tensor):
        if images.ndim != 4:
            raise UserError(f"images must be a [N, C, H, W] tensor, got shape "
                            f"{tuple(images.shape)}")
        check_floating(images)
        for i in range(0, len(images), batch_size):
            yield images[i:i + batch_size]
        return
    if isinstance(images, Dataset):
        def collate(items: list) -> torch.Tensor:
            return torch.stack([it[0] if isinstance(it, (tuple, list)) else it
                                for it in items])
        for batch in DataLoader(images, batch_size=batch_size, collate_fn=collate):
            yield check_floating(batch)
        return
    raise UserError("images must be a torch.Tensor [N, C, H, W] or a torch Dataset")


def decisions(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``Class(x)`` and the top-2 logit margin of logits ``[n, K]``, on the CPU: what
    both a fit and an index pass keep of every image."""
    top2 = logits.topk(2, 1).values
    return logits.argmax(1).cpu(), (top2[:, 0] - top2[:, 1]).cpu()


def check_floating(images: torch.Tensor) -> torch.Tensor:
    """``images``, refused unless floating point: the model's own convolutions refuse
    ``uint8`` too, and bytes fed unscaled would explain another input."""
    if not images.is_floating_point():
        raise UserError(f"images are {images.dtype}, not floating point; convert them as "
                        "the model was trained, e.g. images.float() / 255 and then its "
                        "normalisation")
    return images


def warn_if_normalised(first: torch.Tensor) -> None:
    """Warn when images meant to be given as they look (with ``preprocess=``) are
    outside ``[0, 1]``: normalised already, they would be normalised twice."""
    low, high = float(first.min()), float(first.max())
    if low < -0.01 or high > 1.01:
        warnings.warn(f"preprocess= is given but the references are already outside [0, 1] "
                      f"({low:.2f} .. {high:.2f}): normalised twice? With preprocess=, pass "
                      "images as they look (load_images(..., normalize='none'))",
                      stacklevel=4)
