"""Every heat map on the same images, scored by the metrics the field now uses.

    python -m benchmarks.fidelity --out docs [--seeds 150] [--images 5]

For each demo architecture and each reported seed (the same disjoint seeds as
``evaluate.py``), the images are RI's retrieval (the ``--images`` unseen test images
nearest to the seed inside its region); on exactly these images every method draws its
heat map: RI's region heat map, Grad-CAM / Grad-CAM++ / Score-CAM with the seed's channel
weights reused, and each image's own Grad-CAM / Grad-CAM++ / Score-CAM (pytorch-grad-cam).
The other region-only heat maps (``repinterp.core.heatmap.METHODS``) are scored too.
Scores per image (``repinterp.metrics``): ROAD combined (pytorch-grad-cam, noisy linear
imputation, percentiles ``--percentiles``), deletion and insertion areas (10 steps, mean
fill), Average Drop and Average Increase with the mean fill and with a blur fill (keep
20%). Per seed the mean
over its images; RI against each baseline: the mean paired difference over seeds with a
95% bootstrap interval.
"""
from __future__ import annotations

import time

import numpy as np
import torch
from tqdm.auto import tqdm

from benchmarks import harness
from benchmarks.protocol import CAM_METHODS, cam_weights, own_cam, reused_cam
from repinterp import RepresentativeInterpreter
from repinterp.core.heatmap import METHODS as HEATMAPS
from repinterp.demo.models import DEMO_LAYERS
from repinterp.metrics import (
    average_drop_increase,
    blur,
    deletion_insertion,
    keep_top,
    paired_ci,
    road,
)

#: metric -> True when higher is better
METRICS = {"ROAD combined": True, "deletion AUC": False, "insertion AUC": True,
           "deletion AUC, blur fill": False, "insertion AUC, blur fill": True,
           "AD, mean fill": False, "AD, blur fill": False, "AI, mean fill": True,
           "AI, blur fill": True}
#: The rule that picks the region heat map per architecture, fixed before any run of it:
#: on the development seeds only (disjoint from the reported ones), the region-only map
#: with the lowest mean rank among the region-only maps over these metrics (ties: the
#: library default first).
RULE_METRICS = ("ROAD combined", "deletion AUC", "insertion AUC", "AD, blur fill")


def score(model, x, heat, cls, percentiles) -> dict[str, np.ndarray]:
    di = deletion_insertion(model, x, heat, cls, steps=10, fill=0.0)
    fill = blur(x)
    di_blur = deletion_insertion(model, x, heat, cls, steps=10, fill=fill)
    ad_mean, ai_mean = average_drop_increase(model, x, keep_top(x, heat, 0.2, 0.0), cls)
    ad_blur, ai_blur = average_drop_increase(model, x, keep_top(x, heat, 0.2, fill), cls)
    return {"ROAD combined": road(model, x, heat, cls, percentiles=percentiles)["combined"],
            "deletion AUC": di["deletion_auc"].numpy(),
            "insertion AUC": di["insertion_auc"].numpy(),
            "deletion AUC, blur fill": di_blur["deletion_auc"].numpy(),
            "insertion AUC, blur fill": di_blur["insertion_auc"].numpy(),
            "AD, mean fill": ad_mean.numpy(), "AD, blur fill": ad_blur.numpy(),
            "AI, mean fill": ai_mean.numpy(), "AI, blur fill": ai_blur.numpy()}


def choose_heatmap(means: dict[str, dict[str, float]], default: str = "margin") -> tuple[
        str, dict[str, float]]:
    """:data:`RULE_METRICS` mean rank of each region-only map (``means``: map -> metric
    -> mean over the development seeds); the lowest wins, ties by the default first."""
    names = [default] + sorted(n for n in means if n != default)
    ranks = {n: 0.0 for n in names}
    for m in RULE_METRICS:
        higher = METRICS[m]
        order = sorted(names, key=lambda n: -means[n][m] if higher else means[n][m])
        for r, n in enumerate(order, 1):
            ranks[n] += r / len(RULE_METRICS)
    return min(names, key=lambda n: ranks[n]), ranks


