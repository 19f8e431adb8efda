"""Fixtures: the small seeded networks of ``nets.py``. The benchmark code (the paper's
protocol with its CAM baselines, the shortcut benchmark's scoring...) is tested as the
``benchmarks`` package (``from benchmarks.protocol import ...``), found from the
repository root (``pythonpath`` in pyproject.toml's pytest options)."""
from __future__ import annotations

import pytest
import torch
from nets import tiny_cnn, tiny_images
from torch import nn


@pytest.fixture(scope="session")
def net() -> nn.Module:
    return tiny_cnn(0)


@pytest.fixture(scope="session")
def images() -> torch.Tensor:
    return tiny_images(0)
