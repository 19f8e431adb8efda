"""The resident set of whole ``repinterp summarize --index`` commands, as the operating
system counts it, in process and on Ray.

    python -m benchmarks.command_rss --work DIR --sizes 20000,70000,1000000 \
        --out docs/command-rss.json

A user's monitoring and the out-of-memory killer see a process's resident set (its
anonymous memory plus the file pages it has mapped and touched), not the anonymous
memory :mod:`benchmarks.index_scale` reports. For each size ``N``: an image file of
``N`` Fashion-MNIST images (up to 70,000 the training and test images, as an ``.npz``
that ``np.savez`` writes; beyond, an ``.npy`` of shifted and mirrored copies, 70,000
per block), ``repinterp index --arch vgg`` of it (the demo CNN, bank 1,024, Ray Data
with 2 workers above 70,000 images), then ``repinterp summarize --index`` with
``--engine local`` and ``--engine ray --workers 2`` (the defaults otherwise, report
included), each a fresh process whose ``/proc/PID/status`` is read every 0.1 s: the
peaks of ``RssAnon``, ``RssFile`` and ``VmHWM`` (the peak resident set) of the driver
(the command's own process; Ray's workers are other processes). Files in ``--work`` are
kept and reused (an image file or an index already there is not made again). Writes
JSON to ``--out`` (the rows of other sizes and engines already there are kept) with
the growth of the peak resident set per image between the sizes.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import harness

BLOCK = 70_000


def image_file(work: Path, n: int) -> Path:
    """The ``n`` images the commands read (made once)."""
    from repinterp.demo.data import load_fashion_mnist
    base = np.concatenate([(load_fashion_mnist(split, normalize=False)[0][:, 0].numpy()
                            * 255).round().astype(np.uint8) for split in ("train", "test")])
    if n <= BLOCK:
        path = work / f"fm{n}.npz"
        if not path.exists():
            np.savez(path, images=base[:n])
        return path
    path = work / f"fm{n}.npy"
    if not path.exists():
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8,
                                        shape=(n, *base.shape[1:]))
        rng = np.random.default_rng(0)
        for s in range(0, n, BLOCK):
            e = min(s + BLOCK, n)
            dy, dx = rng.integers(-2, 3, 2)
            block = np.roll(base[:e - s], (int(dy), int(dx)), axis=(1, 2)) if s else \
                base[:e - s]
            out[s:e] = block[:, :, ::-1] if (s // BLOCK) % 2 else block
        out.flush()
        del out
    return path


def peaks(argv: list[str]) -> dict:
    """Run ``argv``; the peaks (MiB) of its own process's resident memory, its seconds."""
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    top: dict[str, int] = {}
    while p.poll() is None:
        try:
            with open(f"/proc/{p.pid}/status") as f:
                for line in f:
                    key = line.split(":")[0]
                    if key in ("RssAnon", "RssFile", "VmHWM"):
                        top[key] = max(top.get(key, 0), int(line.split()[1]) // 1024)
        except OSError:
            pass
        time.sleep(0.1)
    err = p.stderr.read() if p.stderr else ""
    if p.returncode:
        raise SystemExit(f"{' '.join(argv)} failed: {err[-500:]}")
    return {"seconds": round(time.perf_counter() - t0, 1),
            **{f"{k}_MiB": v for k, v in top.items()}}


def main() -> None:
    p = harness.parser(__doc__)
    p.add_argument("--work", required=True, help="a folder for the images and indexes")
    p.add_argument("--sizes", type=harness.ints, default=[20_000, 70_000])
    p.add_argument("--engines", type=harness.names, default=["local", "ray"])
    harness.add_out(p, help="a JSON file")
    a = p.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    cli = [sys.executable, "-m", "repinterp.cli"]
    rows = []
    for n in a.sizes:
        data = image_file(work, n)
        index = work / f"idx{n}"
        if not (index / "manifest.json").exists():
            engine = ["--engine", "ray", "--workers", "2"] if n > BLOCK else []
            subprocess.run([*cli, "index", "--arch", "vgg", "--data", str(data), "--out",
                            str(index), "--quiet", *engine], check=True)
        for engine in a.engines:
            out = work / f"summary{n}-{engine}"
            got = peaks([*cli, "summarize", "--index", str(index), "--engine", engine,
                         "--workers", "2", "--out", str(out), "--quiet"])
            row = {"images": n, "engine": engine, **got}
            harness.emit(row)
            rows.append(row)
    if a.out:                                  # rows of other sizes or engines kept
        done = {(r["images"], r["engine"]) for r in rows}
        rows = [r for r in harness.read_results(a.out, {"rows": []})["rows"]
                if (r["images"], r["engine"]) not in done] + rows
    rows.sort(key=lambda r: (r["engine"], r["images"]))
    growth = {}
    for engine in sorted({r["engine"] for r in rows}):
        mine = sorted((r for r in rows if r["engine"] == engine), key=lambda r: r["images"])
        for lo, hi in zip(mine, mine[1:], strict=False):
            growth[f"{engine} {lo['images']}->{hi['images']}"] = round(
                (hi["VmHWM_MiB"] - lo["VmHWM_MiB"]) * 1024 / (hi["images"] - lo["images"]), 3)
    result = {"command": "python -m benchmarks.command_rss --work DIR --sizes N,... "
                         "--engines local,ray --out FILE (rows of earlier runs kept)",
              "rows": rows, "peak_resident_KiB_per_image": growth}
    print(json.dumps(result["peak_resident_KiB_per_image"]))
    if a.out:
        harness.save_json(a.out, result)


if __name__ == "__main__":
    main()
