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


#: a test that takes longer than this (seconds, its own call) should carry ``slow``
SLOW_S = 10.0
_unmarked: list[tuple[float, str]] = []


def pytest_runtest_logreport(report) -> None:
    """Record each test that ran over :data:`SLOW_S` without the ``slow`` mark."""
    if report.when == "call" and report.duration > SLOW_S and "slow" not in report.keywords:
        _unmarked.append((report.duration, report.nodeid))


def pytest_terminal_summary(terminalreporter) -> None:
    """Name the tests over :data:`SLOW_S` without the ``slow`` mark (``make quick`` runs
    them): a list to act on, not a failure (timings depend on the machine's load)."""
    if _unmarked:
        terminalreporter.section(f"tests over {SLOW_S:.0f} s without the slow mark")
        for duration, nodeid in sorted(_unmarked, reverse=True):
            terminalreporter.write_line(f"{duration:6.1f} s  {nodeid}")


@pytest.fixture(autouse=True)
def _own_fit_cache(tmp_path_factory, monkeypatch):
    """No test writes into the user's fit cache, and no test hits a fit another test
    saved (the cache is keyed by content alone)."""
    monkeypatch.setenv("REPINTERP_FIT_CACHE", str(tmp_path_factory.mktemp("fits")))
