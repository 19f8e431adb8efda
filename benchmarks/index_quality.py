"""The region index against the per-seed bisection summary, on the same references.

    python -m benchmarks.index_quality [--references 60000] [--banks 512,1024,2048]

The cached demo VGG; Fashion-MNIST training images as references, the test split as
held-out images. For the per-seed summary (RepresentativeInterpreter.summarize) and for
an index summary per bank size (``build_index`` in-process, pilot 2,000 images): regions,
regions per class, region sizes, held-out pooled purity and share of test images in a
region, and the seconds each took. Prints JSON lines; ``--out FILE`` writes them.
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import harness
from repinterp import RepresentativeInterpreter
from repinterp.app.index import build_index, load_index
from repinterp.app.loading import ImageSource
from repinterp.app.stats import heldout_figures


def figures(summary, test_feats, test_preds) -> dict:
    held = heldout_figures(summary.regions, test_feats, test_preds)
    sizes = [r.size for r in summary.regions]
    return {"regions": len(summary.regions),
            "regions_per_class": [len(c.regions) for c in summary.classes],
            "coverage_per_class": [round(c.coverage, 4) for c in summary.classes],
            "median_region_size": statistics.median(sizes),
            "largest_region": max(sizes),
            "heldout_pooled_purity": held["pooled_purity"],
            "heldout_share_in_a_region": held["share_in_a_region"]}


def main() -> None:
    p = harness.parser(__doc__)
    p.add_argument("--references", type=int, default=60000)
    p.add_argument("--banks", default="1024,2048", type=harness.ints)
    p.add_argument("--pilot", type=int, default=2000)
    p.add_argument("--coverage", type=float, default=0.9)
    p.add_argument("--max-regions", type=int, default=6)
    p.add_argument("--skip-per-seed", action="store_true")
    harness.add_out(p, help="a JSON file")
    a = p.parse_args()
    model, _ = harness.demo_model()
    x, xt = harness.fashion()
    refs = x[: a.references]
    rows = []
    interp = RepresentativeInterpreter(model, "features", progress=False).fit(refs)
    test_feats = interp.features(xt)
    test_preds = interp.predict_features(test_feats)
    if not a.skip_per_seed:
        start = time.perf_counter()
        summary = interp.summarize(coverage=a.coverage, max_regions=a.max_regions)
        row = {"method": "per-seed bisection, |Q| = 50",
               "seconds": time.perf_counter() - start,
               **figures(summary, test_feats, test_preds)}
        rows.append(row)
        harness.emit(row)
    del interp
    with tempfile.TemporaryDirectory() as tmp:
        arr = Path(tmp) / "refs.npy"
        np.save(arr, refs.numpy())
        source = ImageSource(str(arr), channels=1, normalize="none", pixel_range="raw")
        for bank in a.banks:
            start = time.perf_counter()
            out = build_index(model, "features", source, Path(tmp) / f"idx{bank}",
                              bank=bank, pilot=a.pilot, progress=False)
            built = time.perf_counter() - start
            index = load_index(out).index
            variants = [("whole bank, min_purity 0.995 (default)", {})]
            if bank == 1024:
                variants += [("whole bank, smallest feasible delta only",
                              {"min_purity": None}),
                             ("nearest 50 of the class, min_purity 0.995",
                              {"num_boundaries": 50}),
                             ("whole bank, min_purity 0.99", {"min_purity": 0.99})]
            for name, kw in variants:
                start = time.perf_counter()
                summary = index.summarize(coverage=a.coverage, max_regions=a.max_regions,
                                          **kw)
                row = {"method": f"index, bank {bank}, pilot {a.pilot}: {name}",
                       "index_seconds": built, "seconds": time.perf_counter() - start,
                       "row_bytes": index.nbytes,
                       **figures(summary, test_feats, test_preds)}
                rows.append(row)
                harness.emit(row)
    if a.out:
        harness.save_json(a.out, {"references": a.references, "coverage": a.coverage,
                                 "max_regions": a.max_regions, "rows": rows})


if __name__ == "__main__":
    sys.exit(main())
