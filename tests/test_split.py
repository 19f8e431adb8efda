import pytest
import torch
import torchvision
from nets import tiny_images
from torch import nn

from repinterp import RepresentativeInterpreter
from repinterp.core.errors import UserError
from repinterp.core.split import resolve_layer, split_model
from repinterp.core.verdict import AFFINE, NOT_PIECEWISE_LINEAR, PIECEWISE_LINEAR, head_verdict


def mlp_head(act: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(256, 16), act, nn.Linear(16, 3)).double()


def centred(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Centre the last layer so that several classes are predicted."""
    with torch.no_grad():
        h = model[:5](x)
        model[5].bias.copy_(-(h @ model[5].weight.T).mean(0))
    return model


@pytest.mark.parametrize("act,name", [(nn.GELU(), "GELU"), (nn.Sigmoid(), "Sigmoid"),
                                      (nn.SiLU(), "SiLU"), (nn.Hardswish(), "Hardswish")])
def test_a_smooth_head_gets_tangent_boundaries(act, name):
    """Issue 21: a smooth head is no longer refused. Each boundary is the tangent plane
    of the decision surface at its point: the top-2 margin is 0 there and the normal is
    the margin's gradient there (float64, to rounding); the verdict names the module."""
    x = tiny_images(0, 120)
    model = centred(mlp_head(act), x)
    verdict = head_verdict(split_model(model, "1").head)
    assert verdict.mode == "tangent" and f"module '4' ({name})" in verdict.describe()
    it = RepresentativeInterpreter(model, "1", num_boundaries=10, progress=False).fit(x)
    assert it.approximate_ and len(set(it.predictions_.tolist())) > 1
    region = it.explain(0)
    assert region.approximate and 0 in region.members.tolist()
    head = split_model(model, "1").head      # the user's (the private copy is a copy)
    for w, b, (c1, c2), p in zip(region.weights, region.biases, region.pairs.tolist(),
                                 region.boundary_points, strict=True):
        z = p.clone().requires_grad_(True)
        out = head(z.view(1, *it.feature_shape_))[0]
        margin = out[c1] - out[c2]
        assert abs(float(margin.detach())) < 1e-5           # on the decision surface
        (g,) = torch.autograd.grad(margin, z)
        sign = 1.0 if float(w @ g) > 0 else -1.0             # oriented towards the seed
        torch.testing.assert_close(w, sign * g, rtol=1e-9, atol=1e-12)
        # the plane is the margin's first-order model at p: w . p + b = margin(p)
        assert float(w @ p + b) == pytest.approx(sign * float(margin.detach()), abs=1e-12)


def test_approximate_is_accepted_and_changes_nothing():
    model = centred(mlp_head(nn.GELU()), tiny_images(0, 120))
    x = tiny_images(0, 120)
    runs = [RepresentativeInterpreter(model, "1", approximate=flag, num_boundaries=10,
                                      progress=False).fit(x) for flag in (False, True)]
    a, b = (it.summarize(max_regions=2) for it in runs)
    assert [r.members.tolist() for r in a.regions] == [r.members.tolist() for r in b.regions]
    assert a.regions and all(r.approximate for r in a.regions)
    assert a.meta["approximate"] is True


def test_approximate_on_a_piecewise_linear_head_is_exact(net, images):
    it = RepresentativeInterpreter(net, "2", approximate=True, progress=False).fit(images)
    assert not it.approximate_ and not it.explain(0).approximate


class SneakyReLU(nn.ReLU):
    """A whitelisted type whose forward was overridden: the graph cannot vouch for it."""

    __module__ = "torch.nn.modules.activation"

    def forward(self, x):
        return torch.tanh(x)


def test_overridden_forward_is_not_trusted():
    verdict = head_verdict(split_model(mlp_head(SneakyReLU()), "1").head)
    assert verdict.kind == NOT_PIECEWISE_LINEAR
    assert verdict.reasons == ("module '4' (SneakyReLU)",)


def test_verdicts_from_the_graph():
    head = mlp_head(nn.ReLU())
    assert head_verdict(split_model(head, "1").head).kind == PIECEWISE_LINEAR
    assert head_verdict(split_model(head, "4").head).kind == AFFINE   # Linear only


class Scaled(nn.Module):
    """``x * parameter`` is linear in x; ``x * sigmoid(x)`` is not."""

    def __init__(self, gated: bool):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.scale = nn.Parameter(torch.ones(1, 2, 1, 1))
        self.fc = nn.Linear(72, 2)
        self.gated = gated

    def forward(self, x):
        z = self.conv(x)
        z = z * torch.sigmoid(z) if self.gated else torch.relu(z * self.scale) / 2
        return self.fc(torch.flatten(z, 1))


def test_products_are_linear_only_with_one_moving_factor():
    assert head_verdict(split_model(Scaled(False), "conv").head).kind == PIECEWISE_LINEAR
    bad = head_verdict(split_model(Scaled(True), "conv").head)
    assert bad.kind == NOT_PIECEWISE_LINEAR
    assert bad.reasons == ("function 'sigmoid'", "function 'mul'")


def test_unknown_layer_suggests_close_names(net):
    with pytest.raises(ValueError, match="did you mean '1'|not found"):
        resolve_layer(net, "11")
    model = torchvision.models.resnet18(num_classes=3)
    with pytest.raises(ValueError, match="did you mean 'layer3'"):
        resolve_layer(model, "layr3")
    with pytest.raises(ValueError, match="not a submodule"):
        resolve_layer(model, nn.Linear(2, 2))
    assert resolve_layer(model, model.layer3) == "layer3"


def test_resnet_split_at_layer3_reproduces_the_model():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=4).double().eval()
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    split = split_model(model, model.layer3)
    assert head_verdict(split.head).kind == PIECEWISE_LINEAR  # residual, BN, pooling
    with torch.no_grad():
        torch.testing.assert_close(split.head(split.features(x)), model(x))


