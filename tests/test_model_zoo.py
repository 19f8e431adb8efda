"""Issue 21: models as people get them from model zoos. Outputs that hold the logits (a
tuple, a dict, an object with ``.logits``), channels-last feature maps (Swin), layers
after a global pooling, transformers with a convolutional stem, and timm models by name
(``timm:NAME``). Exact comparisons against an equivalent plain model, float64."""
import importlib.util
import subprocess
import sys

import pytest
import torch
from nets import tiny_cnn, tiny_images
from torch import nn

from repinterp import RepresentativeInterpreter, suggest_layer
from repinterp.core.errors import UserError
from repinterp.core.heatmap import looks_channels_last
from repinterp.core.logits import logits_of
from repinterp.core.split import split_model
from repinterp.core.verdict import head_verdict

needs_timm = pytest.mark.skipif(importlib.util.find_spec("timm") is None,
                                reason="timm is not installed (an optional extra)")


class Output:
    """What Hugging Face's classifiers return: an object with ``.logits``."""

    def __init__(self, logits: torch.Tensor):
        self.logits = logits


class Wrapped(nn.Module):
    """``tiny_cnn`` (conv, ReLU, pool, MLP) returning its logits in another container."""

    def __init__(self, kind: str):
        super().__init__()
        self.net = tiny_cnn()
        self.kind = kind

    def forward(self, x):
        feats = self.net[2](self.net[1](self.net[0](x)))
        logits = feats
        for i in range(3, len(self.net)):
            logits = self.net[i](logits)
        if self.kind == "tuple":
            return logits, feats
        if self.kind == "dict":
            return {"features": feats, "logits": logits}
        if self.kind == "scores":
            return {"scores": logits}
        return logits


@pytest.mark.parametrize("kind", ["tuple", "dict"])
def test_a_model_returning_a_tuple_or_dict_is_explained_as_its_logits(kind):
    x = tiny_images(0, 120)
    plain = RepresentativeInterpreter(Wrapped("plain"), "net.0", num_boundaries=10,
                                      progress=False).fit(x)
    other = RepresentativeInterpreter(Wrapped(kind), "net.0", num_boundaries=10,
                                      progress=False).fit(x)
    assert torch.equal(plain.predictions_, other.predictions_)
    a, b = plain.explain(3), other.explain(3)
    assert torch.equal(a.members, b.members) and torch.equal(a.weights, b.weights)


def test_logits_are_read_from_every_container():
    t = torch.arange(6.0).view(2, 3)
    assert logits_of(t) is t and logits_of((t, 1)) is t and logits_of([t]) is t
    assert logits_of({"logits": t, "x": 0}) is t and logits_of(Output(t)) is t


def test_a_dict_without_logits_is_refused_by_its_keys():
    with pytest.raises(UserError, match=r"dict with keys \['scores'\], none of them"):
        split_model(Wrapped("scores"), "net.0")


class ChannelsLast(nn.Module):
    """``tiny_cnn`` whose split layer outputs ``[n, h, w, C]`` (as Swin's stages do) and
    whose head turns it back: the same function as ``tiny_cnn``."""

    def __init__(self):
        super().__init__()
        self.net = tiny_cnn()
        self.to_nhwc = Permute(0, 2, 3, 1)

    def forward(self, x):
        out = self.to_nhwc(self.net[1](self.net[0](x))).permute(0, 3, 1, 2)
        for i in range(2, len(self.net)):
            out = self.net[i](out)
        return out


class Permute(nn.Module):
    def __init__(self, *dims: int):
        super().__init__()
        self.dims = dims

    def forward(self, x):
        return x.permute(*self.dims)


def test_channels_last_maps_are_recognised_and_give_the_same_heat_maps():
    """The heat maps of a channels-last split equal those of the same network split
    channels-first (nothing given: the layout is read from the shape), and equal those
    with pytorch-grad-cam's explicit ``reshape_transform``."""
    x = tiny_images(0, 120)
    first = RepresentativeInterpreter(tiny_cnn(), "1", num_boundaries=10,
                                      progress=False).fit(x)
    last = RepresentativeInterpreter(ChannelsLast(), "to_nhwc", num_boundaries=10,
                                     progress=False).fit(x)
    given = RepresentativeInterpreter(ChannelsLast(), "to_nhwc", num_boundaries=10,
                                      progress=False,
                                      reshape_transform=lambda t: t.permute(0, 3, 1, 2)
                                      ).fit(x)
    assert last.feature_shape_ == (8, 8, 4)
    a, b = first.explain(5), last.explain(5)
    assert torch.equal(a.members, b.members)
    ha, hb = first.heatmap(a, x[:4]), last.heatmap(b, x[:4])
    assert float(ha.max()) > 0
    torch.testing.assert_close(hb, ha, rtol=0, atol=1e-12)
    torch.testing.assert_close(given.heatmap(given.explain(5), x[:4]), ha, rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape,image,expected", [
    ((7, 7, 768), (224, 224), True), ((768, 7, 7), (224, 224), False),
    ((56, 56, 96), (224, 224), True), ((512, 8, 8), (256, 256), False),
    ((7, 10, 768), (224, 320), True), ((768, 7, 10), (224, 320), False),
    ((7, 7, 7), (224, 224), False),          # reads both ways: channels first
    ((197, 192), (224, 224), False), ((64, 1, 1), (224, 224), False)])
def test_channels_last_by_shape(shape, image, expected):
    assert looks_channels_last(shape, image) is expected