def develop(arch: str, refs, x_test, seeds, images: int, percentiles, progress: bool,
            retrieval: str) -> dict:
    """Every region-only heat map scored on the development seeds, and the choice."""
    model, _ = harness.demo_model(arch)
    interp = RepresentativeInterpreter(model, DEMO_LAYERS[arch], progress=False).fit(refs)
    feats = interp.features(x_test, progress=False)
    per: dict[str, dict[str, list[float]]] = {}
    for s in tqdm(seeds, desc=f"{arch} (development)", disable=not progress, leave=False):
        region = interp.explain(s)
        idx = _retrieve(interp, region, s, feats, images, retrieval)
        if len(idx) == 0:
            continue
        for variant in HEATMAPS:
            heat = interp.heatmap(region, x_test[idx], variant).float()
            for metric, values in score(model, x_test[idx], heat, region.predicted_class,
                                        percentiles).items():
                per.setdefault(variant, {}).setdefault(metric, []).append(
                    float(np.mean(values)))
    means = {v: {m: float(np.mean(x)) for m, x in d.items()} for v, d in per.items()}
    chosen, ranks = choose_heatmap(means)
    return {"seeds": len(seeds), "means": means, "mean_ranks": ranks, "chosen": chosen}


def _retrieve(interp, region, s: int, feats, images: int, retrieval: str) -> torch.Tensor:
    """RI's nearest unseen images inside the region, or the seed's Euclidean neighbours
    in feature space (the CAMs' retrieval)."""
    if retrieval == "ri":
        return region.rank_features(feats)[0][:images]
    return torch.cdist(interp.features_[s][None], feats)[0].topk(
        images, largest=False).indices


def run(arch: str, refs, x_test, seeds, images: int, percentiles, progress: bool,
        retrieval: str = "ri", heatmap: str = "margin", grid: str = "features") -> dict:
    model, meta = harness.demo_model(arch)
    interp = RepresentativeInterpreter(model, DEMO_LAYERS[arch], heatmap_method=heatmap,
                                       heatmap_grid=grid, progress=False).fit(refs)
    layer = model.get_submodule(interp.layer_)
    feats = interp.features(x_test, progress=False)
    fmap = feats.reshape(-1, *interp.feature_shape_)
    size = tuple(x_test.shape[-2:])
    per_seed: dict[str, dict[str, list[float]]] = {}
    for s in tqdm(seeds, desc=arch, disable=not progress, leave=False):
        region = interp.explain(s)
        cls = region.predicted_class
        idx = _retrieve(interp, region, s, feats, images, retrieval)
        if len(idx) == 0:
            continue
        x = x_test[idx]
        maps = {"RI (region heat map)": interp.heatmap(region, x)}
        for variant in HEATMAPS if retrieval == "ri" else ():   # other region-only maps
            if variant != interp.heatmap_method:
                maps[f"RI variant: {variant}"] = interp.heatmap(region, x, variant)
        for cam in CAM_METHODS:
            w = cam_weights(cam, model, layer, refs[s], cls)
            maps[f"{cam} (seed's weights reused)"] = reused_cam(w, fmap[idx], size)
            maps[f"{cam} (own, per image)"] = own_cam(cam, model, layer, x, cls)
        for name, heat in maps.items():
            for metric, values in score(model, x, heat.float(), cls, percentiles).items():
                per_seed.setdefault(name, {}).setdefault(metric, []).append(
                    float(np.mean(values)))
    rows = {name: {m: float(np.mean(v)) for m, v in d.items()} for name, d in per_seed.items()}
    ri = "RI (region heat map)"
    comparisons = {}
    for name in per_seed:
        if name == ri:
            continue
        for metric, higher in METRICS.items():
            mean, lo, hi = paired_ci(np.array(per_seed[ri][metric]),
                                     np.array(per_seed[name][metric]))
            better = lo > 0 if higher else hi < 0
            comparisons[f"{name} | {metric}"] = {"diff": mean, "ci": [lo, hi],
                                                 "ri_better": better}
    return {"test_accuracy": meta["test_accuracy"], "layer": interp.layer_, "heatmap": heatmap,
            "seeds": len(per_seed[ri]["ROAD combined"]), "means": rows,
            "comparisons": comparisons, "per_seed": per_seed}


