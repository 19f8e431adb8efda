"""Real-size ratios, measured in one run: torchvision ResNets at 224x224 on the CPU.

    python benchmarks/real_size.py [--arch resnet50] [--n 300]

Random convolutional weights (no pretrained weights can be downloaded here) and a final
layer centred on the references so that predictions are diverse. Reports, in one run:
fit / plain forward of the same images, explain (|Q| = 50) / plain forward of 50 images,
and the head passes of the boundary search.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from torchvision_matrix import build, diversify  # noqa: E402

from repinterp import RepresentativeInterpreter  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--arch", default="resnet50")
    p.add_argument("--layer", default="layer3")
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--seeds", type=int, default=3)
    a = p.parse_args()
    torch.manual_seed(0)
    model = build(a.arch, classes=10).float()
    x = torch.randn(a.n, 3, 224, 224)
    diversify(model, x[:64])
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(0, a.n, 50):
            model(x[i:i + 50])
    forward_n = time.perf_counter() - start
    start = time.perf_counter()
    with torch.no_grad():
        model(x[:50])
    forward_50 = time.perf_counter() - start
    it = RepresentativeInterpreter(model, a.layer, num_boundaries=50, progress=False,
                                   batch_size=50)
    start = time.perf_counter()
    it.fit(x)
    fit_s = time.perf_counter() - start
    calls = []
    head = it.store_.rest
    handle = head.register_forward_pre_hook(lambda m, i: calls.append(len(i[0])))
    times = []
    for s in range(a.seeds):
        calls.clear()
        t = time.perf_counter()
        it.explain(s)
        times.append(time.perf_counter() - t)
    handle.remove()
    explain_s = statistics.median(times)
    print(f"{a.arch}@{a.layer}, 224x224, N={a.n}, D={it.features_.shape[1]}, "
          f"{len(set(it.predictions_.tolist()))} classes predicted")
    print(f"fit {fit_s:.1f} s / plain forward {forward_n:.1f} s = {fit_s / forward_n:.2f}x")
    print(f"explain (median of {a.seeds}) {explain_s:.2f} s / forward of 50 images "
          f"{forward_50:.2f} s = {explain_s / forward_50:.2f}x")
    print(f"head passes in the last explain: {len(calls)} (points per pass: {calls})")


if __name__ == "__main__":
    main()
