"""Sanity checks and metrics from a peer's suite: Quantus (Hedstrom et al., JMLR 2023)
on the region heat map and pytorch-grad-cam's CAMs, the same images (issue 19).

    python -m benchmarks.quantus_eval --out docs [--models vgg,resnet,photos] [--images 30]
        [--cams Grad-CAM,Grad-CAM++] [--keep] [--tag zoo] [--threads 1]
        [--heatmap-method margin] [--heatmap-grid features] [--variants contribution,...]

Per model (the demo VGG and ResNet on Fashion-MNIST, and the real-size resnet18 of
:mod:`repinterp.demo.photos`), ``--images`` test images (the first that many of a seeded
permutation) with their predicted class as the target; references: 2,000 training
images (1,000 photos). ``zoo:NAME`` is an entry of :mod:`benchmarks.zoo` (e.g.
``zoo:fm_bn5``): the region maps split at the entry's layer and the CAMs on the same
layer's output (the feature block of a plain CNN, the last residual stage of a residual
net), 2,000 training images as references, ``--images`` test images drawn as for the
demo models. Explanations:

* **RI region heat map**: :class:`repinterp.metrics.QuantusExplainer` (``explain(x,
  target=y)`` of each image, its region's heat map; refitted on every model Quantus
  hands it); with the variant ``located`` (``--variants located``), an input whose
  target is its prediction is drawn with the region of the references' summary it
  falls in (``located=True``: how ``explain --summary`` explains a new image), so a
  perturbed copy keeps the original's region where it stays inside;
* **Grad-CAM, Grad-CAM++, Score-CAM** (``--cams``): pytorch-grad-cam on the demo split
  layer (the resnet18: ``layer4[-1]``, its region maps split at ``layer4.0``, the
  suggestion), each image's own map for its target.

The region map takes the library's defaults unless ``--heatmap-method`` /
``--heatmap-grid`` / ``--sampling`` say otherwise; ``--variants`` adds rows of other
settings to the same table (``METHOD[/GRID][/SAMPLING]``, e.g. ``contribution/head``),
each its own explainer on the same images.

Metrics, Quantus' own classes, each per image (paired bootstrap intervals against
Grad-CAM++ over the images):

* ``MPRT`` (Adebayo et al. 2018; ``skip_layers=True``: the trained model against the
  fully randomised one, Spearman correlation of the maps (:func:`spearman`: Quantus'
  own crashes when a map is constant); lower = the map depends on the weights);
* ``FaithfulnessCorrelation`` (``nr_runs=50``, ``subset_size`` = 5% of the pixels, black
  baseline; higher is better);
* ``PixelFlipping`` (``features_in_step``: the largest divisor of the pixel count up to
  2% of it, black baseline; the area under the class score curve, lower is better:
  computed from Quantus' curves with ``np.trapezoid`` and ``dx = 1`` as its
  ``calculate_auc`` does, since that calls ``np.trapz``, gone from numpy 2.4);
* ``MaxSensitivity`` (``nr_samples=10``, uniform noise of radius 0.2 in normalised
  units; lower is better);
* ``Sparseness`` (Gini index; higher = more concentrated).

Quantus' defaults otherwise. ``nr_samples`` and ``nr_runs`` are lower than Quantus'
defaults (200, 100) to keep the run in minutes on 2 cores; every method gets the same.
Writes ``quantus.json`` and ``quantus.md`` into ``--out`` (``--tag zoo``:
``quantus-zoo.json`` and ``quantus-zoo.md``, the markdown in one section per zoo split,
DEV and HELDOUT, stating the command of each model's run).
"""
from __future__ import annotations

import json
import shlex
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from benchmarks import harness
from benchmarks.protocol import CAM_METHODS, own_cam
from repinterp.metrics import QuantusExplainer, paired_ci

METRICS = ("MPRT", "FaithfulnessCorrelation", "PixelFlipping", "MaxSensitivity",
           "Sparseness")
#: which way is better for each metric
HIGHER_IS_BETTER = {"MPRT": False, "FaithfulnessCorrelation": True, "PixelFlipping": False,
                    "MaxSensitivity": False, "Sparseness": True}


ZOO_PREFIX = "zoo:"
#: the region map row's label (the library's defaults, or the settings given)
RI = "RI region heat map"


