"""What the benchmarks share: their command lines, the demo's model and data, the files
they write, their child processes, and a count of head passes through the public API.

Every benchmark runs from the repository root as ``python -m benchmarks.NAME``; a
benchmark that runs another (or a script of its own) in a fresh process does so from
the root too (:func:`run_module`, :func:`run_script`), so that ``import benchmarks.X``
works there without any edit of the import path.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from repinterp.app.outputs import write_json, write_text

__all__ = ["ROOT", "add_out", "add_quiet", "add_seed", "browser", "count_head_passes",
           "demo_model",
           "draw", "emit", "fashion", "ints", "last_json", "names", "parser",
           "read_results", "reported_seeds", "run_module", "run_script", "save_json",
           "write_results"]

#: the repository root: where ``python -m benchmarks.NAME`` runs
ROOT = Path(__file__).resolve().parents[1]


# --- command lines ------------------------------------------------------------------------
def parser(doc: str | None = None) -> argparse.ArgumentParser:
    """An argument parser described by the first paragraph of ``doc`` (a benchmark's
    module docstring)."""
    return argparse.ArgumentParser(description=(doc or "").split("\n\n")[0].strip() or None)


def add_out(p: argparse.ArgumentParser, default: str | None = None,
            help: str | None = None) -> None:
    """``--out``: where the results go (a folder or a file, as the benchmark says)."""
    p.add_argument("--out", default=default, help=help)


def add_seed(p: argparse.ArgumentParser, default: int = 0) -> None:
    """``--seed``: the seed of every random draw."""
    p.add_argument("--seed", type=int, default=default)


def add_quiet(p: argparse.ArgumentParser) -> None:
    """``--quiet``: no progress bars."""
    p.add_argument("--quiet", action="store_true")


def ints(text: str) -> list[int]:
    """``"1000,5000"`` -> ``[1000, 5000]`` (sizes, seeds, |Q|, banks)."""
    return [int(v) for v in text.split(",")]


def names(text: str) -> list[str]:
    """``"vgg,resnet"`` -> ``["vgg", "resnet"]``."""
    return text.split(",")


# --- the demo's model and data ------------------------------------------------------------
def demo_model(arch: str = "vgg", *, data_root: str | None = None,
               progress: bool = False) -> tuple[nn.Module, dict]:
    """The cached demo model of ``arch`` (``vgg`` or ``resnet``) and its metadata."""
    from repinterp.demo.models import load_demo_model
    return load_demo_model(arch, data_root=data_root, progress=progress)


def fashion(data_root: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST's training and test images (normalised; labels left out)."""
    from repinterp.demo.data import load_fashion_mnist
    return load_fashion_mnist("train", data_root)[0], load_fashion_mnist("test", data_root)[0]


def draw(images: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` of ``images`` drawn by a seeded permutation (the references of most
    benchmarks: ``seed`` 0)."""
    return images[torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
                  [:n]]


def reported_seeds(references: int, dev: int, seeds: int, seed: int = 0
                   ) -> tuple[list[int], list[int]]:
    """The protocol's seeds (``evaluate.py``): reference indices of one permutation
    (seeded ``seed + 1``), the first ``dev`` for development, the next ``seeds``
    reported; the two never overlap."""
    order = torch.randperm(references, generator=torch.Generator().manual_seed(seed + 1))
    return order[:dev].tolist(), order[dev:dev + seeds].tolist()


# --- results ------------------------------------------------------------------------------
def emit(row: Any) -> None:
    """One JSON line on stdout, flushed (what a long run shows as it goes)."""
    print(json.dumps(row), flush=True)


def save_json(path: str | Path, obj: Any, *, newline: bool = True) -> None:
    """``obj`` as indented JSON in the file ``path`` (written atomically); ``newline``
    False leaves out the final newline, as the benchmarks that write one file have
    always written it."""
    if newline:
        write_json(path, obj)
    else:
        write_text(path, json.dumps(obj, indent=2))


def write_results(out: str | Path, json_name: str, results: Any,
                  md_name: str | None = None, markdown: str | None = None) -> None:
    """``results`` as ``out/json_name`` and, with ``md_name``, the ``markdown`` made of
    them as ``out/md_name``."""
    out = Path(out)
    write_json(out / json_name, results)
    if md_name is not None:
        write_text(out / md_name, markdown or "")


def read_results(path: str | Path, default: Any = None) -> Any:
    """The JSON in ``path`` (results of an earlier run, to resume or to keep), or
    ``default`` where there is no such file."""
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else default


# --- child processes ----------------------------------------------------------------------
def run_module(name: str, *args: str, **kw: Any) -> subprocess.CompletedProcess:
    """``python -m benchmarks.NAME ARGS`` in a fresh process from the repository root
    (``subprocess.run``'s keywords: ``capture_output``, ``check``...). Paths among
    ``args`` must be absolute."""
    return subprocess.run([sys.executable, "-m", f"benchmarks.{name}", *args], cwd=ROOT,
                          **kw)


def run_script(script: str, *args: str, **kw: Any) -> subprocess.CompletedProcess:
    """``python -c SCRIPT ARGS`` in a fresh process from the repository root, where the
    script imports ``benchmarks.X`` as it is."""
    return subprocess.run([sys.executable, "-c", script, *args], cwd=ROOT, **kw)


def last_json(stdout: str) -> Any:
    """The last line of a child's output, as JSON (what a benchmark prints last)."""
    return json.loads(stdout.strip().splitlines()[-1])


# --- head passes, counted from outside ----------------------------------------------------
@contextlib.contextmanager
def count_head_passes(model: nn.Module) -> Iterator[list[int]]:
    """The rows of each pass through the head of an interpreter fitted on ``model``,
    while the block runs: a global module forward hook counts the calls of every
    ``nn.Linear`` shaped as ``model``'s last one (its private copies included: the
    head's final layer runs once per head pass, on the pass's rows), removed on exit.

    The same count as a hook on the head inside the interpreter, checked on the demo
    VGG (whose searches run the head after its first linear layer) and ResNet and on a
    torchvision resnet18 split at ``layer3``, pass for pass. Nothing else may run the
    model in the block (its own last layer would count)."""
    last = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not last:
        raise ValueError("the model has no nn.Linear to count head passes by")
    shape = (last[-1].in_features, last[-1].out_features)
    rows: list[int] = []

    def hook(module: nn.Module, inputs: Sequence, output: Any) -> None:
        if isinstance(module, nn.Linear) and (module.in_features,
                                              module.out_features) == shape:
            rows.append(len(output))

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        yield rows
    finally:
        handle.remove()


# --- screenshots ---------------------------------------------------------------------------
@contextlib.contextmanager
def browser(width: int = 1280, height: int = 1000) -> Iterator[Any]:
    """A headless chromium (selenium's driver) of that window size, quit on exit."""
    from selenium import webdriver

    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu",
                "--disable-dev-shm-usage", f"--window-size={width},{height}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(options=opts)
    try:
        yield driver
    finally:
        driver.quit()
