"""Head passes and host synchronisations per region of a summary (issue 22), counted.

    python -m benchmarks.summary_passes [--n 5000] [--out docs/summary-passes.json]

On a GPU a summary's cost is latency: many small head passes, each followed by a host
synchronisation (the list of unfinished segments of the boundary search). Counted here
on the CPU, for the cached demo VGG (split at ``features``) and demo ResNet (at
``layer2``), each fitted on ``n`` training images with the library's defaults and
summarised as the demo does (coverage 0.9, at most 6 regions per class):

* ``one at a time``: the class-by-class peel, one seed's search after another (the
  summary before issue 22: :func:`repinterp.core.summary.peel` without ``explain_many``);
* ``every class at once``: :meth:`RepresentativeInterpreter.summarize`, each round's
  seeds of every class searched in one set of head passes.

Head passes: calls of the head, anywhere in the summary, counted as the calls of its
final linear layer (one per pass, on the pass's rows: a global module forward hook,
:func:`benchmarks.harness.count_head_passes`; the count a hook on the head inside the
interpreter gave, pass for pass). Host
synchronisations of the boundary search (bisection and the boundaries' gradients, the
part that runs on the device pass after pass): calls that make the host wait for a
tensor's value or size (on CUDA a device-to-host copy): ``item``, ``tolist``,
``bool``/``int``/``float`` of a tensor, ``nonzero``, ``unique``, ``masked_select`` and
indexing with a boolean mask, counted with a ``TorchFunctionMode``. Not counted: the
greedy, which runs on the host on bitsets of the side values (one copy of them per
region). Counts, not times: the same on any machine (the CPU seconds are given too).
Whether both paths give the same regions is checked (their first 10 members): in
float32 a larger batch can round a head's logits differently, so a few can differ.
"""
from __future__ import annotations

import time

import torch
from torch.overrides import TorchFunctionMode

from benchmarks import harness
from repinterp import RepresentativeInterpreter
from repinterp.core import interpreter
from repinterp.core.summary import peel
from repinterp.demo.models import DEMO_LAYERS

#: the boundary search: what runs on the device, pass after pass
SEARCH = ("bisect_segments", "boundaries_at")
SYNCING = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__bool__,
           torch.Tensor.__int__, torch.Tensor.__float__, torch.Tensor.__index__,
           torch.Tensor.nonzero, torch.nonzero, torch.Tensor.unique, torch.unique,
           torch.masked_select, torch.Tensor.masked_select}


class CountSyncs(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in SYNCING or _masked(func, args):
            self.count += 1
        return func(*args, **(kwargs or {}))


def _masked(func, args) -> bool:
    """Indexing with a boolean mask (its result's size is the mask's count)."""
    if func not in (torch.Tensor.__getitem__, torch.Tensor.__setitem__):
        return False
    index = args[1] if isinstance(args[1], tuple) else (args[1],)
    return any(isinstance(a, torch.Tensor) and a.dtype == torch.bool for a in index)


def count(interp, run) -> dict:
    syncs = CountSyncs()
    originals = {name: getattr(interpreter, name) for name in SEARCH}

    def counted(f):
        def wrapper(*args, **kw):
            with syncs:
                return f(*args, **kw)
        return wrapper

    try:
        for name, f in originals.items():
            setattr(interpreter, name, counted(f))
        with harness.count_head_passes(interp.model) as passes:
            start = time.perf_counter()
            classes = run()
            seconds = time.perf_counter() - start
    finally:
        for name, f in originals.items():
            setattr(interpreter, name, f)
    regions = [r for c in classes for r in c.regions]
    return {"regions": len(regions), "head_passes": len(passes), "head_rows": sum(passes),
            "search_syncs": syncs.count, "passes_per_region": len(passes) / len(regions),
            "search_syncs_per_region": syncs.count / len(regions), "seconds_cpu": seconds,
            "members": [r.members[:10].tolist() for r in regions]}


def main() -> None:
    p = harness.parser(__doc__)
    p.add_argument("--n", type=int, default=5000)
    harness.add_out(p, help="a JSON file")
    a = p.parse_args()
    x, _ = harness.fashion()
    res = {"n": a.n, "rows": []}
    for arch in ("vgg", "resnet"):
        model, _ = harness.demo_model(arch)
        it = RepresentativeInterpreter(model, DEMO_LAYERS[arch], seed=0,
                                       progress=False).fit(x[:a.n])
        alone = count(it, lambda: peel(it.predictions_, it.margins_, it.explain, 0.9, 6))
        together = count(it, lambda: it.summarize(coverage=0.9, max_regions=6,
                                                   batch_seeds=True).classes)
        a_m, b_m = alone.pop("members"), together.pop("members")
        differing = sum(x != y for x, y in zip(a_m, b_m, strict=False)) + abs(len(a_m) -
                                                                          len(b_m))
        row = {"model": arch, "one_at_a_time": alone, "every_class_at_once": together,
               "same_regions": differing == 0, "regions_differing": differing,
               "passes_ratio": together["head_passes"] / alone["head_passes"],
               "search_syncs_ratio": together["search_syncs"] / alone["search_syncs"]}
        res["rows"].append(row)
        harness.emit(row)
    if a.out:
        harness.save_json(a.out, res, newline=False)


if __name__ == "__main__":
    main()
