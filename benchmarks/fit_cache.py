"""What the fit cache saves: a second ``repinterp explain --image`` on an unchanged folder
against the first one and against a bare forward pass of the same images; and what a
whole ``repinterp summarize`` costs against that forward, with and without the purity
contract.

A torchvision resnet18 (random weights, 3 classes, saved as a state dict) and 240
generated 224x224 JPEG images in 3 class folders; timed in one run, each a whole
command in a fresh process, as a user runs it: ``repinterp --version`` (start-up), a
bare forward of the 240 images (a script that loads the model and the images and runs
them through it in batches of 32), ``repinterp explain --image`` with an empty cache
(the first, which fits and saves) and again (the second, which restores), and
``repinterp summarize`` (report included; the cache off) with the default purity
contract and with ``--target-purity none``: ``--rounds`` rounds of the six, interleaved,
each figure the fastest of its rounds. Then once: the
command with the cache switched off, and an instrumented second command that says
where its time goes. Writes JSON to ``--out``.

    python -m benchmarks.fit_cache --out docs/fit-cache.json
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image

import repinterp

FORWARD = r"""
import sys
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image

root, weights = Path(sys.argv[1]), sys.argv[2]
model = torchvision.models.resnet18(num_classes=3)
model.load_state_dict(torch.load(weights, weights_only=True))
model.eval()
mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
files = sorted(root.rglob("*.jpg"))
x = torch.stack([torch.from_numpy(np.asarray(Image.open(f).convert("RGB"), np.float32)
                                  / 255).permute(2, 0, 1) for f in files])
x = (x - mean) / std
with torch.no_grad():
    logits = torch.cat([model(x[i:i + 32]) for i in range(0, len(x), 32)])
print(len(files), tuple(logits.shape))
"""

# the second command again, with the time of each phase: the names of the public
# functions it goes through, wrapped before the command runs
PHASES = r"""
import json, sys, time
start = time.perf_counter()
import repinterp.cli as cli
from repinterp.app import explain, fit_cache, pipeline
from repinterp.core.interpreter import RepresentativeInterpreter
times = {"import repinterp and torch": time.perf_counter() - start}

def timed(name, fn):
    def run(*args, **kwargs):
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            times[name] = times.get(name, 0.0) + time.perf_counter() - t
    return run

pipeline.open_model = timed("open the model", pipeline.open_model)
pipeline.layer_for = timed("suggest the layer", pipeline.layer_for)
pipeline.load_images = timed("decode the query", pipeline.load_images)
fit_cache.model_digest = timed("cache key: the model's digest", fit_cache.model_digest)
fit_cache.file_sha256 = timed("cache key: the images' SHA-256", fit_cache.file_sha256)
fit_cache.FitCache.open = staticmethod(timed("cache key (all)", fit_cache.FitCache.open))
fit_cache.FitCache.load = timed("read and check the cache file", fit_cache.FitCache.load)
RepresentativeInterpreter.fit = timed("restore: split, check 4 references",
                                      RepresentativeInterpreter.fit)
RepresentativeInterpreter.explain = timed("explain the query (greedy)",
                                          RepresentativeInterpreter.explain)
