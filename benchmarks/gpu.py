"""resnet50 at 224x224 on a GPU: the real-size ratios with ``device="cuda"``.

    python -m benchmarks.gpu --sizes 10000,50000 --out OUT.json

Random convolutional weights and a centred final layer (``diversify``), N random images
(seeded, generated on the CPU), batch size automatic. Per N, in one process: fit / plain
forward of the whole model over the same images (same batch size, ``no_grad``), explain
(|Q| = 50, median of 3 seeds) / plain forward of 50 images, peak GPU memory of fit /
store bytes, and on the first N an exactness check on the GPU (top-2 margin at the
sampled boundary points, membership of the region against its members) and the region
index's build time / plain forward. Every time is taken after ``torch.cuda.synchronize``.
The plain forward runs with PyTorch's defaults (TF32 convolutions on this GPU); repinterp
computes in full float32 (``exact_float32``), which is what its exactness needs.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks import harness
from benchmarks.torchvision_matrix import build, diversify
from repinterp import RepresentativeInterpreter
from repinterp.core.passes import auto_batch_size


class Images:
    """A picklable image source over a tensor (for the index)."""

    def __init__(self, x: torch.Tensor):
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def read(self, start: int, end: int):
        items = list(range(start, min(end, len(self.x))))
        return self.x[start:end], items, [f"img[{i}]" for i in items]


DEV = torch.device("cuda")


def sync() -> None:
    if DEV.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, *args, **kw):
    sync()
    start = time.perf_counter()
    out = fn(*args, **kw)
    sync()
    return time.perf_counter() - start, out


@torch.no_grad()
def forward(model, x, batch):
    for i in range(0, len(x), batch):
        model(x[i:i + batch].to(DEV, non_blocking=True))


def main() -> None:
    p = harness.parser(__doc__)
    p.add_argument("--sizes", default="10000,50000", type=harness.ints)
    p.add_argument("--index", type=int, default=10000)
    harness.add_out(p, help="a JSON file")
    p.add_argument("--device", default="cuda", help="cpu: a dry run of the script")
    a = p.parse_args()
    global DEV
    DEV = dev = torch.device(a.device)
    name = torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu"
    res = {"gpu": name, "torch": torch.__version__, "rows": []}
    torch.manual_seed(0)
    model = build("resnet50", classes=10).float().to(dev)
    sizes = a.sizes
    x = torch.randn(max(sizes), 3, 224, 224, generator=torch.Generator().manual_seed(1))
    diversify(model, x[:64].to(dev))
    batch = auto_batch_size(x, dev)
    forward(model, x[:batch * 2], batch)                        # warm-up
    for n in sizes:
        refs = x[:n]
        fwd_s, _ = timed(forward, model, refs, batch)
        interp = RepresentativeInterpreter(model, "layer3", num_boundaries=50,
                                           progress=False, device=dev)
        cuda = dev.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() if cuda else 0
        fit_s, _ = timed(interp.fit, refs)
        peak = (torch.cuda.max_memory_allocated() - base) if cuda else float("nan")
        store = interp.nbytes_
        times, fw50 = [], []
        for s in range(3):
            fw50.append(timed(forward, model, refs[:50], 50)[0])
            times.append(timed(interp.explain, s)[0])
        row = {"n": n, "batch": batch, "forward_s": fwd_s, "fit_s": fit_s,
               "fit_over_forward": fit_s / fwd_s, "explain_s": statistics.median(times),
               "forward50_s": statistics.median(fw50),
               "explain_over_forward50": statistics.median(times) / statistics.median(fw50),
               "store_bytes": store, "fit_peak_gpu_bytes": peak,
               "peak_over_store": peak / store,
               "classes_predicted": len(set(interp.predictions_.tolist()))}
        if n == sizes[0]:
            region = interp.explain(7)
            # the head at the boundary points, in full float32 too (predict_features
            # computes as the interpreter does)
            logits = interp.predict_features(region.boundary_points.to(dev), logits=True)
            top2 = logits.topk(2, 1).values
            inside = region.contains_features(interp.features_)
            row["exact_max_top2_margin"] = float((top2[:, 0] - top2[:, 1]).max())
            row["exact_max_abs_logit"] = float(logits.abs().max())
            row["members_equal_contains"] = bool(
                set(inside.nonzero()[:, 0].tolist()) == set(region.members.tolist()))
            row["region_size"] = region.size
        res["rows"].append(row)
        harness.emit(row)
        del interp
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    if a.index:
        from repinterp.app.index import build_index, load_index
        src = Images(x[:a.index])
        fwd_s, _ = timed(forward, model, src.x, batch)
        with tempfile.TemporaryDirectory() as tmp:
            idx_s, _ = timed(build_index, model, "layer3", src, Path(tmp) / "idx",
                             bank=1024, pilot=min(2000, a.index), shard_size=4096,
                             device=str(dev), progress=False)
            index = load_index(Path(tmp) / "idx").index
            sum_s, summary = timed(index.summarize, coverage=0.9, max_regions=6)
        res["index"] = {"n": a.index, "index_s": idx_s, "forward_s": fwd_s,
                        "index_over_forward": idx_s / fwd_s, "summary_s": sum_s,
                        "regions": len(summary.regions), "row_bytes": index.nbytes}
        harness.emit(res["index"])
    if a.out:
        harness.save_json(a.out, res, newline=False)


if __name__ == "__main__":
    main()
