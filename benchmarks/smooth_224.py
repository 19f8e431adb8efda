"""Smooth torchvision classifiers and transformers at 224x224, random weights (issue 21):
fit, explain and summarize run, and what an explanation costs against a forward pass.

    python -m benchmarks.smooth_224 [--images 50] [--out docs/smooth-224.json]

For each model of the matrix with tangent boundaries (``benchmarks/torchvision_matrix.py``:
efficientnet_b0, mobilenet_v3_small, regnet_y_400mf, convnext_tiny, vit_b_16, swin_t),
random initialisation (nothing is downloaded) with its classifier centred on the images
so that it predicts several classes, float32, on ``--images`` random 224x224 images:
the time of one forward pass of all of them (the plain model), of ``fit`` on them (the
split layer of the matrix), of ``explain`` of one reference (|Q| = 50) and of a
summary; the ratio explain / forward is the figure (measured in one run).
"""
from __future__ import annotations

import time

import torch

from benchmarks import harness
from benchmarks.torchvision_matrix import MATRIX, build, diversify
from repinterp import RepresentativeInterpreter


def main() -> None:
    p = harness.parser(__doc__)
    p.add_argument("--images", type=int, default=50)
    p.add_argument("--only", default=None)
    harness.add_out(p, help="a JSON file")
    a = p.parse_args()
    rows = []
    names = a.only.split(",") if a.only else [m[0] for m in MATRIX if m[3] == "tangent"]
    for name, layer, _, mode, why in MATRIX:
        if name not in names:
            continue
        model = build(name).float()
        x = torch.randn(a.images, 3, 224, 224, generator=torch.Generator().manual_seed(0))
        diversify(model, x)
        with torch.no_grad():
            model(x[:2])                                  # warm-up (first-call set-up)
            t = time.perf_counter()
            model(x)
            forward = time.perf_counter() - t
        t = time.perf_counter()
        it = RepresentativeInterpreter(model, layer, progress=False).fit(x)
        fit = time.perf_counter() - t
        t = time.perf_counter()
        region = it.explain(0)
        explain = time.perf_counter() - t
        t = time.perf_counter()
        summary = it.summarize(coverage=0.9, max_regions=2)
        summarize = time.perf_counter() - t
        heat = it.heatmap(region, x[:2])
        row = {"model": name, "layer": layer, "boundaries": mode, "smooth": why,
               "classes_predicted": len(set(it.predictions_.tolist())),
               "forward_s": round(forward, 2), "fit_s": round(fit, 2),
               "explain_s": round(explain, 2), "summarize_s": round(summarize, 2),
               "explain_over_forward": round(explain / forward, 2),
               "region_size": region.size, "region_purity": region.purity,
               "summary_regions": len(summary.regions),
               "heatmap_shape": list(heat.shape)}
        rows.append(row)
        harness.emit(row)
    if a.out:
        harness.save_json(a.out, {"images": a.images, "rows": rows}, newline=False)


if __name__ == "__main__":
    main()
