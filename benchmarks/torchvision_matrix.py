"""The torchvision classifiers, where each is split, and the verdict on the head after
that layer (with what refuses it): checked by ``tests/test_torchvision_matrix.py``, used
by the real-size benchmarks (``gpu``, ``real_size``, ``smooth_224``), printed as the
README's table by ``python -m benchmarks.torchvision_matrix``."""
from __future__ import annotations

import torch
import torchvision
from torch import nn

from repinterp.core.copies import inference_mode
from repinterp.core.split import split_model

#: (name, layer, input size, mode, what makes it smooth); the layer is the one
#: ``repinterp.suggest_layer`` proposes (issue 19: one split layer in the README, this
#: table and the suggestion). "exact": piecewise-linear head, exact boundaries;
#: "tangent": smooth head, tangent boundaries (issue 21).
MATRIX = [
    ("resnet18", "layer4.0", 32, "exact", None),
    ("resnext50_32x4d", "layer4.1", 32, "exact", None),
    ("wide_resnet50_2", "layer4.1", 32, "exact", None),
    ("vgg11_bn", "features", 32, "exact", None),
    ("alexnet", "features", 64, "exact", None),
    ("densenet121", "features", 32, "exact", None),
    ("googlenet", "inception5a", 64, "exact", None),
    ("inception_v3", "Mixed_7b", 80, "exact", None),
    ("mobilenet_v2", "features.17", 32, "exact", None),
    ("mnasnet0_5", "layers.14", 32, "exact", None),
    ("shufflenet_v2_x0_5", "stage4", 32, "exact", None),
    ("squeezenet1_1", "features", 64, "exact", None),
    ("regnet_x_400mf", "trunk_output.block4.block4-10", 32, "exact", None),
    ("efficientnet_b0", "features.7", 32, "tangent", "SiLU"),
    ("efficientnet_v2_s", "features.6", 32, "tangent", "SiLU"),
    ("mobilenet_v3_small", "features", 32, "tangent", "Hardswish"),
    ("regnet_y_400mf", "trunk_output.block4.block4-4", 32, "tangent", "Sigmoid"),
    ("convnext_tiny", "features", 32, "tangent", "layer_norm"),
    ("vit_b_16", "encoder.layers.encoder_layer_11", 224, "tangent", "LayerNorm"),
    ("swin_t", "features", 64, "tangent", "LayerNorm"),
]

#: timm models (``--arch timm:NAME``), the same columns; a ViT or Swin takes the input
#: size it was built for. timm is an optional extra: these rows are skipped without it.
TIMM_MATRIX = [
    ("resnet18", "layer4.0", 64, "exact", None),
    ("efficientnet_b0", "conv_head", 64, "tangent", "SiLU"),
    ("mobilenetv3_small_050", "blocks", 64, "tangent", "Hardswish"),
    ("regnety_002", "s4.b6", 64, "tangent", "Sigmoid"),
    ("convnext_atto", "stages", 64, "tangent", "layer_norm"),
    ("efficientformer_l1", "stages", 224, "tangent", "LayerNorm"),
    ("vit_tiny_patch16_224", "blocks.11", 224, "tangent", "layer_norm"),
    ("deit_tiny_patch16_224", "blocks.11", 224, "tangent", "layer_norm"),
    ("swin_tiny_patch4_window7_224", "layers.3.blocks.1", 224, "tangent", "LayerNorm"),
]


def verdict(mode: str, why: str | None) -> str:
    """The README's words for a row."""
    return "exact (piecewise linear)" if mode == "exact" else f"tangent (smooth: {why})"


def build(name: str, classes: int = 4) -> nn.Module:
    """A randomly initialised model, float64, eval mode (no weights are downloaded):
    torchvision's, or timm's for ``timm:NAME``."""
    if name.startswith("timm:"):
        import timm
        torch.manual_seed(0)
        return timm.create_model(name[5:], pretrained=False,
                                 num_classes=classes).double().eval()
    kw = {"aux_logits": False, "init_weights": False} if name in ("googlenet",
                                                                  "inception_v3") else {}
    torch.manual_seed(0)
    return torchvision.models.get_model(name, weights=None, num_classes=classes,
                                        **kw).double().eval()


def diversify(model: nn.Module, images: torch.Tensor) -> nn.Module:
    """Centre the last classifier layer on ``images`` (random weights, bias minus the mean
    logit) so that a random network predicts several classes."""
    last = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))][-1]
    seen: list[torch.Tensor] = []
    handle = last.register_forward_hook(lambda m, i, o: seen.append(i[0].detach()))
    try:
        with torch.no_grad():
            model(images)
    finally:
        handle.remove()
    h = seen[0]
    with torch.no_grad():
        last.weight.normal_(0, 1 / h[0].numel() ** 0.5 * 10)
        out = last(h)
        dims = [0] + list(range(2, out.ndim))
        last.bias.sub_(out.mean(dims))
    return model


def check_boundaries_at_points(it, region, input_shape: tuple[int, ...] | None = None
                               ) -> None:
    """Each boundary of ``region`` (float64) passes through its point on the decision
    surface (top-2 margin about 0) with normal = the margin's gradient there: exact for
    piecewise-linear heads, the tangent plane for smooth ones. The head is the model's
    own after the interpreter's layer (:func:`repinterp.core.split.split_model`, eval
    mode), the same weights as the interpreter's private copy; a head split by hooks
    (a model torch.fx cannot trace) runs on zero images of ``input_shape`` ``(C, H, W)``."""
    head, shape = split_model(it.model, it.layer_).head, it.feature_shape_
    if hasattr(head, "input_shape"):
        head.input_shape = input_shape
    with inference_mode(it.model):
        for w, (c1, c2), p in zip(region.weights, region.pairs.tolist(),
                                  region.boundary_points, strict=True):
            z = p.clone().requires_grad_(True)
            # a copy: a head that starts in place (DenseNet's relu) must not write on z
            out = head(z.view(1, *shape).clone())[0]
            top2 = out.detach().topk(2).values
            assert float(top2[0] - top2[1]) < 1e-5              # on the decision boundary
            (g,) = torch.autograd.grad(out[c1] - out[c2], z)
            torch.testing.assert_close(w, g, rtol=1e-9, atol=1e-9 * float(g.abs().max()))


def table(rows: list[tuple[str, str, str]], source: str = "torchvision") -> str:
    """Markdown table of (model, layer, verdict) rows."""
    lines = [f"| {source} model | split at | boundaries |", "|---|---|---|"]
    lines += [f"| `{m}` | `{layer}` | {v} |" for m, layer, v in rows]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(table([(n, layer, verdict(mode, why)) for n, layer, _, mode, why in MATRIX]))
    print(table([(n, layer, verdict(mode, why)) for n, layer, _, mode, why in TIMM_MATRIX],
                "timm"))