class PooledThenConv(nn.Module):
    """timm's MobileNetV3 layout: blocks, a global pooling, then a 1x1 convolution."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3),
                                    nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv_head = nn.Conv2d(8, 16, 1)
        self.act = nn.ReLU()
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        return self.fc(self.act(self.conv_head(self.pool(self.blocks(x)))).flatten(1))


class Block(nn.Module):
    def __init__(self, d: int = 8):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 16), nn.GELU(), nn.Linear(16, d))

    def forward(self, x):
        return x + self.mlp(self.norm(x))


class ConvStemTransformer(nn.Module):
    """A patch embedding (a convolution, as Swin's or BEiT's) then transformer blocks."""

    def __init__(self):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, 8, 4, stride=4)
        self.blocks = nn.Sequential(Block(), Block(), Block())
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        t = self.patch_embed(x).flatten(2).transpose(1, 2)
        return self.head(self.norm(self.blocks(t)).mean(1))


def test_nothing_after_a_global_pooling_is_suggested():
    """Its maps are 1 x 1: the suggestion is the last block before the pooling."""
    assert suggest_layer(PooledThenConv()) == "blocks"


def test_a_transformer_with_a_convolutional_stem_is_split_after_its_last_block():
    assert suggest_layer(ConvStemTransformer()) == "blocks.2"


@needs_timm
def test_timm_models_by_name():
    from repinterp.app.models import build_arch
    model = build_arch("timm:resnet18", 3)
    assert type(model).__module__.startswith("timm") and model.fc.out_features == 3
    with pytest.raises(UserError, match=r"timm has no architecture 'resnet181'; did you "
                                        r"mean timm:resnet18"):
        build_arch("timm:resnet181", 3)


@pytest.mark.slow
@needs_timm
def test_cli_layers_of_a_timm_model():
    run = subprocess.run([sys.executable, "-m", "repinterp.cli", "layers", "--arch",
                          "timm:resnet18", "--num-classes", "3", "--depth", "1"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "suggested layer: layer4.0" in run.stdout
    bad = subprocess.run([sys.executable, "-m", "repinterp.cli", "layers", "--arch",
                          "timm:no_such_net"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert "timm has no architecture 'no_such_net'" in bad.stderr


def _hf_models() -> dict:
    from transformers import (
        ConvNextConfig,
        ConvNextForImageClassification,
        ResNetConfig,
        ResNetForImageClassification,
        SwinConfig,
        SwinForImageClassification,
        ViTConfig,
        ViTForImageClassification,
    )
    return {
        "vit": lambda: ViTForImageClassification(ViTConfig(
            image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
            num_attention_heads=2, intermediate_size=64, num_labels=3)),
        "resnet": lambda: ResNetForImageClassification(ResNetConfig(
            embedding_size=8, hidden_sizes=[8, 16], depths=[1, 2], num_labels=3)),
        "convnext": lambda: ConvNextForImageClassification(ConvNextConfig(
            num_stages=2, hidden_sizes=[8, 16], depths=[1, 2], num_labels=3)),
        "swin": lambda: SwinForImageClassification(SwinConfig(
            image_size=32, patch_size=4, embed_dim=8, depths=[1, 2], num_heads=[1, 2],
            window_size=4, num_labels=3)),
    }


needs_transformers = pytest.mark.skipif(importlib.util.find_spec("transformers") is None,
                                        reason="transformers is not installed")


@needs_transformers
@pytest.mark.parametrize("family,layer", [
    ("vit", "vit.layers.1"), ("resnet", "resnet.encoder.stages.1"),
    ("convnext", "convnext.encoder.stages.1"), ("swin", "swin.encoder.layers.1")])
def test_hugging_face_classifiers_through_hooks(family, layer):
    """torch.fx cannot trace Hugging Face's classifiers: the split runs the model with
    hooks (its verdict says so), suggested at the last block, and its boundaries are
    still tangent planes at points where the top two classes tie (float64)."""
    from benchmarks.torchvision_matrix import check_boundaries_at_points, diversify
    torch.manual_seed(0)
    model = _hf_models()[family]().double().eval()
    x = torch.randn(40, 3, 32, 32, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(1))
    diversify(model, x)
    assert suggest_layer(model) == layer
    it = RepresentativeInterpreter(model, layer, num_boundaries=6, progress=False).fit(x)
    # the verdict the network made at fit gives on the head it splits off
    assert it.approximate_
    assert head_verdict(split_model(model, layer).head).describe().startswith(
        "tangent: untraced (torch.fx")
    assert len(set(it.predictions_.tolist())) > 1
    region = it.explain(0)
    assert 0 in region.members.tolist() and len(region.weights) > 0
    assert torch.equal(it.contains(region, x).nonzero()[:, 0].sort().values,
                       region.members.sort().values)
    heat = it.heatmap(region, x[:2])
    assert heat.shape == (2, 32, 32) and torch.isfinite(heat).all()
    check_boundaries_at_points(it, region, tuple(x.shape[1:]))
    for name, mod in model.named_modules():    # the user's model keeps no hook
        assert not mod._forward_hooks, name


@needs_transformers
def test_a_hooked_split_that_a_skip_connection_bypasses_is_refused():
    """Inside a residual block the input reaches the logits around the layer: the check
    against the model refuses it (no graph says so beforehand)."""
    model = _hf_models()["resnet"]().double().eval()
    x = torch.randn(8, 3, 32, 32, dtype=torch.float64)
    with pytest.raises(UserError, match="disagrees with model"):
        RepresentativeInterpreter(model, "resnet.encoder.stages.1.layers.1.layer.2",
                                  progress=False).fit(x)