explain.write_report = timed("write the report", explain.write_report)
code = cli.main(sys.argv[1:])
times["total in the process"] = time.perf_counter() - start
print(json.dumps({"code": code, "times": times}))
"""


def make_images(root: Path, n: int, size: int, seed: int = 0) -> None:
    """``n`` JPEG photos-to-be in 3 class folders: smooth colour fields, each class
    with its own tint and a bright square where its class puts it, plus noise."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        cls = i % 3
        low = rng.random((7, 7, 3)).astype(np.float32)
        field = np.asarray(Image.fromarray((low * 255).astype(np.uint8)).resize(
            (size, size), Image.Resampling.BICUBIC), np.float32) / 255
        field[..., cls] = 0.6 * field[..., cls] + 0.4
        s = size // 4
        y, x = (cls * size // 3, rng.integers(0, size - s))
        field[y:y + s, x:x + s] = 1.0
        field += rng.normal(0, 0.05, field.shape).astype(np.float32)
        path = root / f"class{cls}" / f"img{i:04d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((field.clip(0, 1) * 255).astype(np.uint8)).save(path, quality=90)


def random_model(data: Path, calibrate: int = 48) -> torch.nn.Module:
    """resnet18 with random weights, 3 classes, its output bias set so that the images
    are not all predicted as one class (random weights favour one): minus the mean
    logits of ``calibrate`` of them."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3).eval()
    files = sorted(data.rglob("*.jpg"))[:calibrate]
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = torch.stack([torch.from_numpy(np.asarray(Image.open(f).convert("RGB"), np.float32)
                                      / 255).permute(2, 0, 1) for f in files])
    with torch.no_grad():
        model.fc.bias -= model((x - mean) / std).mean(0)
    return model


def timed_run(argv: list[str], env: dict) -> tuple[float, str]:
    """Wall-clock seconds of a whole command, and its output (it must succeed)."""
    t = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if done.returncode != 0:
        raise SystemExit(f"{argv[:3]} failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds, done.stdout.strip()


def repinterp_command() -> list[str]:
    """The ``repinterp`` command of this environment (its console script)."""
    script = Path(sys.executable).parent / "repinterp"
    return [str(script)] if script.exists() else [sys.executable, "-m", "repinterp.cli"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="docs/fit-cache.json", help="the JSON written")
    ap.add_argument("--images", type=int, default=240)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--rounds", type=int, default=2, help="rounds of the four timed "
                    "commands, interleaved (each figure is its fastest)")
    ap.add_argument("--workdir", default=None, help="where the images and the cache go "
                    "(default: a temporary folder, removed at the end)")
    a = ap.parse_args()
    work = Path(a.workdir or tempfile.mkdtemp(prefix="repinterp-fit-cache-"))
    try:
        result = run(work, a)
    finally:
        if a.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["seconds"], indent=2))
    print(json.dumps(result["ratios"], indent=2))


def run(work: Path, a: argparse.Namespace) -> dict:
    data = work / "data"
    make_images(data, a.images, a.size)
    make_images(work / "query", 1, a.size, seed=1)
    query = next((work / "query").rglob("*.jpg"))
    weights = work / "resnet18-3.pt"
    torch.save(random_model(data).state_dict(), weights)
    env = {**os.environ, "REPINTERP_FIT_CACHE": str(work / "user-cache")}
    load = os.getloadavg()
    cmd = repinterp_command()
    explain = ["explain", "--arch", "resnet18", "--weights", str(weights), "--num-classes",
               "3", "--data", str(data), "--image", str(query), "--quiet"]
    summarize = ["summarize", "--arch", "resnet18", "--weights", str(weights),
                 "--num-classes", "3", "--data", str(data), "--quiet", "--no-cache"]
    runs: dict[str, list[float]] = {k: [] for k in (
        "startup (repinterp --version)", "bare forward (load + forward, a script)",
        "first explain (empty cache)", "second explain (cache hit)",
        "summarize (purity contract)", "summarize --target-purity none")}
    for r in range(a.rounds):           # interleaved: a busy machine slows each alike
        cache = work / f"cache{r}"
        for name, argv in zip(runs, (
                [*cmd, "--version"],
                [sys.executable, "-c", FORWARD, str(data), str(weights)],
                [*cmd, *explain, "--out", str(work / f"first{r}"), "--cache", str(cache)],
                [*cmd, *explain, "--out", str(work / f"second{r}"), "--cache", str(cache)],
                [*cmd, *summarize, "--out", str(work / f"summary{r}")],
                [*cmd, *summarize, "--out", str(work / f"paper{r}"), "--target-purity",
                 "none"]), strict=True):
            seconds, output = timed_run(argv, env)
            runs[name].append(seconds)
            if name == "second explain (cache hit)":
                said = output
    nocache, _ = timed_run([*cmd, *explain, "--out", str(work / "plain"), "--no-cache"], env)
    _, phases = timed_run([sys.executable, "-c", PHASES, *explain, "--out",
                           str(work / "phases"), "--cache", str(work / "cache0")], env)
    same = all((work / "plain" / f).read_bytes() == (work / k / f).read_bytes()
               for k in ("first0", "second0") for f in ("summary.json", "members.csv"))
    best = {k: min(v) for k, v in runs.items()}
    best["explain --no-cache (once)"] = nocache
    forward = best["bare forward (load + forward, a script)"]
    first, second = best["first explain (empty cache)"], best["second explain (cache hit)"]
    contract, paper = (best["summarize (purity contract)"],
                       best["summarize --target-purity none"])
    return {
        "command": "python -m benchmarks.fit_cache --out " + a.out,
        "setup": {"images": a.images, "size": a.size, "model": "torchvision resnet18, "
                  "random weights, 3 classes (state dict)",
                  "explain": "repinterp " + " ".join(explain).replace(str(work), "WORK"),
                  "explain_said": said.replace(str(work), "WORK"),
                  "repinterp": repinterp.__version__, "torch": torch.__version__,
                  "torchvision": torchvision.__version__, "cpus": os.cpu_count(),
                  "torch_threads": torch.get_num_threads(),
                  "load_average_before": [round(v, 2) for v in load],
                  "load_average_after": [round(v, 2) for v in os.getloadavg()],
                  "rounds": a.rounds},
        "seconds": {k: round(v, 3) for k, v in best.items()},
        "runs": {k: [round(v, 3) for v in vs] for k, vs in runs.items()},
        "ratios": {"second / first": round(second / first, 3),
                   "first / bare forward": round(first / forward, 3),
                   "second / bare forward": round(second / forward, 3),
                   "no-cache / bare forward": round(nocache / forward, 3),
                   "summarize / bare forward": round(contract / forward, 3),
                   "summarize without the contract / bare forward": round(paper / forward,
                                                                          3)},
        "cache_bytes": sum(p.stat().st_size for p in (work / "cache0").iterdir()),
        "same_report": same,
        "second_run_phases": {k: round(v, 3) for k, v in
                              json.loads(phases.splitlines()[-1])["times"].items()},
    }

if __name__ == "__main__":
    main()
