"""The demo's headline figures for seeds 0-4, without the purity contract and without
the purity stop, in one run.

    python -m benchmarks.demo_seeds --out docs/demo-seeds.json

Each run is ``repinterp demo --seed N`` (the shipped weights, 10,000 training images,
|Q| = 200, the purity contract ``target_purity=0.99``) into a temporary folder;
``no_contract`` is seed 0 with ``target_purity=None`` (every reference counted, the
greedy's purity stop 0.995), ``no_purity_stop`` seed 0 with neither (the paper's delta
rule alone). Records the test accuracy, the regions, the held-out pooled purity and the
share of test images in a region.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from benchmarks import harness
from repinterp.demo.run import run_demo

KEYS = ("test_accuracy", "regions", "heldout_pooled_purity", "heldout_share_in_a_region")


def main() -> None:
    p = harness.parser(__doc__)
    p.add_argument("--seeds", type=harness.ints, default=[0, 1, 2, 3, 4])
    harness.add_out(p, help="a JSON file")
    a = p.parse_args()
    result: dict = {"seeds": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in a.seeds:
            f = run_demo(Path(tmp) / f"s{seed}", seed=seed, progress=False, log=lambda _: None)
            result["seeds"][str(seed)] = {k: f[k] for k in KEYS}
            harness.emit({"seed": seed, **result["seeds"][str(seed)]})
        for name, kw in (("no_contract", {"target_purity": None}),
                         ("no_purity_stop", {"target_purity": None, "min_purity": None})):
            f = run_demo(Path(tmp) / name, seed=0, progress=False, log=lambda _: None,
                         **kw)
            result[name] = {k: f[k] for k in KEYS}
            harness.emit({name: result[name]})
    harness.emit(result)
    if a.out:
        harness.save_json(a.out, result)


if __name__ == "__main__":
    main()
