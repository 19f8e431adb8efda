"""The edit that leaves a region: exact on a linear network, checked on a seeded CNN."""
from __future__ import annotations

import pytest
import torch
from nets import tiny_cnn, tiny_images
from torch import nn

from repinterp import RepresentativeInterpreter
from repinterp.core.errors import UserError


def linear_model() -> nn.Module:
    """``[1, 2, 2]`` images -> Flatten (the layer) -> Linear(4, 3), float64: the head
    is affine, so every boundary is a plane in pixel space too."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).double()
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[2.0, 0.0, 0.0, 0.0],
                                            [0.0, 1.0, 0.0, 0.0],
                                            [0.0, 0.0, 0.0, 0.5]]))
        model[1].bias.zero_()
    return model.eval()


@pytest.fixture(scope="module")
def linear():
    torch.manual_seed(0)
    refs = torch.randn(200, 1, 2, 2, dtype=torch.float64) * 3
    it = RepresentativeInterpreter(linear_model(), "0", num_boundaries=20, seed=0,
                                   progress=False).fit(refs)
    return it, refs


def test_one_step_lands_exactly_past_the_nearest_plane(linear):
    """With smooth=0 and an affine head the search is one DeepFool step: the image moves
    along the boundary's normal to 2% past it (f -> -0.02 f), the shortest such move."""
    it, refs = linear
    x = torch.tensor([[[4.0, 1.0], [0.0, 0.5]]], dtype=torch.float64)   # class 0
    region = it.explain(x)
    assert region.predicted_class == 0
    side = region.side_values(x.reshape(1, -1))[0]
    dist = side / region.weights.norm(dim=1)
    h = int(dist.argmin())
    cf = it.counterfactual(x, region, smooth=0.0)
    assert cf.boundary == h and cf.steps == 1 and cf.crossed and cf.source == 0
    w, f = region.weights[h], float(side[h])
    expect = x.reshape(-1) - 1.02 * f / float(w @ w) * w
    torch.testing.assert_close(cf.image.reshape(-1), expect, rtol=0, atol=1e-12)
    assert cf.l2 == pytest.approx(1.02 * float(dist[h]), rel=1e-12)
    assert cf.predicted == cf.target == int(region.pairs[h, 1]) and cf.success
    # the other boundaries are not crossed: only the intended one
    after = region.side_values(cf.image.reshape(1, -1))[0]
    assert (after < 0).nonzero()[:, 0].tolist() == [h]


def test_a_named_target_picks_a_boundary_against_it(linear):
    it, _ = linear
    x = torch.tensor([[[4.0, 1.0], [0.0, 0.5]]], dtype=torch.float64)
    region = it.explain(x)
    for t in sorted({int(c) for c in region.pairs[:, 1]}):
        cf = it.counterfactual(x, region, target=t, smooth=0.0)
        assert int(region.pairs[cf.boundary, 1]) == t and cf.target == t
    with pytest.raises(UserError, match="no boundary against class 0"):
        it.counterfactual(x, region, target=0)


@pytest.fixture(scope="module")
def cnn():
    x = tiny_images(0, 300)
    it = RepresentativeInterpreter(tiny_cnn(0), layer="2", num_boundaries=12, seed=0,
                                   progress=False).fit(x)
    return it, x


def test_edits_of_a_cnn_cross_and_change_the_prediction(cnn):
    it, x = cnn
    queries = tiny_images(1, 6)
    for q in queries:
        region = it.explain(q)
        cf = it.counterfactual(q, region)
        assert cf.crossed and cf.predicted != cf.source == region.predicted_class
        assert cf.predicted == int(it.predict(cf.image[None])[0])
        side = region.side_values(it.features(cf.image[None]))[0]
        assert float(side[cf.boundary]) < 0
        again = it.counterfactual(q, region)              # deterministic
        assert torch.equal(again.image, cf.image)
        base = it.counterfactual(q, region, via="logits")
        assert base.boundary is None and base.crossed is None
        assert (base.source, base.target) == (cf.source, cf.target)


def test_pixels_in_0_1_stay_there(cnn):
    it, _ = cnn
    q = tiny_images(2, 1)[0]
    q = (q - q.min()) / (q.max() - q.min())
    cf = it.counterfactual(q)
    assert float(cf.image.min()) >= 0 and float(cf.image.max()) <= 1
    assert 0 < cf.changed <= 1 and cf.l2 > 0


def test_interpolation_stops_at_the_first_blend_decided_otherwise(cnn):
    it, x = cnn
    pred = it.predictions_
    a = int((pred == 0).nonzero()[0, 0])
    b = int((pred == 1).nonzero()[0, 0])
    cf = it.counterfactual(x[a], via="blend", towards=x[b])
    assert cf.target == 1 and cf.predicted != 0
    t = float((cf.image - x[a]).norm() / (x[b] - x[a]).norm())
    before = (1 - (t - 1e-4)) * x[a] + (t - 1e-4) * x[b]
    assert int(it.predict(before[None])[0]) == 0


def test_bad_calls_are_refused(cnn):
    it, x = cnn
    with pytest.raises(UserError, match="one image"):
        it.counterfactual(x[:2])
    with pytest.raises(UserError, match="steps must be"):
        it.counterfactual(x[0], steps=0)
    with pytest.raises(UserError, match="no boundary"):
        it.counterfactual(x[0], it.explain(0), target=int(it.predictions_[0]))
    with pytest.raises(UserError, match="via must be"):
        it.counterfactual(x[0], via="magic")
    with pytest.raises(UserError, match="needs towards"):
        it.counterfactual(x[0], via="blend")
