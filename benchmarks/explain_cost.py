"""What one explanation costs, as a share of the fit, on two networks (issue 18).

    python -m benchmarks.explain_cost [--n 20000] [--seeds 10] [--out docs/explain-cost.json]

For the cached demo VGG and an independent CNN (4 conv + 3 FC, trained here for one
epoch on Fashion-MNIST, seeded), split at ``features``: the fit on ``n`` training images
and ``explain`` of ``seeds`` reference seeds at the library's defaults (|Q| = 50), each
timed in this one run; the figure is the median explain over the fit (a ratio, so the
machine's speed cancels out). Run it on two commits to compare them.
"""
from __future__ import annotations

import statistics
import time

import torch
from torch import nn

from benchmarks import harness
from repinterp import RepresentativeInterpreter
from repinterp.demo.data import load_fashion_mnist


def independent_cnn(x: torch.Tensor, y: torch.Tensor) -> nn.Module:
    """A CNN unlike the demo's (4 conv + 3 FC, average pooling), one epoch, seed 1."""
    torch.manual_seed(1)
    model = nn.Sequential()
    model.add_module("features", nn.Sequential(
        nn.Conv2d(1, 24, 3, padding=1), nn.ReLU(), nn.Conv2d(24, 24, 3, padding=1),
        nn.ReLU(), nn.AvgPool2d(2), nn.Conv2d(24, 48, 3, padding=1), nn.ReLU(),
        nn.Conv2d(48, 48, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2)))
    model.add_module("head", nn.Sequential(
        nn.Flatten(), nn.Linear(48 * 49, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),
        nn.Linear(64, 10)))
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    for i in range(0, len(x), 128):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[i:i + 128]), y[i:i + 128]).backward()
        opt.step()
    return model.eval()


def measure(model: nn.Module, refs: torch.Tensor, seeds: int) -> dict:
    start = time.perf_counter()
    interp = RepresentativeInterpreter(model, "features", seed=0, progress=False).fit(refs)
    fit_s = time.perf_counter() - start
    times = []
    for s in range(seeds):
        start = time.perf_counter()
        interp.explain(s * 997 % len(refs))
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {"fit_s": round(fit_s, 3), "explain_median_s": round(median, 4),
            "explain_over_fit": round(median / fit_s, 5)}


def main() -> None:
    p = harness.parser(__doc__)
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--seeds", type=int, default=10)
    harness.add_out(p, help="a JSON file")
    a = p.parse_args()
    x, y = load_fashion_mnist("train")                  # the labels train the CNN
    refs = harness.draw(x, a.n)
    rows = {}
    vgg, _ = harness.demo_model("vgg")
    rows["demo VGG"] = measure(vgg, refs, a.seeds)
    harness.emit({"demo VGG": rows["demo VGG"]})
    cnn = independent_cnn(x[:30000], y[:30000])
    rows["independent CNN"] = measure(cnn, refs, a.seeds)
    harness.emit({"independent CNN": rows["independent CNN"]})
    if a.out:
        harness.save_json(a.out, {"n": a.n, "seeds": a.seeds, "rows": rows})


if __name__ == "__main__":
    main()
