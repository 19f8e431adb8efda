"""Contrastive neighbours (:meth:`repinterp.RepresentativeInterpreter.across`): for how
many boundaries of a summary's regions some reference lies outside by that boundary
alone, how near the nearest one is, and whether the model decides it otherwise.

    python -m benchmarks.across --demo out/demo/summary.json --out docs [--screens]

Two settings, measured in one run:

* **the demo**: the ``across`` rows of the demo's ``summary.json`` (``make demo`` writes
  them: 10,000 Fashion-MNIST references, the shipped VGG, |Q| = 200);
* **224 px**: a torchvision resnet18 with random convolutional weights and a final layer
  centred on the references (no weights can be downloaded here;
  ``benchmarks/torchvision_matrix.py: diversify``), split at ``layer4.0``, summarised
  on ``--references`` 224 px images of :mod:`repinterp.demo.photos` (Fashion-MNIST
  objects on real photographs), |Q| = 50.

Per setting: boundaries in all, the share with at least one neighbour, the share whose
nearest neighbour the model predicts as another class than the region's, and the
nearest neighbour's relative distance (``|s_h| / spread``: below 1 is closer to the
boundary than the typical member; median and 10th / 90th percentiles). ``--screens``
also photographs, in headless chromium, the first card's neighbours and the first
region page's table of the demo report (``across-card.png``, ``across-page.png``).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
import torchvision

from benchmarks import harness
from benchmarks.torchvision_matrix import diversify
from repinterp import RepresentativeInterpreter
from repinterp.demo.photos import photo_set


def figures(rows: list[tuple[str, dict]]) -> dict:
    """The figures of a summary's ``across`` rows, each as ``(region's class, row)``."""
    crossed = [r for _, r in rows if r["count"]]
    other = [1.0 for cls, r in rows if r["count"] and r["nearest"]
             and r["nearest"][0]["predicted"] != cls]
    near = np.array([r["nearest"][0]["relative"] for r in crossed if r["nearest"]])
    return {"boundaries": len(rows), "with_a_neighbour": len(crossed),
            "share_with_a_neighbour": round(len(crossed) / max(len(rows), 1), 4),
            "share_nearest_decided_otherwise": round(len(other) / max(len(crossed), 1), 4),
            "nearest_relative_distance": None if not len(near) else {
                "median": round(float(np.median(near)), 4),
                "p10": round(float(np.percentile(near, 10)), 4),
                "p90": round(float(np.percentile(near, 90)), 4)}}


def from_summary_json(path: Path) -> list[tuple[str, dict]]:
    data = json.loads(path.read_text())
    rows = [(c["name"], row) for c in data["classes"] for r in c["regions"]
            for row in r.get("across", [])]
    if not rows:
        raise SystemExit(f"{path} has no across rows: run `make demo` with this version")
    return rows


def at_224(references: int, seed: int) -> tuple[list[tuple[str, dict]], dict]:
    x = photo_set("train", references, size=224, seed=seed).tensors()
    torch.manual_seed(seed)
    model = diversify(torchvision.models.resnet18(num_classes=3).eval(), x[:64])
    t0 = time.perf_counter()
    interp = RepresentativeInterpreter(model, "layer4.0", num_boundaries=50, seed=seed,
                                       progress=False).fit(x)
    summary = interp.summarize()
    t1 = time.perf_counter()
    rows, seconds = [], 0.0
    for region in summary.regions:
        t = time.perf_counter()
        crossings = interp.across(region)
        seconds += time.perf_counter() - t
        cls = str(region.predicted_class)
        rows += [(cls, {"count": c.count, "nearest": [
            {"predicted": str(int(p)), "relative": float(d)}
            for p, d in zip(c.predictions, c.relative, strict=True)]}) for c in crossings]
    return rows, {"regions": len(summary.regions), "references": references,
                  "fit_and_summarize_seconds": round(t1 - t0, 1),
                  "across_seconds_all_regions": round(seconds, 2)}


def screens(report: Path, out: Path) -> None:
    """Element screenshots of the demo report's first card and first region page."""
    from selenium.webdriver.common.by import By

    with harness.browser() as driver:
        driver.get(report.resolve().as_uri())
        driver.find_element(By.CSS_SELECTOR, "div.region").screenshot(
            str(out / "across-card.png"))
        driver.get((report.parent / "regions" / "region-001.html").resolve().as_uri())
        driver.find_element(By.ID, "across-table").screenshot(str(out / "across-page.png"))


def main() -> None:
    p = harness.parser(__doc__)
    p.add_argument("--demo", default="out/demo/summary.json")
    p.add_argument("--references", type=int, default=300)
    harness.add_seed(p)
    p.add_argument("--screens", action="store_true")
    harness.add_out(p, help="a folder")
    a = p.parse_args()
    if a.screens and a.out:
        screens(Path(a.demo).parent / "report.html", Path(a.out))
    demo = from_summary_json(Path(a.demo))
    rows, run = at_224(a.references, a.seed)
    result = {"demo": figures(demo), "resnet18_224": {**figures(rows), **run}}
    harness.emit(result)
    if a.out:
        harness.write_results(a.out, "across.json", result)


if __name__ == "__main__":
    main()
