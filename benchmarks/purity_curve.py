"""Region purity against the number of sampled boundaries per seed, on the demo.

    python benchmarks/purity_curve.py [--arch vgg|resnet] [--q 25,50,100,200,400]
        [--min-purity none,0.995] [--out docs/purity-curve.json]

The demo's settings (the cached demo VGG, or the small ResNet split at ``layer2``,
10,000 training images drawn with seed 0, coverage 0.9, at most 6 regions per class);
for each |Q|: regions, regions per class, held-out pooled purity and share of the
10,000 test images inside a region, summary seconds. Each |Q| (and each greedy purity
stop, ``--min-purity``) is one summary with the same seed.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from repinterp import RepresentativeInterpreter
from repinterp.app.outputs import write_json
from repinterp.app.stats import heldout_figures
from repinterp.demo.data import load_fashion_mnist
from repinterp.demo.models import DEMO_LAYERS, load_demo_model


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--q", default="25,50,100,200,400")
    p.add_argument("--references", type=int, default=10000)
    p.add_argument("--out", default=None)
    p.add_argument("--arch", default="vgg", help="demo architecture (vgg or resnet)")
    p.add_argument("--min-purity", default="none", help="greedy purity stops to try "
                   "(comma-separated; none = the paper's delta rule alone)")
    a = p.parse_args()
    model, meta = load_demo_model(a.arch, progress=False)
    x, _ = load_fashion_mnist("train")
    xt, _ = load_fashion_mnist("test")
    refs = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:a.references]]
    rows = []
    stops = [None if v == "none" else float(v) for v in a.min_purity.split(",")]
    for q, stop in [(int(v), s) for v in a.q.split(",") for s in stops]:
        interp = RepresentativeInterpreter(model, DEMO_LAYERS[a.arch], num_boundaries=q,
                                           min_purity=stop, progress=False).fit(refs)
        feats = interp.features(xt)
        preds = interp.predict_features(feats)
        start = time.perf_counter()
        summary = interp.summarize(coverage=0.9, max_regions=6)
        seconds = time.perf_counter() - start
        held = heldout_figures(summary.regions, feats, preds)
        row = {"num_boundaries": q, "min_purity": stop, "summary_s": seconds,
               "regions": len(summary.regions),
               "regions_per_class": [len(c.regions) for c in summary.classes],
               "coverage_per_class": [round(c.coverage, 4) for c in summary.classes],
               "heldout_pooled_purity": held["pooled_purity"],
               "heldout_share_in_a_region": held["share_in_a_region"]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if a.out:
        write_json(Path(a.out), {"arch": a.arch, "test_accuracy": meta["test_accuracy"],
                                 "references": a.references, "rows": rows})


if __name__ == "__main__":
    main()
