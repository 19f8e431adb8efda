"""Region stability (issue 19): does a seed get the same region across interpreter seeds
and |Q|, and does an image keep its region under noise the model ignores?

    python -m benchmarks.stability --out docs [--arch vgg] [--seeds 20]

The demo model, 5,000 training references. Jaccard overlap of the members of a seed's
region (``explain(i)``) between the base interpreter (seed 0, |Q| = 50) and one with
another seed (1..4, |Q| = 50) or another |Q| (100, 200; seed 0), over ``--seeds`` seed
references. Noise: ``--seeds`` test images, each with 5 copies plus Gaussian noise
(sigma ``--sigma`` in normalised units; copies whose prediction changes are dropped):
the Jaccard overlap of ``explain(copy)`` with ``explain(image)`` and the share of copies
whose region overlaps the image's by at least 0.8 ("kept"). Writes ``stability.json``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from benchmarks import harness
from repinterp import RepresentativeInterpreter
from repinterp.demo.models import DEMO_LAYERS

KEPT = 0.8


def jaccard(a: torch.Tensor, b: torch.Tensor) -> float:
    sa, sb = set(a.tolist()), set(b.tolist())
    return len(sa & sb) / max(1, len(sa | sb))


def main() -> None:
    p = harness.parser(__doc__)
    p.add_argument("--arch", default="vgg")
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--references", type=int, default=5000)
    p.add_argument("--sigma", type=float, default=0.05)
    p.add_argument("--noise-only", action="store_true",
                   help="skip the seeds and |Q| part (e.g. for another --sigma)")
    harness.add_out(p, help="a folder")
    a = p.parse_args()
    model, _ = harness.demo_model(a.arch)
    x, xt = harness.fashion()
    g = torch.Generator().manual_seed(0)
    refs = x[torch.randperm(len(x), generator=g)[:a.references]]
    seeds = torch.randperm(a.references, generator=g)[:a.seeds].tolist()

    def fit(seed: int = 0, q: int = 50) -> RepresentativeInterpreter:
        return RepresentativeInterpreter(model, DEMO_LAYERS[a.arch], q, seed=seed,
                                         progress=False).fit(refs)

    base = fit()
    regions = {i: base.explain(i) for i in seeds}
    across: dict[str, list[float]] = {}
    variants = [*[(f"seed {s}", {"seed": s}) for s in range(1, 5)],
                ("|Q| = 100", {"q": 100}), ("|Q| = 200", {"q": 200})]
    for name, kw in [] if a.noise_only else variants:
        other = fit(**kw)
        across[name] = [jaccard(regions[i].members, other.explain(i).members) for i in seeds]
        print(name, round(float(np.mean(across[name])), 3), flush=True)
    images = xt[torch.randperm(len(xt), generator=g)[:a.seeds]]
    noise: list[float] = []
    dropped = 0
    for img in images:
        own = base.explain(img)
        copies = img + a.sigma * torch.randn((5, *img.shape), generator=g)
        keep = base.predict(copies) == own.predicted_class
        dropped += int((~keep).sum())
        noise += [jaccard(own.members, r.members) for r in base.explain(copies[keep])]
    all_across = np.concatenate([np.asarray(v) for v in across.values()] or [[np.nan]])
    result = {"arch": a.arch, "references": a.references, "seeds": len(seeds),
              "across": {k: {"mean": float(np.mean(v)), "min": float(np.min(v)),
                             "kept": float(np.mean(np.asarray(v) >= KEPT))}
                         for k, v in across.items()},
              "across_mean": float(all_across.mean()),
              "noise": {"sigma": a.sigma, "copies": len(noise), "dropped": dropped,
                        "mean": float(np.mean(noise)),
                        "kept": float(np.mean(np.asarray(noise) >= KEPT))}}
    harness.emit(result)
    if a.out:
        suffix = f"-sigma{a.sigma:g}" if a.noise_only else ""
        harness.save_json(Path(a.out) / f"stability-{a.arch}{suffix}.json", result)


if __name__ == "__main__":
    main()
