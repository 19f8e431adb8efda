"""The edit that leaves a region (:meth:`RepresentativeInterpreter.counterfactual`)
against the two edits a user would otherwise make, on the same images.

    python -m benchmarks.counterfactual --out docs [--queries 100] [--queries-224 20]

Per query image (not a reference): its region (``explain``, |Q| = 50), then

* ``region``: DeepFool steps on the side value of the region's nearest boundary
  (smoothed gradient, at most 50 steps), aimed at that boundary's other class;
* ``logits``: the same steps on the logit margin towards the same class, without the
  region (a targeted DeepFool);
* ``blend``: the first blend towards the nearest contrastive neighbour across that
  boundary that the model predicts as that class (else the nearest decided otherwise;
  :meth:`RepresentativeInterpreter.across`); images with no such neighbour are left out
  of this row.

Figures per method: success (the model predicts the class aimed at), prediction changed,
median L2 and share of pixels changed (by more than 1/255), mean seconds per image, and
the paired share of images where the region-guided edit is smaller (L2) than the other
when both succeed. Settings: the demo VGG (shipped weights) on 2,000 Fashion-MNIST
training images as references and test images as queries (pixels in [0, 1], kept
there); a torchvision resnet18 at 224 px split at ``layer4.0`` with random
convolutional weights and a centred classifier (``diversify``; nothing can be downloaded
here) on 300 photo-set images (ImageNet-normalised: L2 in those units, no clamp); and
the project's trained photo resnet18 (:func:`repinterp.demo.photos.load_photo_model`:
trained at 160 px on marked photo-set images, cached, fully convolutional, run at 224)
on the same images.
"""
from __future__ import annotations

import statistics
import time

import numpy as np
import torch
import torchvision

from benchmarks import harness
from benchmarks.torchvision_matrix import diversify
from repinterp import RepresentativeInterpreter
from repinterp.demo.photos import load_photo_model, photo_set

METHODS = ("region", "logits", "blend")


def neighbour(interp: RepresentativeInterpreter, region, boundary: int, target: int,
              source: int) -> int | None:
    """The nearest reference across ``boundary`` alone predicted as ``target`` (else
    decided otherwise than ``source``), or None."""
    row = interp.across(region, k=64)[boundary]
    pred = row.predictions.tolist()
    for want in (lambda p: p == target, lambda p: p != source):
        hit = [i for i, p in zip(row.indices.tolist(), pred, strict=True) if want(p)]
        if hit:
            return hit[0]
    return None


def measure(interp: RepresentativeInterpreter, refs: torch.Tensor,
            queries: torch.Tensor) -> dict:
    rows: dict[str, list[dict]] = {m: [] for m in METHODS}
    for n, q in enumerate(queries):
        region = interp.explain(q)
        if not region.num_boundaries:
            continue
        for m in METHODS:
            t0 = time.perf_counter()
            if m == "blend":
                edit = rows["region"][-1]["edit"]
                j = neighbour(interp, region, edit.boundary, edit.target, edit.source)
                if j is None:
                    continue
                cf = interp.counterfactual(q, region, via="blend", towards=refs[j])
            else:
                cf = interp.counterfactual(q, region, via=m)
            rows[m].append({"edit": cf, "seconds": time.perf_counter() - t0, "query": n})
    out = {}
    for m, rs in rows.items():
        edits = [r["edit"] for r in rs]
        out[m] = {"images": len(edits),
                  "success": round(float(np.mean([e.success for e in edits])), 4),
                  "prediction_changed": round(float(np.mean(
                      [e.predicted != e.source for e in edits])), 4),
                  "median_l2": round(statistics.median(e.l2 for e in edits), 4),
                  "median_changed_share": round(statistics.median(e.changed for e in edits), 4),
                  "mean_seconds": round(float(np.mean([r["seconds"] for r in rs])), 4)}
    region = {r["query"]: r["edit"] for r in rows["region"]}
    for m in ("logits", "blend"):
        pairs = [(region[r["query"]], r["edit"]) for r in rows[m]]
        both = [(a, b) for a, b in pairs if a.success and b.success]
        out[m]["region_smaller_when_both_succeed"] = None if not both else round(
            float(np.mean([a.l2 < b.l2 for a, b in both])), 4)
        out[m]["both_succeed"] = len(both)
    return out


def main() -> None:
    p = harness.parser(__doc__)
    p.add_argument("--queries", type=int, default=100)
    p.add_argument("--queries-224", type=int, default=20)
    harness.add_seed(p)
    harness.add_out(p, help="a folder")
    a = p.parse_args()
    model, _ = harness.demo_model()
    x_train, x_test = harness.fashion()
    refs = harness.draw(x_train, 2000, a.seed)
    demo = RepresentativeInterpreter(model, "features", seed=a.seed, progress=False).fit(refs)
    result = {"demo": measure(demo, refs, x_test[:a.queries])}
    harness.emit(result)
    x = photo_set("train", 300, size=224, seed=a.seed).tensors()
    q = photo_set("test", a.queries_224, size=224, seed=a.seed + 1).tensors()
    torch.manual_seed(a.seed)
    net = diversify(torchvision.models.resnet18(num_classes=3).eval(), x[:64])
    big = RepresentativeInterpreter(net, "layer4.0", seed=a.seed, progress=False).fit(x)
    result["resnet18_224"] = measure(big, x, q)
    harness.emit(result)
    trained, _ = load_photo_model("resnet18", progress=False)
    photo = RepresentativeInterpreter(trained, "layer4.0", seed=a.seed,
                                      progress=False).fit(x)
    result["trained_photo_resnet18_224"] = measure(photo, x, q)
    harness.emit(result)
    if a.out:
        harness.write_results(a.out, "counterfactual.json", result)


if __name__ == "__main__":
    main()
