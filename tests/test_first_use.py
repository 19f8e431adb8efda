"""A first try without --layer: the layer `repinterp layers` suggests is used and named."""
from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import cli, pixels, png, script_model

from repinterp.core.layers import suggest_layer


@pytest.fixture()
def folder(tmp_path):
    for i, arr in enumerate(pixels(0, 45)):
        png(tmp_path / "data" / f"c{i % 3}" / f"img{i:02d}.png", arr[0])
    return tmp_path / "data"


@pytest.mark.slow
def test_without_layer_the_suggested_one_is_used_and_named(tmp_path, folder, capsys):
    import torch
    model = script_model(tmp_path)
    suggested = suggest_layer(torch.jit.load(str(model)))
    assert suggested == "0"                    # tiny_cnn: the only convolution
    code, out, err = cli(capsys, "layers", "--model", model)        # TorchScript
    assert code == 0, err
    assert out.splitlines()[1].startswith("* 0 ") and out.endswith("suggested layer: 0\n")
    base = ["--model", model, "--data", folder, "--quiet", "--num-boundaries", "8"]
    code, out, err = cli(capsys, "summarize", *base, "--out", tmp_path / "auto")
    assert code == 0, err
    assert f"at layer {suggested};" in out
    code, _, err = cli(capsys, "summarize", *base, "--layer", suggested,
                       "--out", tmp_path / "given")
    assert code == 0, err
    auto, given = (json.loads((tmp_path / d / "summary.json").read_text())
                   for d in ("auto", "given"))
    assert auto["layer"] == given["layer"] == suggested
    assert auto["classes"] == given["classes"]         # the same regions, member for member
    code, out, err = cli(capsys, "explain", *base, "--seed-index", "3",
                         "--out", tmp_path / "one")
    assert code == 0, err
    assert f"at layer {suggested}:" in out


def test_a_model_with_nothing_to_suggest_names_the_flag(tmp_path, folder, capsys):
    import torch
    from torch import nn
    linear = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))           # no convolution
    torch.jit.script(linear).save(str(tmp_path / "lin.pt"))
    code, _, err = cli(capsys, "summarize", "--model", tmp_path / "lin.pt", "--data", folder,
                       "--out", tmp_path / "o", "--quiet")
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "no layer to suggest" in err and "--layer" in err
    assert not (tmp_path / "o").exists()


def test_preprocess_on_images_already_normalised_warns(net, images):
    import warnings

    from repinterp import RepresentativeInterpreter
    with pytest.warns(UserWarning, match="normalised twice"):
        RepresentativeInterpreter(net, "2", num_boundaries=4, progress=False,
                                  preprocess=lambda x: x * 2 - 1).fit(images[:40])
    with warnings.catch_warnings():
        warnings.simplefilter("error")                 # images as they look: no warning
        RepresentativeInterpreter(net, "2", num_boundaries=4, progress=False,
                                  preprocess=lambda x: x * 2 - 1).fit(images[:40].sigmoid())


def test_an_index_of_a_source_of_ones_own_reads_back(tmp_path, net, images):
    """A picklable source that is not an ImageSource (a dataclass with ``__len__`` and
    ``read``) is recorded by its type's name, and its index reads back and summarises."""
    from dataclasses import dataclass

    from repinterp import build_index, load_index

    @dataclass
    class Mine:
        n: int

        def __len__(self) -> int:
            return self.n

        def read(self, start, end):
            items = list(range(start, min(end, self.n)))
            return images[items], items, [f"mine[{i}]" for i in items]

    out = build_index(net, "2", Mine(120), tmp_path / "idx", bank=32, pilot=60,
                      shard_size=50, progress=False)
    loaded = load_index(out)
    assert loaded.manifest["data"] == {"source": "Mine"}
    assert len(loaded.index) == 120 and loaded.index.summarize(progress=False).regions


def test_class_names_are_checked_on_a_restored_fit_too(net, images):
    from repinterp import RepresentativeInterpreter, UserError
    state = RepresentativeInterpreter(net, "2", progress=False).fit(images[:40]).fit_state_()
    again = RepresentativeInterpreter(net, "2", progress=False, class_names=["a", "b", "c"])
    assert again.fit(images[:40], state=state).restored_
    with pytest.raises(UserError, match="class"):
        RepresentativeInterpreter(net, "2", progress=False,
                                  class_names=["a", "b"]).fit(images[:40], state=state)


@pytest.mark.slow
def test_a_demo_architecture_without_weights_is_the_trained_demo_model(tmp_path, capsys):
    """``--arch vgg`` alone is the demo's CNN (the shipped weights), not an untrained
    VGG: an image it classifies right is explained as its class."""
    import re

    import torch

    from repinterp.demo.data import FASHION_CLASSES, load_fashion_mnist
    from repinterp.demo.models import load_demo_model
    x, y = load_fashion_mnist("test", normalize=False)
    for i in range(30):
        png(tmp_path / "data" / f"img{i:02d}.png",
            (x[i, 0] * 255).round().to(torch.uint8).numpy())
    model, _ = load_demo_model()
    with torch.no_grad():
        pred = model(load_fashion_mnist("test")[0][:30]).argmax(1)
    k = int((pred == y[:30]).nonzero()[0, 0])
    code, out, err = cli(capsys, "explain", "--arch", "vgg", "--data", tmp_path / "data",
                         "--seed-index", k, "--num-boundaries", "8", "--quiet",
                         "--out", tmp_path / "out")
    assert code == 0, err
    assert "random weights" not in err
    name = re.match(r"region of img(\d\d)\.png \(([^)]+)\)", out)
    assert name and int(name.group(1)) == k, out
    assert name.group(2) == FASHION_CLASSES[int(y[k])], out


@pytest.mark.slow
def test_an_architecture_without_weights_warns_that_it_is_untrained(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for i in range(12):
        png(tmp_path / "data" / f"c{i % 3}" / f"img{i:02d}.png",
            rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    code, _, err = cli(capsys, "summarize", "--arch", "resnet18", "--num-classes", "3",
                       "--data", tmp_path / "data", "--quiet", "--num-boundaries", "4",
                       "--out", tmp_path / "out")
    # an untrained network may predict one class for all (then exit 2): warned either way
    assert code in (0, 2) and "resnet18 without weights has random weights" in err, err
    code, _, err = cli(capsys, "layers", "--arch", "resnet18", "--num-classes", "3")
    assert code == 0 and "random weights" not in err        # a listing needs no weights
