"""Heat maps of a trained real-size model (issue 19): a torchvision resnet18 trained from
scratch on Fashion-MNIST objects pasted on real photographs with a planted mark
(:mod:`repinterp.demo.photos`), region heat maps at several splits against
pytorch-grad-cam's Grad-CAM, Grad-CAM++ and Score-CAM on the same images.

    python -m benchmarks.photo_heatmaps --out docs [--images 30] [--references 1500]

Every test image is explained by its own region (``explain(image)``, |Q| = 50) at each
split (the two grids of ``layer3`` draw the same regions; the seconds of the second are
its fit and maps only); the CAMs take ``layer4[-1]`` (their usual ResNet layer) and the
predicted class. Per image: deletion and insertion areas (blur fill, 10 steps;
:func:`repinterp.metrics.deletion_insertion`), ROAD combined (pytorch-grad-cam, the
percentiles below), *roughness* (mean ``|m - blur(m)|`` over mean ``m``, blur sigma =
one feature-map cell: a grid of dots scores high, a smooth blob low), and on the marked
images predicted as class 0 (the class the mark stands for) the share of heat on the mark
and whether the hottest pixel is on it (pointing game). Means with paired bootstrap
intervals against Grad-CAM++. Writes ``photo-heatmaps.json``, ``photo-heatmaps.md`` and
``photo-heatmaps.png`` (a few images and their maps) into ``--out``.
"""
from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks import harness
from benchmarks.protocol import CAM_METHODS, own_cam
from repinterp import RepresentativeInterpreter
from repinterp.app.outputs import write_bytes
from repinterp.demo.photos import CLASS_NAMES, load_photo_model, photo_set
from repinterp.metrics import blur, deletion_insertion, heat_share, paired_ci, road

#: (row name, split layer, heat map grid)
VARIANTS = (("RI layer3, feature grid (before)", "layer3", "features"),
            ("RI layer3, head grid", "layer3", "head"),
            ("RI layer4.0", "layer4.0", "head"))
PERCENTILES = (20, 40, 60, 80)


def roughness(heat: torch.Tensor, sigma: float) -> torch.Tensor:
    """Per map: ``mean |m - blur(m)| / mean m`` (NaN for an all-zero map)."""
    h = heat.double()[:, None]
    diff = (h - blur(h, sigma)).abs().flatten(1).mean(1)
    mean = h.flatten(1).mean(1)
    return torch.where(mean > 0, diff / mean.clamp_min(1e-300),
                       torch.full_like(mean, float("nan")))


