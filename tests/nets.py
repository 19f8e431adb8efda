"""Small seeded piecewise-linear networks with known structure, for exact tests (imported
by the tests as ``nets``; ``conftest.py`` turns them into fixtures)."""
from __future__ import annotations

import torch
from torch import nn


def tiny_cnn(seed: int = 0, dtype: torch.dtype = torch.float64, classes: int = 3) -> nn.Module:
    """A conv -> ReLU -> pool -> MLP network on 1x8x8 inputs, fitted briefly to a random
    linear labelling so that it predicts every class."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, classes),
    ).to(dtype)
    x = tiny_images(seed, 256, dtype)
    y = (x.flatten(1) @ torch.randn(64, classes, dtype=dtype)).argmax(1)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.zero_grad(set_to_none=True)
    return model


def tiny_images(seed: int = 0, n: int = 300, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed + 100),
                       dtype=dtype)