def load(name: str, n_images: int, seed: int = 0):
    """Model, split layer name, the CAMs' layer, references, evaluated images."""
    if name.startswith(ZOO_PREFIX):
        from benchmarks.zoo import load as zoo_load
        zm = zoo_load(name[len(ZOO_PREFIX):], train=False)
        g = torch.Generator().manual_seed(seed)
        refs = zm.train_images[torch.randperm(len(zm.train_images), generator=g)[:2000]]
        images = zm.test_images[torch.randperm(len(zm.test_images), generator=g)[:n_images]]
        return zm.model, zm.layer, zm.layer, refs, images
    if name == "photos":
        from repinterp.demo.photos import load_photo_model, photo_set
        model, _ = load_photo_model("resnet18", progress=False)
        refs = photo_set("train", 1000, seed=1).tensors()
        test = photo_set("test", 400, seed=2)
        idx = torch.randperm(400, generator=torch.Generator().manual_seed(seed))[:n_images]
        return model, "layer4.0", "layer4.1", refs, test.tensors(idx)
    from repinterp.demo.models import DEMO_LAYERS
    model, _ = harness.demo_model(name)
    x, xt = harness.fashion()
    g = torch.Generator().manual_seed(seed)
    refs = x[torch.randperm(len(x), generator=g)[:2000]]
    images = xt[torch.randperm(len(xt), generator=g)[:n_images]]
    return model, DEMO_LAYERS[name], DEMO_LAYERS[name], refs, images


def cam_explainer(method: str, layer: str):
    """pytorch-grad-cam as a Quantus ``explain_func``: each image's own CAM for its
    target, at ``layer`` of the model handed (MPRT hands a randomised copy)."""
    def explain(model, inputs, targets, **_):
        x = torch.as_tensor(np.asarray(inputs))
        maps = [own_cam(method, model, model.get_submodule(layer), x[i:i + 1], int(t))
                for i, t in enumerate(np.asarray(targets).reshape(-1))]
        return torch.cat(maps)[:, None].float().numpy()
    return explain