def figure(images: torch.Tensor, maps: dict[str, torch.Tensor], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from repinterp.demo.photos import IMAGENET_MEAN, IMAGENET_STD
    raw = (images * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
           + torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)).clamp(0, 1)
    cols = ["image", *maps]
    fig, axes = plt.subplots(len(images), len(cols), figsize=(2 * len(cols), 2 * len(images)))
    for i in range(len(images)):
        for j, name in enumerate(cols):
            ax = axes[i, j]
            ax.imshow(raw[i].permute(1, 2, 0).numpy())
            if name != "image":
                ax.imshow(maps[name][i].numpy(), cmap="jet", alpha=0.5, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name.replace(" (before)", "\n(before)").replace(", ", ",\n"),
                             fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    write_bytes(path, buf.getvalue())


def main() -> None:
    p = harness.parser(__doc__)
    p.add_argument("--images", type=int, default=30)
    p.add_argument("--references", type=int, default=1500)
    p.add_argument("--num-boundaries", type=int, default=50)
    harness.add_out(p, help="a folder")
    a = p.parse_args()
    model, meta = load_photo_model("resnet18")
    refs = photo_set("train", a.references, seed=1).tensors()
    test = photo_set("test", 400, seed=2)
    xt = test.tensors()
    with torch.no_grad():
        pred = torch.cat([model(xt[i:i + 50]).argmax(1) for i in range(0, len(xt), 50)])
    # the evaluated images: marked class-0 predictions first (the pointing game), then
    # the others in order, `images` in all
    marked0 = (test.marked & (pred == 0)).nonzero()[:, 0]
    rest = (~(test.marked & (pred == 0))).nonzero()[:, 0]
    n_marked = min(len(marked0), a.images // 3)
    idx = torch.cat([marked0[:n_marked], rest[:a.images - n_marked]])
    images, cls = xt[idx], pred[idx]
    size = tuple(images.shape[-2:])
    maps: dict[str, torch.Tensor] = {}
    seconds: dict[str, float] = {}
    regions: dict[str, list] = {}                # one explain per image and layer
    for name, layer, grid in VARIANTS:
        t0 = time.perf_counter()
        interp = RepresentativeInterpreter(model, layer, a.num_boundaries, heatmap_grid=grid,
                                           progress=False).fit(refs)
        if layer not in regions:
            regions[layer] = [interp.explain(images[i]) for i in range(len(images))]
        maps[name] = torch.cat([interp.heatmap(r, images[i:i + 1])
                                for i, r in enumerate(regions[layer])])
        seconds[name] = round(time.perf_counter() - t0, 1)
        print(name, seconds[name], "s", flush=True)
    layer4 = model.layer4[-1]
    for m in CAM_METHODS:
        t0 = time.perf_counter()
        maps[m] = torch.cat([own_cam(m, model, layer4, images[i:i + 1], int(cls[i]))
                             for i in range(len(images))]).double()
        seconds[m] = round(time.perf_counter() - t0, 1)
    fill = blur(images, sigma=8.0)
    mark = test.mask()
    cell = size[0] / 10                                    # a layer3 cell, in pixels
    per: dict[str, dict[str, np.ndarray]] = {}
    for name, heat in maps.items():
        di = deletion_insertion(model, images, heat.float(), cls, steps=10, fill=fill)
        r = road(model, images, heat, cls, percentiles=PERCENTILES)
        on = heat_share(heat[:n_marked], mark).numpy()
        flat = heat[:n_marked].flatten(1).argmax(1)
        hit = mark.flatten()[flat].double().numpy()
        per[name] = {"deletion_auc": di["deletion_auc"].numpy(),
                     "insertion_auc": di["insertion_auc"].numpy(),
                     "road_combined": np.asarray(r["combined"], dtype=np.float64),
                     "roughness": roughness(heat, cell).numpy(),
                     "heat_on_mark": on, "pointing_game": hit}
        print(name, {k: float(np.nanmean(v)) for k, v in per[name].items()}, flush=True)
    base = per["Grad-CAM++"]
    table = {name: {k: {"mean": float(np.nanmean(v)),
                        "vs_gradcampp": paired_ci(v, base[k]) if name != "Grad-CAM++" else None}
                    for k, v in vals.items()} for name, vals in per.items()}
    result = {"model": meta, "images": len(images), "marked_class0_images": n_marked,
              "references": a.references, "num_boundaries": a.num_boundaries,
              "percentiles": PERCENTILES, "seconds": seconds, "table": table,
              "mark_area_share": float(mark.double().mean())}
    harness.emit(result["table"])
    if a.out:
        out = Path(a.out)
        harness.write_results(out, "photo-heatmaps.json", result, "photo-heatmaps.md",
                              markdown(result))
        pick = [0, 1, n_marked, n_marked + 1, n_marked + 2]
        figure(images[pick], {k: v[pick] for k, v in maps.items()},
               out / "photo-heatmaps.png")


def markdown(r: dict) -> str:
    m = r["model"]
    lines = ["# Heat maps of a trained real-size ResNet", "",
             f"Generated by `python -m benchmarks.photo_heatmaps --out docs`. Model: "
             f"torchvision resnet18 (random initialisation), trained {m['epochs']} epochs "
             f"on {m['n_train']} images of {m['size']} px ({', '.join(CLASS_NAMES)} pasted "
             f"on photographs; {m['train_seconds']:.0f} s on 2 cores); test accuracy "
             f"{100 * m['test_accuracy']:.1f}% (unmarked {100 * m['clean_test_accuracy']:.1f}%"
             f"); a marked image of another class becomes a {CLASS_NAMES[0]} "
             f"{100 * m['marked_others_to_class0']:.0f}% of the time. {r['images']} test "
             f"images ({r['marked_class0_images']} marked and predicted {CLASS_NAMES[0]}: "
             f"the pointing game), {r['references']} references, |Q| = "
             f"{r['num_boundaries']}. The mark covers {100 * r['mark_area_share']:.1f}% of "
             "an image.", "",
             "Means; in brackets the mean paired difference to Grad-CAM++ and its 95% "
             "bootstrap interval. Deletion: lower is better; insertion, ROAD combined, heat "
             "on the mark, pointing game: higher is better; roughness: a grid of dots is "
             "rough.", "",
             "| heat map | deletion | insertion | ROAD combined | roughness | heat on mark | "
             "pointing game | seconds |", "|---|---|---|---|---|---|---|---|"]
    keys = ("deletion_auc", "insertion_auc", "road_combined", "roughness", "heat_on_mark",
            "pointing_game")
    for name, row in r["table"].items():
        cells = []
        for k in keys:
            c = row[k]
            ci = c["vs_gradcampp"]
            cells.append(f"{c['mean']:.3f}" + (f" ({ci[0]:+.3f} [{ci[1]:+.3f}, {ci[2]:+.3f}])"
                                                if ci else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {r['seconds'][name]} |")
    lines += ["", "![Heat maps of the trained resnet18](photo-heatmaps.png)", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
