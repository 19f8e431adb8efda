"""Real-size figures, measured in one process: a torchvision ResNet at 224x224 on the CPU.

    python -m benchmarks.real_size [--arch resnet50] [--n 1000] [--mode float32]

Random convolutional weights (no pretrained weights can be downloaded here) and a final
layer centred on the references so that every class is predicted
(``benchmarks/torchvision_matrix.py: diversify``). Prints one JSON line:

* ``fit_over_forward``: ``fit`` over N images / the plain batched forward of the whole
  model over the same images (``--no-timing`` skips both);
* ``explain_over_forward50``: ``explain`` with |Q| = 50 (median over ``--seeds``) / one
  plain forward of 50 images, and the head passes of the boundary search (of the last
  seed: calls of the head's final layer, :func:`benchmarks.harness.count_head_passes`;
  ``points_per_pass``: the rows of each);
* ``store_bytes``: the fitted state (``nbytes_``: features and projections);
  ``fit_peak_bytes``: resident memory sampled every 2 ms during ``fit``, minus the
  resident memory before it (model and images already loaded), as total RSS and as
  anonymous RSS (what a memory-mapped store does not count: its pages are the kernel's
  file cache, written back and dropped under pressure).

``--mode``: ``float32`` / ``float16`` / ``bfloat16`` (in-memory store of that dtype) or
``mmap`` (float32 in a memory-mapped file in a temporary directory).
"""
from __future__ import annotations

import ctypes
import statistics
import tempfile
import threading
import time

import torch

from benchmarks import harness
from benchmarks.torchvision_matrix import build, diversify
from repinterp import RepresentativeInterpreter
from repinterp.core.passes import auto_batch_size


def rss() -> tuple[int, int]:
    """(total, anonymous) resident bytes of this process."""
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon"):
                fields[key] = int(value.split()[0]) * 1024
    return fields["VmRSS"], fields["RssAnon"]


class PeakMemory:
    """Peak (total, anonymous) RSS while the ``with`` block runs, sampled every 2 ms."""

    def __enter__(self) -> PeakMemory:
        # memory freed earlier (the model's set-up) goes back to the system first, so that
        # the peak counts what the block needs, not what the allocator happened to keep
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        self.before = rss()
        self.peak = list(self.before)
        self._stop = False
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop:
            now = rss()
            self.peak = [max(a, b) for a, b in zip(self.peak, now, strict=True)]
            time.sleep(0.002)

    def __exit__(self, *exc) -> None:
        self._stop = True
        self._thread.join()
        now = rss()
        self.peak = [max(a, b) for a, b in zip(self.peak, now, strict=True)]


def plain_forward(model: torch.nn.Module, x: torch.Tensor, batch: int) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(x), batch):
            model(x[i:i + batch])
    return time.perf_counter() - start


def main() -> None:
    p = harness.parser(__doc__)
    p.add_argument("--arch", default="resnet50")
    p.add_argument("--layer", default="layer3")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--mode", default="float32",
                   choices=["float32", "float16", "bfloat16", "mmap"])
    p.add_argument("--no-timing", action="store_true",
                   help="only fit and its memory (no plain forward, no explain)")
    a = p.parse_args()
    torch.manual_seed(0)
    model = build(a.arch, classes=10).float()
    x = torch.randn(a.n, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    diversify(model, x[:64])
    kw = {} if a.batch_size is None else {"batch_size": a.batch_size}
    res = {"arch": a.arch, "layer": a.layer, "n": a.n, "mode": a.mode,
           "threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        interp = RepresentativeInterpreter(
            model, a.layer, num_boundaries=50, progress=False,
            feature_dtype=None if a.mode in ("float32", "mmap") else getattr(torch, a.mode),
            store_dir=tmp if a.mode == "mmap" else None, **kw)
        with PeakMemory() as mem:
            start = time.perf_counter()
            interp.fit(x)
            res["fit_s"] = time.perf_counter() - start
        res["batch_size"] = interp.batch_size or auto_batch_size(x, torch.device("cpu"))
        res["D"] = interp.features_.shape[1]
        res["store_bytes"] = interp.nbytes_
        res["fit_peak_bytes"] = mem.peak[0] - mem.before[0]
        res["fit_peak_anon_bytes"] = mem.peak[1] - mem.before[1]
        res["rss_before_bytes"] = mem.before[0]
        res["classes_predicted"] = len(set(interp.predictions_.tolist()))
        if not a.no_timing:
            batch = res["batch_size"]
            res["forward_s"] = plain_forward(model, x, batch)
            res["fit_over_forward"] = res["fit_s"] / res["forward_s"]
            calls: list[int] = []
            times, fw50 = [], []
            for s in range(a.seeds):
                fw50.append(plain_forward(model, x[:50], 50))
                with harness.count_head_passes(model) as passes:
                    start = time.perf_counter()
                    interp.explain(s)
                    times.append(time.perf_counter() - start)
                calls = passes                                  # the last seed's
            res["explain_s"] = statistics.median(times)
            res["forward50_s"] = statistics.median(fw50)
            res["explain_over_forward50"] = res["explain_s"] / res["forward50_s"]
            res["head_passes"] = len(calls)
            res["points_per_pass"] = calls
    harness.emit(res)


if __name__ == "__main__":
    main()
