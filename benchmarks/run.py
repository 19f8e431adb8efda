"""Performance benchmark: every figure is a ratio measured in the same run.

    make bench            # = python -m benchmarks.run --out docs

Writes docs/performance.md, docs/performance.json and docs/performance-scaling.png.
Uses the cached demo VGG model and Fashion-MNIST (training split as references, test
split for the heat-map comparison).
"""
from __future__ import annotations

import copy
import io
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks import harness
from repinterp import RepresentativeInterpreter
from repinterp.app.outputs import write_bytes

BATCH = 256


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - start, out


def bare_forward(features, images, memory_format=torch.contiguous_format):
    """The plain loop a user would write: no_grad, batches, nothing kept."""
    with torch.no_grad():
        for i in range(0, len(images), BATCH):
            features(images[i:i + BATCH].contiguous(memory_format=memory_format))


def channels_last(module):
    return copy.deepcopy(module).to(memory_format=torch.channels_last)


def fit(model, refs, **kw):
    return RepresentativeInterpreter(model, "features", seed=0, progress=False,
                                     batch_size=BATCH, **kw).fit(refs)


def bench_fit(model, refs, repeats=3):
    """Interleaved runs; the fastest of each: fit, the plain forward of
    ``model.features``, and that forward on a channels-last copy (batches converted)."""
    bare, bare_cl, ours = [], [], []
    feats_cl = channels_last(model.features)
    for _ in range(repeats):
        bare.append(timed(bare_forward, model.features, refs)[0])
        bare_cl.append(timed(bare_forward, feats_cl, refs, torch.channels_last)[0])
        ours.append(timed(fit, model, refs)[0])
    return min(ours), min(bare), min(bare_cl)


def bench_explain(interp, n_seeds=10):
    seeds = torch.randperm(len(interp.features_), generator=torch.Generator().manual_seed(5))
    return statistics.median(timed(interp.explain, int(s))[0] for s in seeds[:n_seeds])


SHARED_MAX_N = 10000  # shared sampling makes many small regions: measured up to here


def heatmaps_ours(interp, summary, images):
    """Features, prediction, region lookup and region heat map for every image."""
    maps = []
    regions = summary.regions
    first = {}
    k = 0
    for c in summary.classes:
        first[c.cls] = k
        k += len(c.regions)
    for i in range(0, len(images), BATCH):
        x = images[i:i + BATCH]
        feats = interp.features(x, progress=False, flat=False)
        preds = interp.predict_features(feats.flatten(1))
        where = summary.locate_features(feats.flatten(1), preds)
        # an image outside every region of its class gets the class's largest region
        where = torch.where(where >= 0, where,
                            torch.tensor([first[int(p)] for p in preds.tolist()]))
        out = torch.empty(len(x), *x.shape[-2:])
        for r in where.unique().tolist():
            sel = (where == r).nonzero()[:, 0]
            out[sel] = regions[r].heatmap_features(feats[sel], tuple(x.shape[-2:]))
        maps.append(out)
    return torch.cat(maps)


def heatmaps_cam(cam_cls, model, images):
    import contextlib

    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    out = []
    with cam_cls(model, [model.features]) as cam, contextlib.redirect_stderr(io.StringIO()):
        cam.batch_size = BATCH
        for i in range(0, len(images), BATCH):
            x = images[i:i + BATCH]
            with torch.no_grad():
                preds = model(x).argmax(1).tolist()
            out.append(torch.as_tensor(cam(x, targets=[ClassifierOutputTarget(p)
                                                       for p in preds])))
    model.eval()
    return torch.cat(out)