def test_skip_connection_across_the_cut_is_refused():
    class Skip(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(1, 1, 3, padding=1)
            self.b = nn.Conv2d(1, 1, 3, padding=1)

        def forward(self, x):
            return (self.b(self.a(x)) + x).flatten(1)

    with pytest.raises(ValueError, match="reads the input directly"):
        split_model(Skip(), "a")


def test_model_is_left_as_found(net, images):
    net.train()
    flags = [m.training for m in net.modules()]
    grads = [p.requires_grad for p in net.parameters()]
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in net.modules())
    state = {k: v.clone() for k, v in net.state_dict().items()}
    it = RepresentativeInterpreter(net, "2", num_boundaries=10, progress=False).fit(images)
    region = it.explain(0)
    for method in ("margin", "logprob"):
        it.heatmap(region, images[:2], method)
    it.summarize(max_regions=1)
    assert [m.training for m in net.modules()] == flags
    assert [p.requires_grad for p in net.parameters()] == grads
    assert all(p.grad is None for p in net.parameters())
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in net.modules()) == hooks
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())
    net.eval()


def test_interpreter_on_random_resnet18_split_at_layer3():
    """Residual blocks, BatchNorm (eval), average pooling and flattening in the head."""
    torch.manual_seed(1)
    model = torchvision.models.resnet18(num_classes=3).double().eval()
    x = torch.randn(60, 3, 32, 32, dtype=torch.float64)
    fc, model.fc = model.fc, nn.Identity()
    with torch.no_grad():                 # centre the random logits: several classes occur
        pooled = model(x)
        fc.weight.normal_()
        fc.bias.copy_(-(pooled @ fc.weight.T).mean(0))
    model.fc = fc
    it = RepresentativeInterpreter(model, "layer3", num_boundaries=10, progress=False).fit(x)
    assert len(set(it.predictions_.tolist())) > 1
    z = it.features_                       # the head starts with a residual block:
    assert it.nbytes_ == z.numel() * z.element_size()       # no projections kept
    seed = int((it.predictions_ == it.predictions_.mode().values).nonzero()[0, 0])
    region = it.explain(seed)
    z = it.features(x)
    inside = ((z @ region.weights.T + region.biases) >= 0).all(1)
    assert set(region.members.tolist()) == set(inside.nonzero()[:, 0].tolist())
    assert inside[seed] and region.num_boundaries >= 1


def test_tangent_boundaries_stop_the_greedy_at_a_higher_purity():
    """Issue 21: ``min_purity="auto"`` is 0.999 for tangent boundaries (measured in
    docs/tangent-curve.md) and 0.995 for exact ones: the same regions as given by hand,
    and on seed 300 not those of the other stop."""
    from repinterp.core.engine import MIN_PURITY, TANGENT_MIN_PURITY
    x = tiny_images(0, 3000)
    for act, stop, other in [(nn.GELU(), TANGENT_MIN_PURITY, MIN_PURITY),
                             (nn.ReLU(), MIN_PURITY, TANGENT_MIN_PURITY)]:
        model = centred(mlp_head(act), x)
        fits = [RepresentativeInterpreter(model, "1", num_boundaries=20, min_purity=p,
                                          progress=False).fit(x)
                for p in ("auto", stop, other)]
        auto, given, not_it = (f.explain(300) for f in fits)
        assert torch.equal(auto.members, given.members)
        assert torch.equal(auto.weights, given.weights)
        assert not_it.size != auto.size
    assert (TANGENT_MIN_PURITY, MIN_PURITY) == (0.999, 0.995)
    with pytest.raises(UserError, match="min_purity must be"):
        RepresentativeInterpreter(model, "1", min_purity=1.5, progress=False).fit(x)
