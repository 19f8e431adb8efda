"""Region index at scale, measured in one run (demo VGG, Fashion-MNIST).

    python -m benchmarks.index_scale [--sizes 70000,1000000] [--ray-n 70000]

* throughput: building the index of N images in-process / a bare forward pass of the
  whole model over the same images (same batch size), and on Ray Data with 2 workers
  (a local Ray started as users start it: ``ray.init(num_cpus=2)``);
* driver memory: peak resident memory of the process that loads the index and builds a
  summary from it, against N: rows only, O(N x |bank|);
* summary time from the index against N.

N up to 70,000 takes every Fashion-MNIST image (train then test); beyond, images are
augmented deterministically on the fly (:class:`AugmentedFashion`): image ``i`` is image
``i mod 70000`` shifted by ``(dy, dx)`` pixels, the ``i // 70000``-th of the 25 shifts in
``-2..2 x -2..2`` taken in a fixed order (nothing is stored: every worker recomputes it).
"""
from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchmarks import harness
from repinterp.app.index import build_index
from repinterp.demo.data import load_fashion_mnist

SHIFTS = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)]
SHIFTS.sort(key=lambda s: (abs(s[0]) + abs(s[1]), s))        # (0, 0) first


@dataclass
class AugmentedFashion:
    """``n`` Fashion-MNIST images (normalised, ``[1, 28, 28]``), train then test, then
    shifted copies; a picklable image source for :func:`build_index`."""

    n: int

    def __len__(self) -> int:
        return self.n

    def _base(self) -> torch.Tensor:
        if getattr(self, "_cache", None) is None:
            train, _ = load_fashion_mnist("train")
            test, _ = load_fashion_mnist("test")
            self._cache = torch.cat([train, test])
        return self._cache

    def __getstate__(self) -> dict:
        return {"n": self.n}

    def read(self, start: int, end: int) -> tuple[torch.Tensor, list[int], list[str]]:
        base = self._base()
        items = list(range(start, min(end, self.n)))
        idx = torch.tensor(items)
        out = base[idx % len(base)].clone()
        for k in sorted(set((idx // len(base)).tolist())):
            if k == 0:
                continue
            dy, dx = SHIFTS[k % len(SHIFTS)]
            sel = (idx // len(base)) == k
            out[sel] = torch.roll(base[idx[sel] % len(base)], shifts=(dy, dx), dims=(2, 3))
        return out, items, [f"fmnist-aug[{i}]" for i in items]


def bare_forward(model, source, batch: int) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(source), 4096):
            x = source.read(i, i + 4096)[0]
            for j in range(0, len(x), batch):
                model(x[j:j + batch])
    return time.perf_counter() - start


#: run from the repository root (:func:`benchmarks.harness.run_script`): index, engine
SUMMARY_CHILD = r"""
import json, sys, time
from benchmarks.real_size import PeakMemory
from repinterp.app.index import load_index
from repinterp.core.index import IndexWorker
from repinterp.demo.data import load_fashion_mnist
from repinterp.demo.models import load_demo_model
engine = sys.argv[2]
model, _ = load_demo_model(progress=False)
query = load_fashion_mnist("test")[0][5:6].flip(3)        # an image outside the index
with PeakMemory() as mem:
    t = time.perf_counter()
    loaded = load_index(sys.argv[1], engine=engine, workers=2)
    index = loaded.index
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    summary = index.summarize(coverage=0.9, max_regions=6)
    summary_s = time.perf_counter() - t
    steps = getattr(index, "steps", None)
    worker = IndexWorker(model, index.layer, index.bank)
    t = time.perf_counter()
    region = index.explain(worker.rows(query))         # one forward, then the greedy
    explain_s = time.perf_counter() - t
    usage = loaded.groups.usage() if loaded.groups is not None else None
    loaded.close()
print(json.dumps({"engine": engine, "n": len(index), "load_s": load_s,
                  "summary_s": summary_s, "regions": len(summary.regions),
                  "greedy_steps": steps, "explain_outside_s": explain_s,
                  "explain_outside_size": region.size,
                  "members": [r.members[:20].tolist() for r in summary.regions],
                  "driver_peak_bytes": mem.peak[0] - mem.before[0],
                  "driver_peak_anon_bytes": mem.peak[1] - mem.before[1],
                  "workers": usage}))
"""


def cost_model(rows: list[dict], images: float = 100e6, nodes: int = 16) -> dict:
    """The summary of ``images`` rows on ``nodes`` workers (one each), extrapolated from
    the measured Ray runs (the smallest and the largest N): a worker's busy seconds (its
    share of every greedy step, the seeds' reductions, the members' ranking) and its
    peak memory are fitted as ``a + b x rows`` through the two runs and taken at
    ``images / nodes`` rows; the driver's part (the rest of the wall time: a round trip
    per step, the bank's candidates, the regions) as at the largest N; the number of
    steps as measured (it is bounded by regions x steps per region, with at most
    ``max_regions`` regions per class)."""
    runs = [r for r in rows if r.get("summary_ray", {}).get("workers")]
    lo, hi = runs[0]["summary_ray"], runs[-1]["summary_ray"]

    def worker(m: dict) -> tuple[float, float, float]:
        w = max(m["workers"], key=lambda w: w["rows"])
        return w["rows"], sum(w["seconds"].values()), w["peak_rss_bytes"]

    (r0, b0, p0), (r1, b1, p1) = worker(lo), worker(hi)
    share = images / nodes
    busy = b1 if r1 == r0 else b0 + (b1 - b0) * (share - r0) / (r1 - r0)
    peak = p1 if r1 == r0 else p0 + (p1 - p0) * (share - r0) / (r1 - r0)
    driver = hi["summary_s"] - b1
    return {"from_n": [runs[0]["n"], runs[-1]["n"]], "images": images, "nodes": nodes,
            "worker_busy_s": busy, "driver_s": driver, "greedy_steps": hi["greedy_steps"],
            "summary_s": busy + driver, "worker_memory_bytes": peak}


def main() -> None:
    p = harness.parser(__doc__)
    p.add_argument("--sizes", default="70000,1000000", type=harness.ints)
    p.add_argument("--ray-n", type=int, default=70000)
    p.add_argument("--bank", type=int, default=1024)
    p.add_argument("--engines", default="local,ray", help="where summarize --index runs "
                   "its greedy: in the driver (local) or on 2 Ray actors holding the rows")
    harness.add_out(p, help="a JSON file, written after each size")
    p.add_argument("--local-max", type=int, default=None, help="the in-process engine "
                   "only up to this N (its driver holds every row)")
    p.add_argument("--no-forward", action="store_true", help="skip the bare forward pass "
                   "that the index build is compared with")
    p.add_argument("--keep", default=None, help="build the indexes in this folder and "
                   "keep them (a later run reuses an index that is complete)")
    a = p.parse_args()
    model, _ = harness.demo_model()
    res = {"bank": a.bank, "rows": []}
    with tempfile.TemporaryDirectory() as scratch:
        tmp = a.keep or scratch
        for n in a.sizes:
            source = AugmentedFashion(n)
            batch = 256
            out = Path(tmp) / f"idx{n}-bank{a.bank}"
            row: dict = {"n": n}
            # an index kept from an earlier run is completed (resumed), not timed
            reused = (out / "manifest.json").exists()
            bare = None if reused or a.no_forward else bare_forward(model, source, batch)
            start = time.perf_counter()
            build_index(model, "features", source, out, bank=a.bank, progress=False,
                        batch_size=batch, shard_size=16384)
            local = time.perf_counter() - start
            if reused:
                row["index_reused"] = str(out)
            else:
                row.update(bare_forward_s=bare, index_local_s=local,
                           local_over_bare=None if bare is None else local / bare)
            row["disk_bytes"] = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
            if n == a.ray_n and "index_local_s" in row:
                import ray
                ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
                try:
                    start = time.perf_counter()
                    build_index(model, "features", source, Path(tmp) / f"ray{n}",
                                bank=a.bank, progress=False, batch_size=batch,
                                shard_size=16384, engine="ray", workers=2)
                    row["index_ray2_s"] = time.perf_counter() - start
                    row["ray2_over_local"] = row["index_ray2_s"] / local
                finally:
                    ray.shutdown()
            for engine in a.engines.split(","):
                if engine == "local" and a.local_max is not None and n > a.local_max:
                    continue
                child = harness.run_script(SUMMARY_CHILD, str(out.resolve()), engine,
                                           capture_output=True, text=True)
                if child.returncode:
                    sys.exit(f"summary ({engine}) failed:\n{child.stderr[-3000:]}")
                got = harness.last_json(child.stdout)
                row[f"summary_{engine}"] = {k: v for k, v in got.items() if k != "members"}
                if engine == "local":
                    row["members"] = got["members"]
                elif "members" in row:                 # the in-process engine's regions
                    row[f"same_regions_{engine}"] = got["members"] == row["members"]
            row.pop("members", None)
            res["rows"].append(row)
            harness.emit(row)
            if "summary_ray" in row and row["summary_ray"].get("workers"):
                res["cost_model"] = cost_model(res["rows"])
            if a.out:                                   # after each size: long runs
                harness.save_json(a.out, res, newline=False)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