MEMORY_CHILD = r"""
import json, sys, threading, time, os, torch
from repinterp import RepresentativeInterpreter
from repinterp.demo.data import load_fashion_mnist
from repinterp.demo.models import load_demo_model
n, dtype = int(sys.argv[1]), sys.argv[2]
model, _ = load_demo_model(progress=False)
x, _ = load_fashion_mnist("train")
refs = x[:n].clone(); del x
RepresentativeInterpreter(model, "features", progress=False).fit(refs[:300])  # warm up
page = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * page
peak, stop = [0], [False]
def watch():
    while not stop[0]:
        peak[0] = max(peak[0], rss()); time.sleep(0.002)
before = rss()
t = threading.Thread(target=watch); t.start()
it = RepresentativeInterpreter(model, "features", progress=False,
                               feature_dtype=getattr(torch, dtype)).fit(refs)
stop[0] = True; t.join()
peak[0] = max(peak[0], rss())
model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
print(json.dumps({"n": n, "dtype": dtype, "before": before, "peak": peak[0],
                  "fit_peak_bytes": peak[0] - before, "features_bytes":
                  it.features_.numel() * it.features_.element_size(),
                  "store_bytes": it.nbytes_, "model_bytes": model_bytes}))
"""


def bench_memory(n, dtype):
    out = harness.run_script(MEMORY_CHILD, str(n), dtype, capture_output=True, text=True,
                             check=True)
    return harness.last_json(out.stdout)


