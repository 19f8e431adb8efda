"""Smooth heads and a small ViT on Fashion-MNIST (issue 21): tangent boundaries measured.

The demo's VGG with its classifier's ReLUs replaced by SiLU, GELU or Hardswish (and one
with LayerNorm before a GELU), trained as the demo is (3 epochs, the same settings and
seed), and a small vision transformer (torchvision's ``VisionTransformer``, patch 4 on
28x28, 4 blocks, width 64) trained the same way. For each: the demo's summary (10,000
training images, |Q| = 200, coverage 0.9, at most 6 regions per class) and on the
10,000 test images the pooled held-out purity (fidelity) and the share in a region; then
ROAD (pytorch-grad-cam, percentiles 20-80, combined) of the region heat map of each of
``--images`` test images (its own region, |Q| = 50) against Grad-CAM++ at the split
layer (with a reshape transform for the ViT's tokens), paired bootstrap intervals.

    python -m benchmarks.smooth_heads --out docs [--images 50] [--only silu,vit]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from benchmarks import harness
from repinterp import RepresentativeInterpreter
from repinterp.app.outputs import atomic_path, write_json
from repinterp.app.stats import heldout_figures
from repinterp.core.copies import inference_mode
from repinterp.demo.data import cache_dir, load_fashion_mnist
from repinterp.demo.models import (
    FashionVGG,
    evaluate_accuracy,
    load_demo_model,
    train_classifier,
)
from repinterp.metrics import paired_ci, road


class GrayViT(nn.Module):
    """torchvision's VisionTransformer on 1x28x28 images (the gray channel repeated)."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        from torchvision.models.vision_transformer import VisionTransformer
        self.vit = VisionTransformer(image_size=28, patch_size=4, num_layers=4, num_heads=4,
                                     hidden_dim=64, mlp_dim=128, num_classes=num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vit(x.expand(-1, 3, -1, -1))


def smooth_vgg(kind: str) -> nn.Module:
    """The demo VGG with its classifier's ReLUs replaced."""
    model = FashionVGG()
    layers = list(model.classifier)
    act = {"silu": nn.SiLU, "gelu": nn.GELU, "hardswish": nn.Hardswish,
           "layernorm": nn.GELU}[kind]
    out = []
    for m in layers:
        if isinstance(m, nn.ReLU):
            if kind == "layernorm":
                out.append(nn.LayerNorm(out[-1].out_features))
            out.append(act())
        else:
            out.append(m)
    model.classifier = nn.Sequential(*out)
    return model


#: name -> (builder, split layer, Grad-CAM++ layer path, reshape for tokens)
ROWS = {
    "relu": (None, "features", "features", None),
    "silu": (lambda: smooth_vgg("silu"), "features", "features", None),
    "gelu": (lambda: smooth_vgg("gelu"), "features", "features", None),
    "hardswish": (lambda: smooth_vgg("hardswish"), "features", "features", None),
    "layernorm": (lambda: smooth_vgg("layernorm"), "features", "features", None),
    "vit": (GrayViT, "vit.encoder.layers.encoder_layer_2",
            "vit.encoder.layers.encoder_layer_2", "tokens"),
}


def tokens_to_map(t: torch.Tensor) -> torch.Tensor:
    """A ViT's tokens [n, 1 + 49, D] as [n, D, 7, 7] (pytorch-grad-cam's reshape)."""
    from repinterp.core.heatmap import token_grid
    return token_grid(t)


def trained(name: str, epochs: int) -> tuple[nn.Module, dict]:
    """The row's model, trained as the demo is and cached."""
    build = ROWS[name][0]
    if build is None:
        model, meta = load_demo_model("vgg", progress=False)
        return model, {"test_accuracy": meta["test_accuracy"], "train_seconds":
                       meta["train_seconds"], "weights": meta["weights"]}
    path = cache_dir() / "models" / f"smooth-{name}-e{epochs}-s0.pt"
    meta_path = path.with_suffix(".json")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build()
        if path.exists() and meta_path.exists():
            model.load_state_dict(torch.load(path, weights_only=True))
            return model.eval(), json.loads(meta_path.read_text())
        x, y = load_fashion_mnist("train")
        xt, yt = load_fashion_mnist("test")
        t0 = time.perf_counter()
        train_classifier(model, x, y, epochs=epochs, seed=0, progress=True)
    meta = {"test_accuracy": evaluate_accuracy(model, xt, yt),
            "train_seconds": round(time.perf_counter() - t0, 1), "epochs": epochs}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(model.state_dict(), tmp)
    write_json(meta_path, meta)
    return model.eval(), meta


def gradcampp(model: nn.Module, layer: str, images: torch.Tensor, cls: torch.Tensor,
              tokens: bool) -> torch.Tensor:
    from pytorch_grad_cam import GradCAMPlusPlus
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    kw = {"reshape_transform": tokens_to_map} if tokens else {}
    with inference_mode(model), GradCAMPlusPlus(model, [model.get_submodule(layer)],
                                                **kw) as cam:
        out = cam(images, targets=[ClassifierOutputTarget(int(c)) for c in cls])
    model.zero_grad(set_to_none=True)
    return torch.as_tensor(out)


def run(name: str, a: argparse.Namespace) -> dict:
    _, layer, cam_layer, tokens = ROWS[name]
    model, meta = trained(name, a.epochs)
    x, xt = harness.fashion()
    refs = harness.draw(x, a.references)
    t0 = time.perf_counter()
    interp = RepresentativeInterpreter(model, layer, num_boundaries=a.num_boundaries,
                                       seed=0, progress=False).fit(refs)
    summary = interp.summarize(coverage=0.9, max_regions=6)
    feats = interp.features(xt)
    held = heldout_figures(summary.regions, feats, interp.predict_features(feats))
    seconds = round(time.perf_counter() - t0, 1)
    # ROAD on the first `images` test images: each one's own region, against Grad-CAM++
    images = xt[:a.images]
    cls = interp.predict(images)
    small = RepresentativeInterpreter(model, layer, num_boundaries=50, seed=0,
                                      progress=False).fit(refs[:5000])
    ri = torch.cat([small.heatmap(small.explain(images[i]), images[i:i + 1])
                    for i in range(len(images))])
    cam = gradcampp(model, cam_layer, images, cls, tokens == "tokens")
    r_ri = road(model, images, ri, cls)["combined"]
    r_cam = road(model, images, cam, cls)["combined"]
    row = {"head": name, "layer": layer, "tangent": interp.approximate_,
           "test_accuracy": meta["test_accuracy"], "train_seconds": meta["train_seconds"],
           "regions": len(summary.regions),
           "heldout_purity": held["pooled_purity"],
           "heldout_share_in_a_region": held["share_in_a_region"],
           "reference_fidelity": float(sum(r.size * r.purity for r in summary.regions)
                                       / max(1, sum(r.size for r in summary.regions))),
           "summary_seconds": seconds,
           "road_ri": float(np.mean(r_ri)), "road_gradcampp": float(np.mean(r_cam)),
           "road_ri_minus_gradcampp": paired_ci(np.asarray(r_ri), np.asarray(r_cam))}
    harness.emit(row)
    return row


def markdown(rows: list[dict], a: argparse.Namespace) -> str:
    lines = ["# Smooth heads and a small ViT: tangent boundaries, measured", "",
             "Generated by `python -m benchmarks.smooth_heads --out docs` (2 CPU cores). "
             "Each model trained as the demo is (3 epochs, seed 0; the ReLU row is the "
             f"demo VGG itself); summary of {a.references} training images, |Q| = "
             f"{a.num_boundaries}, coverage 0.9, at most 6 regions per class; held-out: the "
             "10,000 test images. ROAD combined (higher is better) of each of the first "
             f"{a.images} test images' own region heat map (|Q| = 50, 5,000 references) "
             "and of Grad-CAM++ at the same layer; in brackets the paired difference and "
             "its 95% bootstrap interval.", "",
             "| head | boundaries | test acc. | regions | held-out purity | in a region | "
             "ROAD RI | ROAD Grad-CAM++ | RI - Grad-CAM++ |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        d = r["road_ri_minus_gradcampp"]
        lines.append(
            f"| {r['head']} | {'tangent' if r['tangent'] else 'exact'} | "
            f"{100 * r['test_accuracy']:.2f}% | {r['regions']} | "
            f"{100 * r['heldout_purity']:.2f}% | {100 * r['heldout_share_in_a_region']:.1f}% "
            f"| {r['road_ri']:.3f} | {r['road_gradcampp']:.3f} | "
            f"{d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}] |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = harness.parser(__doc__)
    harness.add_out(p, help="a folder")
    p.add_argument("--images", type=int, default=50)
    p.add_argument("--references", type=int, default=10000)
    p.add_argument("--num-boundaries", type=int, default=200)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--only", default=",".join(ROWS), type=harness.names)
    a = p.parse_args()
    out = Path(a.out) if a.out else None
    done: dict[str, dict] = {}
    if out:
        done = {r["head"]: r for r in harness.read_results(out / "smooth-heads.json",
                                                           {"rows": []})["rows"]}
    for name in a.only:
        done[name] = run(name, a)
        if out:                                  # after each row: a crash keeps the rest
            rows = [done[k] for k in ROWS if k in done]
            harness.write_results(out, "smooth-heads.json",
                                  {"rows": rows, "images": a.images,
                                   "references": a.references,
                                   "num_boundaries": a.num_boundaries},
                                  "smooth-heads.md", markdown(rows, a))


if __name__ == "__main__":
    main()
