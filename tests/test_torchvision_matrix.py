"""Every torchvision CNN classifier family, randomly initialised, split at a meaningful
layer: the verdict on the head, and for piecewise-linear heads, boundaries that are exact
at their points (top-2 margin about 0, normal = gradient of G_c1 - G_c2 there)."""
import pytest
import torch
from torchvision_matrix import MATRIX, build, diversify, table

from repinterp import NotPiecewiseLinearError, RepresentativeInterpreter, head_verdict, split_model

PL = [m for m in MATRIX if m[3] == "piecewise linear"]
NOT_PL = [m for m in MATRIX if m[3] != "piecewise linear"]
HEAVY = {"wide_resnet50_2", "vgg11_bn", "mobilenet_v2", "resnext50_32x4d"}


@pytest.mark.parametrize("name,layer,size", [
    pytest.param(n, layer, s, marks=[pytest.mark.slow] if n in HEAVY else [])
    for n, layer, s, _, _ in PL])
def test_piecewise_linear_heads_give_exact_boundaries(name, layer, size):
    model = build(name)
    x = torch.randn(20, 3, size, size, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(1))
    diversify(model, x)
    assert head_verdict(split_model(model, layer).head).kind == "piecewise linear"
    it = RepresentativeInterpreter(model, layer, num_boundaries=4, progress=False).fit(x)
    assert len(set(it.predictions_.tolist())) > 1
    region = it.explain(0)
    assert not region.approximate and 0 in region.members.tolist()
    head, shape = it.network_.head, it.network_.feature_shape
    for w, (c1, c2), p in zip(region.weights, region.pairs.tolist(), region.boundary_points,
                              strict=True):
        z = p.clone().requires_grad_(True)
        out = head(z.view(1, *shape))[0]
        top2 = out.detach().topk(2).values
        assert float(top2[0] - top2[1]) < 1e-5              # on the decision boundary
        (g,) = torch.autograd.grad(out[c1] - out[c2], z)
        torch.testing.assert_close(w, g, rtol=1e-9, atol=1e-9 * float(g.abs().max()))


@pytest.mark.parametrize("name,layer,size,kind,culprit", NOT_PL)
def test_other_heads_are_refused_naming_the_module(name, layer, size, kind, culprit):
    model = build(name)
    x = torch.randn(2, 3, size, size, dtype=torch.float64)
    with pytest.raises(ValueError, match=culprit) as err:
        RepresentativeInterpreter(model, layer, progress=False).fit(x)
    if kind == "not piecewise linear":
        assert err.type is NotPiecewiseLinearError


def test_readme_table_is_the_matrix():
    """The README's table of verdicts is generated from the same matrix
    (``python tests/torchvision_matrix.py``)."""
    from pathlib import Path
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    rows = [(n, layer, kind if kind == "piecewise linear" else f"{kind}: {why}")
            for n, layer, _, kind, why in MATRIX]
    assert table(rows) in readme


@pytest.mark.parametrize("name,layer", [(m[0], m[1]) for m in PL])
def test_the_table_splits_where_the_suggestion_does(name, layer):
    """Issue 19: the README's table, its examples and ``suggest_layer`` agree."""
    from repinterp import suggest_layer
    assert suggest_layer(build(name)) == layer