def plot_scaling(rows):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ns = [r["n"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for key, label in [("fit_s", "fit"), ("bare_s", "bare feature forward"),
                       ("summary_s", "summary (95% per class)"),
                       ("explain_s", "explain (median)")]:
        ax.plot(ns, [r[key] for r in rows], marker="o", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("references N")
    ax.set_ylabel("seconds")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    ax.set_title("repinterp scaling, demo VGG, 2 CPU cores")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def main() -> None:
    parser = harness.parser(__doc__)
    harness.add_out(parser, "docs")
    parser.add_argument("--sizes", default="1000,5000,10000,20000,30000,60000",
                        type=harness.ints)
    parser.add_argument("--heatmap-images", type=int, default=10000)
    parser.add_argument("--scorecam-images", type=int, default=256)
    parser.add_argument("--real-size-n", type=int, default=1000,
                        help="images for the real-size section (ResNets at 224x224)")
    parser.add_argument("--only", choices=["demo", "real-size", "index"], default=None,
                        help="run one section; the others' figures are kept from the last "
                        "performance.json")
    parser.add_argument("--index-sizes", default="70000,1000000",
                        help="N of the region index's scale section")
    args = parser.parse_args()
    out = Path(args.out)
    previous = harness.read_results(out / "performance.json", {})
    res = dict(previous)
    if args.only in (None, "real-size"):
        res["real_size"] = bench_real_size(args.real_size_n)
    if args.only in (None, "index"):
        res["index"] = bench_index(args.index_sizes)
    if args.only in (None, "demo"):
        res.update(bench_demo(args))
    for line in regressions(previous, res):
        print(line, flush=True)
    harness.write_results(out, "performance.json", res, "performance-results.md", render(res))
    if "scaling" in res:
        write_bytes(out / "performance-scaling.png", plot_scaling(res["scaling"]))


# run-to-run noise of the ratios on these shared machines: a change beyond it is reported
NOISE = 0.25


def ratios(res: dict) -> dict[str, float]:
    """Every ratio (a key ``A_over_B``) of a performance.json, by a stable path: rows of
    a list are named by their ``n`` / ``arch`` / ``mode``, not their position."""
    out: dict[str, float] = {}

    def walk(obj, path: str) -> None:
        if isinstance(obj, dict):
            for k, v in obj.items():
                if "_over_" in k and isinstance(v, (int, float)):
                    out[f"{path}/{k}"] = float(v)
                else:
                    walk(v, f"{path}/{k}")
        elif isinstance(obj, list):
            for i, v in enumerate(obj):
                name = "|".join(str(v[k]) for k in ("arch", "mode", "n")
                                if isinstance(v, dict) and k in v) or str(i)
                walk(v, f"{path}[{name}]")

    walk(res, "")
    return out


def regressions(before: dict, after: dict) -> list[str]:
    """The ratios that got worse than the committed results by more than :data:`NOISE`
    (``X_over_ours``: higher is better, every other ratio: lower is better)."""
    old, new = ratios(before), ratios(after)
    lines = []
    for path in sorted(old.keys() & new.keys()):
        a, b = old[path], new[path]
        higher_better = path.endswith("_over_ours")
        worse = b < a / (1 + NOISE) if higher_better else b > a * (1 + NOISE)
        if worse and a > 0:
            lines.append(f"WORSE than committed: {path} {a:.4g} -> {b:.4g}")
    return lines


REAL_SIZE = [  # (arch, mode, with timings)
    ("resnet18", "float32", True),
    ("resnet50", "float32", True),
    ("resnet50", "bfloat16", False),
    ("resnet50", "mmap", False),
]


def bench_real_size(n: int) -> list[dict]:
    """``benchmarks.real_size`` in a fresh process per row (its own peak memory)."""
    rows = []
    for arch, mode, timing in REAL_SIZE:
        args = ["--arch", arch, "--n", str(n), "--mode", mode]
        out = harness.run_module("real_size", *args, *([] if timing else ["--no-timing"]),
                                 capture_output=True, text=True, check=True)
        row = harness.last_json(out.stdout)
        row["peak_over_store"] = row["fit_peak_bytes"] / row["store_bytes"]
        row["anon_peak_over_store"] = row["fit_peak_anon_bytes"] / row["store_bytes"]
        rows.append(row)
        harness.emit(row)
    return rows


def bench_index(sizes: str) -> dict:
    """``index_quality`` (index vs per-seed summary on 60k), ``index_scale``
    (throughput, driver memory, summary time against N) and ``summary_passes``, each in
    its own process."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for key, module, extra in [
                ("quality", "index_quality", []),
                ("scale", "index_scale", ["--sizes", sizes]),
                ("passes", "summary_passes", [])]:
            target = Path(tmp).resolve() / f"{key}.json"
            harness.run_module(module, "--out", str(target), *extra, check=True)
            out[key] = json.loads(target.read_text())
    return out


def render_index(res: dict) -> list[str]:
    q, sc = res["quality"], res["scale"]
    lines = ["## Region index (issue 10)", "",
             f"Quality: Fashion-MNIST, demo VGG, {q['references']:,} training images as "
             f"references, coverage {q['coverage']}, at most {q['max_regions']} regions per "
             "class; held-out figures on the 10,000 test images (`benchmarks/"
             "index_quality.py`).", "",
             "| summary | regions | held-out pooled purity | test images in a region | "
             "median region size | summary s | index build s |", "|---|---|---|---|---|---|---|"]
    for r in q["rows"]:
        build = f"{r['index_seconds']:.1f}" if "index_seconds" in r else "-"
        lines.append(f"| {r['method']} | {r['regions']} | {r['heldout_pooled_purity']:.4f} | "
                     f"{r['heldout_share_in_a_region']:.4f} | {r['median_region_size']:.0f} | "
                     f"{r['seconds']:.1f} | {build} |")
    lines += ["", f"Scale (`benchmarks/index_scale.py`, bank {sc['bank']}): the index "
              "built in-process against a bare forward pass of the whole model over the "
              "same images (batch 256); `summarize --index` in a fresh process per engine "
              "(in-process, or the rows on 2 Ray actors): peak anonymous resident memory "
              "of the driver minus before, the workers' peak, and `explain --index` of an "
              "image outside the index (one forward, then the greedy).", "",
              "| N | index / bare forward | engine | load s | summary s (regions) | driver "
              "peak MiB | worker peak MiB | explain s | regions equal to in-process |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in sc["rows"]:
        build = (f"{r['local_over_bare']:.2f} ({r['index_local_s']:.0f} s / "
                 f"{r['bare_forward_s']:.0f} s)" if r.get("local_over_bare") else "-")
        for engine in ("local", "ray"):
            m = r.get(f"summary_{engine}")
            if m is None:
                continue
            workers = ("-" if not m.get("workers") else " / ".join(
                f"{w['peak_rss_bytes'] / 2**20:.0f}" for w in m["workers"]))
            same = {True: "yes", False: "no", None: "-"}[r.get(f"same_regions_{engine}")]
            lines.append(f"| {r['n']:,} | {build} | {engine} | {m['load_s']:.1f} | "
                         f"{m['summary_s']:.1f} ({m['regions']}) | "
                         f"{m['driver_peak_anon_bytes'] / 2**20:.0f} | {workers} | "
                         f"{m['explain_outside_s']:.2f} | {same} |")
    lines += ["", "Head passes per region of a summary (`benchmarks/summary_passes.py`, "
              "counted on the CPU: one seed at a time against every class's seeds in one "
              "set of passes):", "",
              "| model | regions | passes per region | search syncs per region | CPU s | "
              "regions differing |", "|---|---|---|---|---|---|"]
    for r in res["passes"]["rows"]:
        a, b = r["one_at_a_time"], r["every_class_at_once"]
        lines.append(f"| {r['model']} | {a['regions']} | {a['passes_per_region']:.1f} -> "
                     f"{b['passes_per_region']:.1f} | {a['search_syncs_per_region']:.1f} -> "
                     f"{b['search_syncs_per_region']:.1f} | {a['seconds_cpu']:.1f} -> "
                     f"{b['seconds_cpu']:.1f} | "
                     f"{r.get('regions_differing', 0)} |")
    return lines + [""]


def bench_demo(args) -> dict:
    """The demo VGG on Fashion-MNIST: scaling, heat maps, memory."""
    torch.manual_seed(0)
    model, meta = harness.demo_model()
    x, xt = harness.fashion()
    res = {"machine": f"{platform.machine()}, {os.cpu_count()} CPU threads, torch "
                      f"{torch.__version__}, {torch.get_num_threads()} torch threads",
           "model": f"demo VGG, test accuracy {meta['test_accuracy']:.4f}",
           "batch_size": BATCH, "num_boundaries": 50}

    # 1, 2, 3, 6: fit / explain / summary against N
    rows = []
    for n in args.sizes:
        refs = x[:n]
        fit_s, bare_s, bare_cl_s = bench_fit(model, refs, repeats=3)
        interp = fit(model, refs)
        # the head alone over every stored feature (a public call of the same pass)
        head_s = min(timed(interp.predict_features, interp.features_, logits=True)[0]
                     for _ in range(3))
        explain_s = bench_explain(interp)
        summary_s, summary = timed(interp.summarize, coverage=0.95, max_regions=10 ** 6)
        shared_s, shared_sum = float("nan"), None
        if n <= SHARED_MAX_N:
            shared = fit(model, refs, sampling="shared")
            shared_s, shared_sum = timed(shared.summarize, coverage=0.95, max_regions=10 ** 6)
        rows.append({"n": n, "fit_s": fit_s, "bare_s": bare_s, "fit_over_bare": fit_s / bare_s,
                     "bare_cl_s": bare_cl_s, "fit_over_bare_cl": fit_s / bare_cl_s,
                     "head_s": head_s, "head_over_bare_cl": head_s / bare_cl_s,
                     "explain_s": explain_s, "explain_over_fit": explain_s / fit_s,
                     "summary_s": summary_s, "summary_over_fit": summary_s / fit_s,
                     "summary_regions": len(summary.regions),
                     "shared_summary_s": shared_s, "shared_summary_over_fit": shared_s / fit_s,
                     "shared_summary_regions": len(shared_sum.regions) if shared_sum else None})
        harness.emit(rows[-1])
        if n == max(args.sizes):
            big_interp, big_summary = interp, summary
    res["scaling"] = rows

    # 4: heat maps for every test image, ours vs pytorch-grad-cam
    from pytorch_grad_cam import GradCAM, ScoreCAM
    imgs = xt[: args.heatmap_images]
    ours_s, ours = timed(heatmaps_ours, big_interp, big_summary, imgs)
    gc_s, _ = timed(heatmaps_cam, GradCAM, model, imgs)
    model_cl = channels_last(model)
    gc_cl_s, _ = timed(heatmaps_cam, GradCAM, model_cl,
                       imgs.contiguous(memory_format=torch.channels_last))
    sc_imgs = imgs[: args.scorecam_images]
    ours_small_s, _ = timed(heatmaps_ours, big_interp, big_summary, sc_imgs)
    sc_s, _ = timed(heatmaps_cam, ScoreCAM, model, sc_imgs)
    res["heatmaps"] = {"images": len(imgs), "ours_s": ours_s, "gradcam_s": gc_s,
                       "gradcam_over_ours": gc_s / ours_s, "gradcam_cl_s": gc_cl_s,
                       "gradcam_cl_over_ours": gc_cl_s / ours_s,
                       "scorecam_images": len(sc_imgs), "ours_small_s": ours_small_s,
                       "scorecam_s": sc_s, "scorecam_over_ours": sc_s / ours_small_s}
    harness.emit(res["heatmaps"])

    # 5: peak memory of fit at N = 60k
    mem = [bench_memory(60000, d) for d in ("float32", "float16")]
    for m in mem:
        m["peak_over_features_plus_model"] = m["fit_peak_bytes"] / (
            m["features_bytes"] + m["model_bytes"])
        per_image = m["fit_peak_bytes"] / m["n"]
        m["largest_n_24gib"] = int((24 * 2 ** 30 - m["before"]) / per_image)
    res["memory"] = mem
    harness.emit(mem)
    return res


def render_real_size(rows: list[dict]) -> list[str]:
    gib = 2 ** 30
    lines = ["## Real size: torchvision ResNets at 224x224, split at `layer3`", "",
             f"N = {rows[0]['n']} random 3x224x224 images; random convolutional weights and "
             "a final layer centred on them so that all 10 classes are predicted (no "
             "pretrained weights can be downloaded here); |Q| = 50; batch size "
             f"{rows[0]['batch_size']} (the automatic one); one process per row. Peak: "
             "resident memory sampled every 2 ms during `fit`, minus the resident memory "
             "before it (model and images loaded); for the memory-mapped store the "
             "anonymous part (its file pages are the kernel's cache).", "",
             "| model | store | fit / plain forward | explain / forward of 50 images "
             "(head passes) | store MiB | fit peak MiB (anonymous) | peak / store |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        timing = (f"{r['fit_over_forward']:.2f} ({r['fit_s']:.0f} s / {r['forward_s']:.0f} s)"
                  f" | {r['explain_over_forward50']:.2f} ({r['explain_s']:.1f} s / "
                  f"{r['forward50_s']:.1f} s, {r['head_passes']})"
                  if "fit_over_forward" in r else "not timed | not timed")
        ratio = r["anon_peak_over_store"] if r["mode"] == "mmap" else r["peak_over_store"]
        mib = {k: r[k] / 2 ** 20 for k in ("store_bytes", "fit_peak_bytes",
                                            "fit_peak_anon_bytes")}
        lines.append(f"| {r['arch']} | {r['mode']} | {timing} | {mib['store_bytes']:.0f} | "
                     f"{mib['fit_peak_bytes']:.0f} ({mib['fit_peak_anon_bytes']:.0f}) | "
                     f"{ratio:.2f} |")
    lines.append("")
    for r in rows:
        if r["arch"] != "resnet50":
            continue
        per_image = r["store_bytes"] / r["n"]
        fixed = (r["fit_peak_anon_bytes"] if r["mode"] == "mmap"
                 else r["fit_peak_bytes"] - r["store_bytes"])
        room = 24 * gib - r["rss_before_bytes"] - fixed
        if r["mode"] == "mmap":
            lines.append(f"- resnet50, memory-mapped float32 store: {per_image / 2**10:.0f} "
                         "KiB of disk per image; memory holds no features (per image only "
                         "its prediction, margin, logits and |Q| side values during an "
                         "explanation), so N is bounded by disk: "
                         f"{int(50 * 10**9 / per_image):,} images per 50 GB free.")
        else:
            lines.append(f"- resnet50, {r['mode']} store in memory: "
                         f"{per_image / 2**10:.0f} KiB per image; with the measured fixed "
                         f"part ({fixed / 2**20:.0f} MiB: private copies, one batch's "
                         "activations) and the process before fit, at most "
                         f"**{int(room / per_image):,} images in 24 GiB** (extrapolated).")
    return lines + [""]


def render(res: dict) -> str:
    if "scaling" not in res:
        return "\n".join(["# Performance results (generated by `make bench`)", "",
                          *(render_real_size(res["real_size"]) if "real_size" in res else []),
                          *(render_index(res["index"]) if "index" in res else [])])
    rows = res["scaling"]
    hm, mem = res["heatmaps"], res["memory"]
    lines = ["# Performance results (generated by `make bench`)", "",
             f"Machine: {res['machine']}. Model: {res['model']}. Batch size "
             f"{res['batch_size']}, |Q| = {res['num_boundaries']}. Every figure is a ratio "
             "of two timings taken in the same run; fit and the bare forwards are the "
             "fastest of 3 interleaved runs, explain the median over 10 seeds. Shared-mode "
             f"summaries are measured up to N = {SHARED_MAX_N}.", "",
             "| N | fit / bare forward | fit / bare forward, channels-last | head pass / bare "
             "channels-last | explain / fit | "
             "summary / fit (regions) | shared-mode summary / fit (regions) | fit s | "
             "explain ms | summary s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['n']} | {r['fit_over_bare']:.3f} | {r['fit_over_bare_cl']:.3f} | "
                     f"{r['head_over_bare_cl']:.3f} | "
                     f"{100 * r['explain_over_fit']:.2f}% "
                     f"| {r['summary_over_fit']:.2f} ({r['summary_regions']}) | "
                     + (f"{r['shared_summary_over_fit']:.2f} ({r['shared_summary_regions']}) | "
                        if r["shared_summary_regions"] else "not run | ") +
                     f"{r['fit_s']:.2f} | {1000 * r['explain_s']:.0f} | {r['summary_s']:.1f} |")
    lines += ["", f"Heat maps for {hm['images']} test images through the summary's regions "
              f"(N = {rows[-1]['n']}): ours {hm['ours_s']:.2f} s, pytorch-grad-cam Grad-CAM "
              f"{hm['gradcam_s']:.2f} s: **Grad-CAM / ours = {hm['gradcam_over_ours']:.2f}x**; "
              f"Grad-CAM on a channels-last copy of the model {hm['gradcam_cl_s']:.2f} s: "
              f"**{hm['gradcam_cl_over_ours']:.2f}x**. "
              f"Score-CAM on {hm['scorecam_images']} images: {hm['scorecam_s']:.2f} s vs ours "
              f"{hm['ours_small_s']:.2f} s: **{hm['scorecam_over_ours']:.0f}x**.", "",
              "| store | fit peak (MiB) | features + model (MiB) | ratio "
              "| largest N in 24 GiB (extrapolated) |",
              "|---|---|---|---|---|"]
    for m in mem:
        lines.append(f"| {m['dtype']} | {m['fit_peak_bytes'] / 2 ** 20:.0f} | "
                     f"{(m['features_bytes'] + m['model_bytes']) / 2 ** 20:.0f} | "
                     f"{m['peak_over_features_plus_model']:.2f} | {m['largest_n_24gib']:,} |")
    lines += ["", "![scaling](performance-scaling.png)", ""]
    if "real_size" in res:
        lines += render_real_size(res["real_size"])
    if "index" in res:
        lines += render_index(res["index"])
    return "\n".join(lines)


if __name__ == "__main__":
    main()
