"""Every torchvision classifier family, randomly initialised, split where
``suggest_layer`` splits: the verdict on the head, and boundaries that are exact at
their points (top-2 margin about 0, normal = gradient of G_c1 - G_c2 there) for
piecewise-linear heads, tangent planes there for smooth ones (issue 21: CNNs with SiLU,
Hardswish, Sigmoid gates, LayerNorm; a ViT's tokens; Swin's channels-last maps)."""
import importlib.util

import pytest
import torch

from benchmarks.torchvision_matrix import (
    MATRIX,
    TIMM_MATRIX,
    build,
    check_boundaries_at_points,
    diversify,
    table,
    verdict,
)
from repinterp import RepresentativeInterpreter
from repinterp.core.split import split_model
from repinterp.core.verdict import head_verdict

HEAVY = {"wide_resnet50_2", "vgg11_bn", "mobilenet_v2", "resnext50_32x4d", "vit_b_16",
         "efficientnet_v2_s", "convnext_tiny", "swin_t", "timm:efficientformer_l1",
         "timm:vit_tiny_patch16_224", "timm:deit_tiny_patch16_224",
         "timm:swin_tiny_patch4_window7_224"}
ROWS = MATRIX + [(f"timm:{n}", *rest) for n, *rest in TIMM_MATRIX]


def _marks(name: str) -> list:
    marks = [pytest.mark.slow] if name in HEAVY else []
    if name.startswith("timm:"):
        marks.append(pytest.mark.skipif(importlib.util.find_spec("timm") is None,
                                        reason="timm is not installed (an optional extra)"))
    return marks


@pytest.mark.parametrize("name,layer,size,mode", [
    pytest.param(n, layer, s, mode, marks=_marks(n)) for n, layer, s, mode, _ in ROWS])
def test_boundaries_are_exact_or_tangent_at_their_points(name, layer, size, mode):
    """Swin's channels-last maps (torchvision's and timm's) are recognised by their
    shape: no ``reshape_transform`` is given."""
    model = build(name)
    x = torch.randn(20, 3, size, size, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(1))
    diversify(model, x)
    assert head_verdict(split_model(model, layer).head).mode == mode
    it = RepresentativeInterpreter(model, layer, num_boundaries=4, progress=False).fit(x)
    assert len(set(it.predictions_.tolist())) > 1
    region = it.explain(0)
    assert region.approximate == (mode == "tangent") and 0 in region.members.tolist()
    # the purity a region reports is its fidelity: the members predicted as its class
    inside = it.contains(region, x)
    assert torch.equal(inside.nonzero()[:, 0].sort().values, region.members.sort().values)
    assert region.purity == pytest.approx(float(
        (it.predictions_[region.members] == region.predicted_class).double().mean()))
    heat = it.heatmap(region, x[:2])
    assert heat.shape == (2, size, size) and torch.isfinite(heat).all()
    assert float(heat.min()) >= 0 and float(heat.max()) <= 1
    check_boundaries_at_points(it, region)


def test_readme_table_is_the_matrix():
    """The own-model guide's table of verdicts is generated from the same matrix
    (``python -m benchmarks.torchvision_matrix``)."""
    from pathlib import Path
    readme = (Path(__file__).resolve().parents[1] / "docs" / "guides" /
              "own-model.md").read_text()
    rows = [(n, layer, verdict(mode, why)) for n, layer, _, mode, why in MATRIX]
    assert table(rows) in readme
    rows = [(n, layer, verdict(mode, why)) for n, layer, _, mode, why in TIMM_MATRIX]
    assert table(rows, "timm") in readme


@pytest.mark.parametrize("name,layer", [pytest.param(m[0], m[1], marks=_marks(m[0]))
                                        for m in ROWS])
def test_the_table_splits_where_the_suggestion_does(name, layer):
    """Issue 19: the README's table, its examples and ``suggest_layer`` agree."""
    from repinterp import suggest_layer
    assert suggest_layer(build(name)) == layer
