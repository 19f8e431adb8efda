"""Fixtures: the small seeded networks of ``nets.py``, and the benchmarks on the path."""
from __future__ import annotations

import sys
from pathlib import Path

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


# the benchmark code (the paper's protocol with its CAM baselines) is tested from here
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