def render(res: dict) -> str:
    s = res["settings"]
    lines = ["# Fidelity on the same images (generated by `benchmarks/fidelity.py`)", "",
             f"Command: `python -m benchmarks.fidelity --seeds {s['seeds']} --images "
             f"{s['images']} --percentiles {','.join(map(str, s['percentiles']))}"
             f"{' --retrieval euclidean' if s.get('retrieval') == 'euclidean' else ''}`. "
             f"{s['references']} references; per seed, "
             + (f"the {s['images']} unseen test images nearest to the seed in feature space "
                "(Euclidean)" if s.get("retrieval") == "euclidean" else
                f"RI's {s['images']} nearest unseen test images inside its region")
             + f", the same images for every method. Wall time {res['seconds']:.0f} s.", ""]
    for arch, r in res["models"].items():
        dev = res.get("development", {}).get(arch)
        lines += [f"## {arch} (split at `{r['layer']}`, test accuracy "
                  f"{100 * r['test_accuracy']:.2f}%, {r['seeds']} seeds)", ""]
        if dev:
            lines += [f"Region heat map: `{r['heatmap']}`, chosen on {dev['seeds']} "
                      "development seeds (disjoint from the reported ones) by the fixed rule: "
                      f"lowest mean rank over {', '.join(RULE_METRICS)} among the region-only "
                      "maps. Mean ranks: " + ", ".join(
                          f"`{k}` {v:.2f}" for k, v in sorted(dev["mean_ranks"].items(),
                                                              key=lambda kv: kv[1])) + ".", ""]
        lines += [
"| heat map | " + " | ".join(f"{m} ({'higher' if h else 'lower'} is "
                                                 "better)" for m, h in METRICS.items()) + " |",
                  "|---" * (len(METRICS) + 1) + "|"]
        for name, means in r["means"].items():
            lines.append(f"| {name} | " + " | ".join(f"{means[m]:.4f}" for m in METRICS) + " |")
        lines += ["", "RI minus each baseline, mean over seeds [95% bootstrap CI]; **bold** "
                  "where RI is significantly better:", "",
                  "| baseline | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 1)
                  + "|"]
        for name in r["means"]:
            if name == "RI (region heat map)":
                continue
            cells = []
            for m in METRICS:
                c = r["comparisons"][f"{name} | {m}"]
                text = f"{c['diff']:+.4f} [{c['ci'][0]:+.4f}, {c['ci'][1]:+.4f}]"
                cells.append(f"**{text}**" if c["ri_better"] else text)
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    p = harness.parser(__doc__)
    harness.add_out(p, "docs")
    p.add_argument("--seeds", type=int, default=150)
    p.add_argument("--images", type=int, default=5)
    p.add_argument("--percentiles", default="20,40,60,80", type=harness.ints)
    p.add_argument("--archs", default="vgg,resnet", type=harness.names)
    p.add_argument("--retrieval", choices=["ri", "euclidean"], default="ri",
                   help="whose images: RI's region members (default) or the Euclidean "
                   "neighbours of the seed in feature space (the CAMs' retrieval)")
    p.add_argument("--heatmap-grid", choices=["head", "features"], default="features",
                   help="the region heat map's grid (RepresentativeInterpreter."
                   "heatmap_grid)")
    harness.add_quiet(p)
    p.add_argument("--dev-seeds", type=int, default=40, help="development seeds (at most "
                   "40: the ones evaluate.py keeps apart)")
    p.add_argument("--no-develop", action="store_true", help="skip the development seeds "
                   "and keep the library's default region heat map")
    a = p.parse_args()
    if not 0 < a.dev_seeds <= 40:
        p.error("--dev-seeds must be in 1..40")
    start = time.perf_counter()
    x_train, x_test = harness.fashion()
    n_refs, n_dev = 10000, 40          # as evaluate.py: the same disjoint reported seeds
    refs = harness.draw(x_train, n_refs)
    dev_seeds, seeds = harness.reported_seeds(n_refs, n_dev, a.seeds)
    percentiles = tuple(a.percentiles)
    res = {"settings": {"references": n_refs, "seeds": a.seeds, "images": a.images,
                        "percentiles": list(percentiles), "retrieval": a.retrieval,
                        "heatmap_grid": a.heatmap_grid},
           "models": {}}
    res["development"] = {}
    for arch in a.archs:
        chosen = "margin"
        if not a.no_develop:
            dev = develop(arch, refs, x_test, dev_seeds[:a.dev_seeds], a.images,
                          percentiles,
                          not a.quiet, a.retrieval)
            res["development"][arch] = dev
            chosen = dev["chosen"]
        res["models"][arch] = run(arch, refs, x_test, seeds, a.images, percentiles,
                                  not a.quiet, a.retrieval, chosen, a.heatmap_grid)
    res["seconds"] = time.perf_counter() - start
    suffix = "" if a.retrieval == "ri" else "-euclidean"
    harness.write_results(a.out, f"fidelity{suffix}.json", res,
                          f"fidelity-results{suffix}.md", render(res))


if __name__ == "__main__":
    main()
