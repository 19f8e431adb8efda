"""Region purity against the number of sampled boundaries per seed, on the demo.

    python -m benchmarks.purity_curve [--arch vgg|resnet] [--q 25,50,100,200,400]
        [--min-purity none,0.995] [--out docs/purity-curve.json]

The demo's settings (the cached demo VGG, or the small ResNet split at ``layer2``,
10,000 training images drawn with seed 0, coverage 0.9, at most 6 regions per class);
for each |Q|: regions, regions per class, held-out pooled purity and share of the
10,000 test images inside a region, summary seconds. Each |Q| (and each greedy purity
stop, ``--min-purity``) is one summary with the same seed.
"""
from __future__ import annotations

import time

from benchmarks import harness
from repinterp import RepresentativeInterpreter
from repinterp.app.stats import heldout_figures
from repinterp.demo.models import DEMO_LAYERS


def main() -> None:
    p = harness.parser(__doc__)
    p.add_argument("--q", default="25,50,100,200,400", type=harness.ints)
    p.add_argument("--references", type=int, default=10000)
    harness.add_out(p, help="a JSON file")
    p.add_argument("--arch", default="vgg", help="demo architecture (vgg or resnet)")
    p.add_argument("--min-purity", default="none", help="greedy purity stops to try "
                   "(comma-separated; none = the paper's delta rule alone)")
    a = p.parse_args()
    model, meta = harness.demo_model(a.arch)
    x, xt = harness.fashion()
    refs = harness.draw(x, a.references)
    rows = []
    stops = [None if v == "none" else float(v) for v in a.min_purity.split(",")]
    for q, stop in [(v, s) for v in a.q for s in stops]:
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
        harness.emit(row)
    if a.out:
        harness.save_json(a.out, {"arch": a.arch, "test_accuracy": meta["test_accuracy"],
                                 "references": a.references, "rows": rows})


if __name__ == "__main__":
    main()
