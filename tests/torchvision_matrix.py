"""The torchvision classifiers, where each is split, and the verdict on the head after
that layer (with what refuses it): checked by ``test_torchvision_matrix.py``, printed as
the README's table by ``python tests/torchvision_matrix.py``."""
from __future__ import annotations

import torch
import torchvision
from torch import nn

#: (name, layer, input size, expected verdict, what refuses it); a piecewise-linear
#: model's layer is the one ``repinterp.suggest_layer`` proposes (issue 19: one split
#: layer in the README, this table and the suggestion)
MATRIX = [
    ("resnet18", "layer4.0", 32, "piecewise linear", None),
    ("resnext50_32x4d", "layer4.1", 32, "piecewise linear", None),
    ("wide_resnet50_2", "layer4.1", 32, "piecewise linear", None),
    ("vgg11_bn", "features", 32, "piecewise linear", None),
    ("alexnet", "features", 64, "piecewise linear", None),
    ("densenet121", "features", 32, "piecewise linear", None),
    ("googlenet", "inception5a", 64, "piecewise linear", None),
    ("inception_v3", "Mixed_7b", 80, "piecewise linear", None),
    ("mobilenet_v2", "features.17", 32, "piecewise linear", None),
    ("mnasnet0_5", "layers.14", 32, "piecewise linear", None),
    ("shufflenet_v2_x0_5", "stage4", 32, "piecewise linear", None),
    ("squeezenet1_1", "features", 64, "piecewise linear", None),
    ("regnet_x_400mf", "trunk_output.block4.block4-10", 32, "piecewise linear", None),
    ("efficientnet_b0", "features.6", 32, "not piecewise linear", "SiLU"),
    ("mobilenet_v3_small", "features.9", 32, "not piecewise linear", "Hardswish"),
    ("regnet_y_400mf", "trunk_output.block3", 32, "not piecewise linear", "Sigmoid"),
    ("convnext_tiny", "features.5", 32, "not piecewise linear", "layer_norm"),
    ("vit_b_16", "encoder.layers.encoder_layer_5", 224, "refused", "LayerNorm"),
]


def build(name: str, classes: int = 4) -> nn.Module:
    """A randomly initialised model, float64, eval mode (no weights are downloaded)."""
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


def table(rows: list[tuple[str, str, str]]) -> str:
    """Markdown table of (model, layer, verdict) rows."""
    lines = ["| torchvision model | split at | head after it |", "|---|---|---|"]
    lines += [f"| `{m}` | `{layer}` | {v} |" for m, layer, v in rows]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(table([(n, layer, kind if kind == "piecewise linear" else f"{kind}: {why}")
                 for n, layer, _, kind, why in MATRIX]))
