"""Planted-shortcut benchmark: does a summary find the images a model decides for the
wrong reason? After dcbench's correlation slices (Eyuboglu et al., ICLR 2022).

    python benchmarks/shortcut.py --out docs [--settings all] [--seeds 0,1,2,3,4]
        [--references 10000] [--report out/shortcut]

For each setting of :data:`repinterp.demo.shortcut.SETTINGS` (a mark pasted on 90% of the
training images of one class and 2% of the others; a demo VGG trained on them, seeded and
cached), 10,000 reference images from the training split and the 10,000 test images carry
the mark at random (30%). The *slice*: test images predicted as the class that carry the
mark. Every method is fitted on the references and scored on the test images predicted as
the class:

* **RI, separate logics**: ``summarize(separate_logics=True)``; its best-matching region
  of the class (highest precision@25; ties: AUROC): members ranked by semantic distance.
* **RI, separate logics (best logic)**: the union of one logic's regions, ranked region
  by region.
* **RI, default summary**: the same with ``separate_logics=False``.
* **k-means** (scikit-learn) on the reference features of the class, k = 2..8; test
  images join their nearest centre, ranked by distance to it; the best cluster over every
  k (same matching rule).
* **Euclidean neighbours** of the marked reference of the class with the largest margin.

Metrics (``repinterp.metrics``): precision@10/25/100 of the ranked members, the AUROC of
membership (inside / outside; for the neighbours, minus the distance), and the share of
the heat map's mass on the mark over the slice images among the region's top 25: the
region heat map, and each image's own Grad-CAM++ (pytorch-grad-cam) on the same images.
The mark's area share is the level a heat map blind to the mark would get on average.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from repinterp import RepresentativeInterpreter
from repinterp.app.io import write_json, write_text
from repinterp.demo.models import DEMO_LAYERS
from repinterp.demo.shortcut import SETTINGS, load_shortcut_model, mark_mask, shortcut_split
from repinterp.metrics import auroc, heat_share, precision_at_k

KS = (10, 25, 100)


def scores(ranked: torch.Tensor, member: torch.Tensor, in_slice: torch.Tensor,
           continuous: torch.Tensor | None = None) -> dict:
    """Precision@k of ``ranked`` and AUROC of ``member`` (or ``continuous``) against the
    slice, all over the evaluated images."""
    out = {f"p@{k}": precision_at_k(ranked, in_slice, k) for k in KS}
    out["auroc"] = auroc(member.double() if continuous is None else continuous, in_slice)
    out["size"] = int(member.sum())
    return out


def best(candidates: list[dict]) -> dict:
    return max(candidates, key=lambda r: (r["p@25"], r["auroc"]))


def run_setting(setting, references: int, seed: int, progress: bool) -> dict:
    from protocol import own_cam
    from sklearn.cluster import KMeans

    model, meta = load_shortcut_model(setting, progress=progress)
    x, _, marked_train = shortcut_split(setting, "train", seed=seed)
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:references]
    refs, ref_marked = x[idx], marked_train[idx]
    xt, _, marked = shortcut_split(setting, "test", seed=seed)
    c = setting.cls
    start = time.perf_counter()
    interp = RepresentativeInterpreter(model, DEMO_LAYERS["vgg"], num_boundaries=200,
                                       seed=seed, progress=False).fit(refs)
    test_feats = interp.features(xt, progress=False)
    test_pred = interp.predict_features(test_feats)
    pop = (test_pred == c).nonzero()[:, 0]            # the evaluated images
    feats, in_slice = test_feats[pop], marked[pop]
    fit_s = time.perf_counter() - start
    rows: dict[str, dict] = {}
    regions: dict[str, object] = {}
    for name, sep in (("RI, separate logics", True), ("RI, default summary", False)):
        t0 = time.perf_counter()
        summary = interp.summarize(coverage=0.9, max_regions=6, classes=[c],
                                   separate_logics=sep)
        cands = []
        for region in summary.regions:
            ranked, _ = region.rank_features(feats)
            row = scores(ranked, region.contains_features(feats).cpu(), in_slice)
            row.update(regions=len(summary.regions), logic=region.logic,
                       seconds=round(time.perf_counter() - t0 + fit_s, 1))
            cands.append((row, region))
        row, region = max(cands, key=lambda rc: (rc[0]["p@25"], rc[0]["auroc"]))
        rows[name], regions[name] = row, region
        if sep:                 # a whole logic: the union of its regions, region by region
            logics = []
            for j in sorted({r.logic for r in summary.regions}):
                mine = [r for r in summary.regions if r.logic == j]
                member = torch.zeros(len(pop), dtype=torch.bool)
                ranked = []
                for r in mine:
                    inside, _ = r.rank_features(feats)
                    ranked += [i for i in inside.tolist() if not member[i]]
                    member[inside] = True
                logics.append(dict(scores(torch.tensor(ranked, dtype=torch.long), member,
                                          in_slice), logic=j, regions=len(mine)))
            rows["RI, separate logics (best logic: its regions together)"] = best(logics)
    # k-means on the reference features of the class, best cluster over k = 2..8
    ref_c = interp.features_[(interp.predictions_ == c).nonzero()[:, 0]].numpy()
    cands = []
    for k in range(2, 9):
        km = KMeans(k, n_init=4, random_state=seed).fit(ref_c)
        d = torch.from_numpy(km.transform(feats.numpy()))
        lab = d.argmin(1)
        for j in range(k):
            mem = (lab == j).nonzero()[:, 0]
            ranked = mem[torch.argsort(d[mem, j], stable=True)]
            cands.append(dict(scores(ranked, lab == j, in_slice), k=k))
    rows["k-means (best k in 2..8)"] = best(cands)
    # Euclidean neighbours of the marked reference of the class with the largest margin
    of_c = (interp.predictions_ == c) & ref_marked
    seed_ref = int(torch.where(of_c, interp.margins_, -torch.inf).argmax())
    dist = torch.cdist(interp.features_[seed_ref][None], feats)[0]
    ranked = torch.argsort(dist, stable=True)
    rows["Euclidean neighbours of a marked seed"] = scores(
        ranked, torch.zeros(len(pop), dtype=torch.bool), in_slice, continuous=-dist)
    # heat on the mark: slice images among the separate-logics region's top 25
    mask = mark_mask(setting)
    area = float(mask.double().mean())
    top = regions["RI, separate logics"].rank_features(feats)[0][:25]
    on = top[in_slice[top]]
    images = xt[pop[on]]
    layer = model.get_submodule(DEMO_LAYERS["vgg"])
    heat = {"RI region heat map (separate logics)":
            interp.heatmap(regions["RI, separate logics"], images),
            "RI region heat map (default summary)":
            interp.heatmap(regions["RI, default summary"], images),
            "Grad-CAM++, each image's own": own_cam("Grad-CAM++", model, layer, images, c)}
    mass = {k: float(np.nanmean(heat_share(v, mask).numpy())) if len(images) else None
            for k, v in heat.items()}
    return {"setting": setting.name, "class": c, "model": {k: meta[k] for k in (
        "clean_test_accuracy", "marked_test_accuracy", "marked_others_to_class")},
        "evaluated": len(pop), "slice": int(in_slice.sum()),
        "slice_share": float(in_slice.double().mean()), "rows": rows,
        "mark_area_share": area, "heat_on_mark": mass, "heat_images": len(images)}


def write_debug_report(setting, references: int, seed: int, out: Path,
                       screenshot: Path | None) -> dict:
    """The report a user debugging this model would read: every class, separate logics,
    the true labels, held-out figures on the marked test split; file names end in
    ``-marked`` where the mark was pasted. Optionally a screenshot (headless chromium)."""
    import subprocess

    from repinterp.app.report import write_report
    from repinterp.app.stats import heldout_figures
    from repinterp.demo.data import FASHION_CLASSES

    model, _ = load_shortcut_model(setting, progress=False)
    x, y, marked = shortcut_split(setting, "train", seed=seed)
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:references]
    interp = RepresentativeInterpreter(model, DEMO_LAYERS["vgg"], num_boundaries=200,
                                       seed=seed, progress=False).fit(x[idx])
    summary = interp.summarize(coverage=0.9, max_regions=6, separate_logics=True)
    xt, _, _ = shortcut_split(setting, "test", seed=seed)
    feats = interp.features(xt, progress=False)
    held = heldout_figures(summary.regions, feats, interp.predict_features(feats))
    names = [f"train[{i}]" + ("-marked" if bool(marked[i]) else "") for i in idx.tolist()]
    path = write_report(out, summary, x[idx], heatmap=interp.heatmap, stats=held["stats"],
                        names=names, labels=y[idx], class_names=FASHION_CLASSES,
                        predictions=interp.predictions_,
                        title=f"repinterp: planted shortcut {setting.name}",
                        meta={"setting": setting.name, "references": references,
                              "separate_logics": True})
    if screenshot is not None:
        subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu",
                        "--hide-scrollbars", "--window-size=1280,1500",
                        f"--screenshot={screenshot.resolve()}", path.resolve().as_uri()],
                       check=True, capture_output=True, timeout=120)
    data = json.loads((out / "summary.json").read_text())
    return {"regions": len(summary.regions),
            "flagged": [(r["region"], c["name"], r["flags"]) for c in data["classes"]
                        for r in c["regions"] if r["flags"]]}


def markdown(results: list[dict]) -> str:
    """Per setting: every method's means over the seeds and its p@25 on each seed, the
    heat on the mark, and the model's figures."""
    seeds = sorted({r["seed"] for r in results})
    lines = ["# Planted-shortcut benchmark", "",
             f"Generated by `python benchmarks/shortcut.py --seeds "
             f"{','.join(map(str, seeds))}`: means over {len(seeds)} seeds (the reference "
             "draw, the random marks and the interpreter's seed; one model per setting).",
             ""]
    for name in dict.fromkeys(r["setting"] for r in results):
        runs = [r for r in results if r["setting"] == name]
        m, first = runs[0]["model"], runs[0]
        lines += [f"## {name} (class {first['class']})", "",
                  f"Model: clean test accuracy {100 * m['clean_test_accuracy']:.1f}%, marked "
                  f"{100 * m['marked_test_accuracy']:.1f}%; a marked test image of another "
                  f"class is predicted as the class {100 * m['marked_others_to_class']:.1f}% "
                  f"of the time. Evaluated: about {first['evaluated']} test images "
                  f"predicted as the class, {100 * np.mean([r['slice_share'] for r in runs]):.0f}% "
                  "of them marked (the slice).", "",
                  "| method | p@10 | p@25 | p@100 | AUROC | p@25 per seed |",
                  "|---|---|---|---|---|---|"]
        for method in first["rows"]:
            vals = {k: [r["rows"][method][k] for r in runs] for k in ("p@10", "p@25", "p@100",
                                                                      "auroc")}
            lines.append(f"| {method} | " + " | ".join(
                f"{np.mean(vals[k]):.{3 if k == 'auroc' else 2}f}" for k in vals) +
                f" | {' '.join(f'{v:.2f}' for v in vals['p@25'])} |")
        area = first["mark_area_share"]
        lines += ["", f"Heat on the mark (slice images among the separate-logics region's "
                  f"top 25; the mark is {100 * area:.1f}% of the image; mean, and per seed, "
                  "as a multiple of its area):", ""]
        for method in first["heat_on_mark"]:
            vals = [r["heat_on_mark"][method] for r in runs]
            lines.append(f"- {method}: {100 * np.mean(vals):.1f}% ("
                         + " ".join(f"{v / area:.1f}x" for v in vals) + ")")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--settings", default="all", help="comma-separated names, or all")
    p.add_argument("--references", type=int, default=10000)
    p.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds")
    p.add_argument("--out", default=None)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--report", default=None, help="also write the debugging report of "
                   "the first setting here (and, with --out, a screenshot into --out)")
    a = p.parse_args()
    chosen = [s for s in SETTINGS if a.settings == "all" or s.name in a.settings.split(",")]
    seeds = [int(v) for v in a.seeds.split(",")]
    results = []
    for s in chosen:
        for seed in seeds:
            r = dict(run_setting(s, a.references, seed, not a.quiet), seed=seed)
            print(json.dumps({"setting": r["setting"], "seed": seed, "rows": {
                k: {m: v[m] for m in ("p@25", "auroc")} for k, v in r["rows"].items()},
                "heat_on_mark": r["heat_on_mark"]}), flush=True)
            results.append(r)
    if a.out:
        write_json(Path(a.out) / "shortcut.json", results)
        write_text(Path(a.out) / "shortcut-results.md", markdown(results))
    if a.report:
        shot = Path(a.out) / "shortcut-report.png" if a.out else None
        print(json.dumps(write_debug_report(chosen[0], a.references, seeds[0],
                                            Path(a.report), shot)), flush=True)


if __name__ == "__main__":
    main()
