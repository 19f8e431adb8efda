import pytest
import torch
import torchvision
from torch import nn

from repinterp import NotPiecewiseLinearError, RepresentativeInterpreter
from repinterp.split import (check_head_modules, check_head_numerically, resolve_layer,
                             split_model)

from conftest import tiny_images


def mlp_head(act: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(256, 16), act, nn.Linear(16, 3)).double()


@pytest.mark.parametrize("act,name", [(nn.GELU(), "GELU"), (nn.Sigmoid(), "Sigmoid")])
def test_smooth_head_is_refused_naming_the_module(act, name):
    with pytest.raises(NotPiecewiseLinearError, match=rf"module '4' \({name}\)"):
        RepresentativeInterpreter(mlp_head(act), "1")
    # a ValueError, so callers can catch the generic type
    with pytest.raises(ValueError):
        RepresentativeInterpreter(mlp_head(act), "1")


def test_approximate_accepts_smooth_head_and_flags_it():
    x = tiny_images(0, 60)
    it = RepresentativeInterpreter(mlp_head(nn.GELU()), "1", approximate=True,
                                   progress=False).fit(x)
    assert it.approximate


class SneakyReLU(nn.ReLU):
    """Passes the module whitelist and, posing as a torch.nn module, is kept whole by
    torch.fx, but is smooth: only the numerical check can catch it."""

    __module__ = "torch.nn.modules.activation"

    def forward(self, x):
        return torch.tanh(x)


def test_numerical_check_catches_overridden_forward():
    model = mlp_head(SneakyReLU())
    it = RepresentativeInterpreter(model, "1", progress=False)
    with pytest.raises(NotPiecewiseLinearError, match="G\\(z \\+ d\\)"):
        it.fit(tiny_images(0, 40))


def test_numerical_check_scores():
    z = torch.randn(8, 4, 8, 8, dtype=torch.float64)
    for act, lo, hi in [(nn.ReLU(), 0.75, 1.0), (nn.Tanh(), 0.0, 0.0), (nn.GELU(), 0.0, 0.0)]:
        head = mlp_head(act)[2:]
        assert lo <= check_head_numerically(head, z) <= hi


def test_function_calls_in_head_are_checked():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)
            self.fc = nn.Linear(72, 2)

        def forward(self, x):
            z = self.conv(x)
            return self.fc(torch.flatten(torch.sigmoid(z) * 2, 1))

    split = split_model(M(), "conv")
    bad = check_head_modules(split.head)
    assert any("sigmoid" in b for b in bad) and len(bad) == 1


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
    assert not check_head_modules(split.head)  # residual blocks, BN, pooling: all PL
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
    it = RepresentativeInterpreter(net, "2", num_boundaries=10, progress=False).fit(images)
    ri = it.explain(0)
    ri.heatmap(images[:2])
    it.summarize(max_regions=1)
    assert [m.training for m in net.modules()] == flags
    assert [p.requires_grad for p in net.parameters()] == grads
    assert all(p.grad is None for p in net.parameters())
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in net.modules()) == hooks
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
    assert it.store_.prefix is None        # the head starts with a residual block
    seed = int((it.predictions_ == it.predictions_.mode().values).nonzero()[0, 0])
    ri = it.explain(seed)
    with torch.no_grad():
        z = it.features(x)
    inside = ((z @ ri.weights.T + ri.biases) >= 0).all(1)
    assert set(ri.members.tolist()) == set(inside.nonzero()[:, 0].tolist())
    assert inside[seed] and ri.num_boundaries >= 1