def spearman(a: np.ndarray, b: np.ndarray, batched: bool = False, **_) -> np.ndarray:
    """Spearman correlation of each pair of rows, NaN where a map is constant: what
    Quantus' ``correlation_spearman`` computes, which crashes on such a batch (scipy
    returns one float; ``'float' object has no attribute 'shape'``)."""
    from scipy.stats import rankdata
    a2, b2 = np.atleast_2d(a), np.atleast_2d(b)
    ra, rb = rankdata(a2, axis=1), rankdata(b2, axis=1)
    ra, rb = ra - ra.mean(1, keepdims=True), rb - rb.mean(1, keepdims=True)
    den = np.sqrt((ra ** 2).sum(1) * (rb ** 2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(den > 0, (ra * rb).sum(1) / den, np.nan)
    return out if batched else out[0]


def metrics(pixels: int):
    import quantus
    # PixelFlipping needs a step that divides the pixel count: the largest <= 2%
    step = max(d for d in range(1, max(1, pixels // 50) + 1) if pixels % d == 0)
    return {
        "MPRT": quantus.MPRT(skip_layers=True, return_last_correlation=True,
                             similarity_func=spearman, disable_warnings=True),
        "FaithfulnessCorrelation": quantus.FaithfulnessCorrelation(
            nr_runs=50, subset_size=max(1, pixels // 20), perturb_baseline="black",
            return_aggregate=False, disable_warnings=True),
        "PixelFlipping": quantus.PixelFlipping(
            features_in_step=step, perturb_baseline="black", disable_warnings=True),
        "MaxSensitivity": quantus.MaxSensitivity(
            nr_samples=10, lower_bound=0.2, disable_warnings=True),
        "Sparseness": quantus.Sparseness(disable_warnings=True),
    }


def variant(text: str) -> dict:
    """``"METHOD[/GRID][/SAMPLING][/located]"`` -> the explainer's keywords (an empty
    part or ``-``: the library's default; ``located``: each input drawn with the region
    of the references' summary it falls in, :class:`QuantusExplainer`'s ``located``)."""
    keys = ("heatmap_method", "heatmap_grid", "sampling")
    parts = text.split("/")
    located = parts[-1] == "located"
    parts = parts[:-1] if located else parts
    if len(parts) > len(keys):
        raise ValueError(f"a variant is METHOD[/GRID][/SAMPLING][/located], got {text!r}")
    out: dict = {k: v for k, v in zip(keys, parts, strict=False) if v and v != "-"}
    return {**out, "located": True} if located else out


def label(settings: dict) -> str:
    """The row of a region map with the interpreter keywords ``settings``."""
    if not settings:
        return RI
    return f"{RI} ({', '.join(f'{k}={v}' for k, v in settings.items())})"


def run_model(name: str, n_images: int, num_boundaries: int,
              cams: tuple[str, ...] = CAM_METHODS, settings: dict | None = None,
              variants: tuple[dict, ...] = ()) -> dict:
    model, layer_name, cam_layer, refs, images = load(name, n_images)
    with torch.no_grad():
        targets = model(images).argmax(1).numpy()
    x = images.numpy()
    h, w = images.shape[-2:]
    explainers: dict = {}
    for kw in (settings or {}, *variants):
        explainers[label(kw)] = QuantusExplainer(refs, layer_name,
                                                 num_boundaries=num_boundaries, **kw)
    for m in cams:
        explainers[m] = cam_explainer(m, cam_layer)
    out: dict = {"images": len(images), "references": len(refs), "layer": layer_name,
                 "scores": {}, "seconds": {}}
    if settings:
        out["settings"] = dict(settings)
    for method, explain in explainers.items():
        t0 = time.perf_counter()
        a = explain(model, x, targets)
        row = {}
        for metric, fn in metrics(h * w).items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.manual_seed(0)
                np.random.seed(0)
                try:
                    got = fn(model=model, x_batch=x, y_batch=targets, a_batch=a,
                             explain_func=explain, device="cpu")
                except AssertionError as e:        # Quantus refuses degenerate maps
                    out.setdefault("refused", {})[f"{method}: {metric}"] = str(e)[:200]
                    got = [float("nan")] * len(x)
            vals = got if not isinstance(got, dict) else next(iter(got.values()))
            if metric == "PixelFlipping" and np.ndim(vals) == 2:
                # the area under each curve, as Quantus' calculate_auc (dx = 1), which
                # calls np.trapz, gone from numpy 2.4
                vals = np.trapezoid(np.asarray(vals, dtype=np.float64), dx=1, axis=1)
            row[metric] = np.asarray(vals, dtype=np.float64).reshape(-1)[:len(x)].tolist()
        out["scores"][method] = row
        if hasattr(explain, "fallbacks_"):
            if method == RI or method == label(settings or {}):
                out["fallbacks"] = dict(explain.fallbacks_)
            else:
                out.setdefault("variant_fallbacks", {})[method] = dict(explain.fallbacks_)
        if getattr(explain, "located", False):
            out.setdefault("located", {})[method] = [explain.located_, explain.explained_]
        out["seconds"][method] = round(time.perf_counter() - t0, 1)
        print(name, method, {k: round(float(np.nanmean(v)), 4) for k, v in row.items()},
              out["seconds"][method], "s", flush=True)
    return out


INTRO = (": Quantus' own metric classes, the same images and targets for every method "
         "(see the script's docstring for the settings). Mean per image; in brackets "
         "the mean paired difference to Grad-CAM++ with its 95% bootstrap interval "
         "(images where either is undefined left out; an empty map makes "
         "MaxSensitivity infinite, counted apart). "
         "Better: MPRT lower (maps of the randomised model unlike the trained one's), "
         "FaithfulnessCorrelation higher, PixelFlipping lower, MaxSensitivity lower, "
         "Sparseness higher.")


def markdown(results: dict) -> str:
    lines = ["# Quantus on the region heat map and the CAMs", "",
             "Generated by `python -m benchmarks.quantus_eval --out docs` (`make evaluate`)"
             + INTRO, ""]
    for name, r in results.items():
        lines += section(name, r, "##")
    return "\n".join(lines)


def zoo_markdown(results: dict) -> str:
    """The zoo's results, DEV then HELDOUT (:mod:`benchmarks.zoo`), each model with the
    command that made it."""
    from benchmarks.zoo import DEV, HELDOUT
    lines = ["# Quantus on the zoo: the region heat map and the CAMs", "",
             "Generated by `python -m benchmarks.quantus_eval --tag zoo --out docs "
             "--models zoo:NAME,...` (each model's exact command below)" + INTRO,
             "", "Settings are chosen on the DEV models only; the HELDOUT models are run "
             "once, with the settings fixed on DEV, for reporting.", ""]
    groups = {"DEV": DEV, "HELDOUT": HELDOUT}
    for split, members in groups.items():
        names = [k for k in results if k.removeprefix(ZOO_PREFIX) in members]
        if names:
            lines += [f"## {split}", ""]
            for name in names:
                lines += section(name, results[name], "###")
    rest = [k for k in results
            if not any(k.removeprefix(ZOO_PREFIX) in m for m in groups.values())]
    for name in rest:
        lines += section(name, results[name], "##")
    return "\n".join(lines)


def section(name: str, r: dict, level: str) -> list[str]:
    """One model's table (``level``: its heading's ``#``)."""
    lines = [f"{level} {name} (split `{r['layer']}`, {r['images']} images, "
             f"{r['references']} references)", ""]
    if r.get("command"):
        lines += [f"`{r['command']}`", ""]
    lines += ["| method | " + " | ".join(METRICS) + " | seconds |",
              "|---|" + "---|" * (len(METRICS) + 1)]
    base = r["scores"]["Grad-CAM++"]
    for method, row in r["scores"].items():
        cells = []
        for m in METRICS:
            v = np.asarray(row[m], dtype=np.float64)
            bad = int(np.isinf(v).sum())      # MaxSensitivity of an empty map
            v = np.where(np.isinf(v), np.nan, v)
            cell = f"{np.nanmean(v):.3f}" if np.isfinite(v).any() else "-"
            if method != "Grad-CAM++" and np.isfinite(v).any():
                b = np.asarray(base[m], dtype=np.float64)
                d, lo, hi = paired_ci(v, np.where(np.isinf(b), np.nan, b))
                cell += f" ({d:+.3f} [{lo:+.3f}, {hi:+.3f}])"
            if bad:
                cell += f", {bad} infinite"
            cells.append(cell)
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {r['seconds'][method]} |")
    for what, why in r.get("refused", {}).items():
        lines.append(f"- Quantus refused {what}: {why}")
    if r.get("fallbacks"):
        lines.append(f"- Region maps replaced by a uniform map (Quantus refuses empty "
                     f"maps), over every call of the run: {r['fallbacks']}")
    for what, counts in r.get("variant_fallbacks", {}).items():
        lines.append(f"- {what}: uniform maps {counts}")
    for what, (located, explained) in r.get("located", {}).items():
        lines.append(f"- {what}: {located} of the {explained} inputs it drew over the run "
                     "(the images and every perturbed copy) fell in a region of the "
                     "summary and were drawn with it; the others with their own region")
    lines.append("")
    return lines


def main() -> None:
    p = harness.parser(__doc__)
    p.add_argument("--models", default="vgg,resnet,photos", type=harness.names)
    p.add_argument("--images", type=int, default=30)
    p.add_argument("--num-boundaries", type=int, default=50)
    harness.add_out(p, help="a folder")
    p.add_argument("--cams", default=",".join(CAM_METHODS),
                   help="the CAMs to compare (Score-CAM costs 512 passes per map on the "
                        "resnet18)")
    p.add_argument("--keep", action="store_true",
                   help="add to the models already in --out/quantus.json")
    p.add_argument("--tag", default=None,
                   help="write quantus-TAG.json / .md instead of quantus.json / .md "
                        "(zoo: the zoo's layout, a section per split)")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--heatmap-method", default=None,
                   help="the region map's heat map method (default: the library's)")
    p.add_argument("--heatmap-grid", default=None,
                   help="the region map's grid (default: the library's)")
    p.add_argument("--sampling", default=None,
                   help="the interpreter's boundary sampling (default: the library's)")
    p.add_argument("--variants", default="",
                   help="more region map rows: METHOD[/GRID][/SAMPLING],...")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    settings = {k: v for k, v in (("heatmap_method", a.heatmap_method),
                                  ("heatmap_grid", a.heatmap_grid),
                                  ("sampling", a.sampling)) if v}
    variants = tuple(variant(v) for v in a.variants.split(",") if v)
    stem = f"quantus-{a.tag}" if a.tag else "quantus"
    render = zoo_markdown if a.tag == "zoo" else markdown
    results = {}
    if a.keep and a.out:
        results = harness.read_results(Path(a.out) / f"{stem}.json", {})
    command = "python -m benchmarks.quantus_eval " + shlex.join(sys.argv[1:])
    for name in a.models:
        results[name] = run_model(name, a.images, a.num_boundaries,
                                  tuple(c for c in a.cams.split(",") if c), settings,
                                  variants)
        if a.tag:
            results[name]["command"] = command
        if a.out:
            harness.write_results(a.out, f"{stem}.json", results, f"{stem}.md",
                                  render(results))
    print(json.dumps({k: {m: {s: float(np.nanmean(v)) for s, v in row.items()}
                          for m, row in r["scores"].items()} for k, r in results.items()}))


if __name__ == "__main__":
    main()
