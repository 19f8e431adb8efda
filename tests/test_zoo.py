"""The model zoo (benchmarks/zoo.py): every entry builds, splits where it says and
classifies 28x28 gray images into 10 classes; the DEV / HELDOUT split is fixed, disjoint,
covers the zoo and holds a mix in each half. No training here (one slow test fits the
interpreter on an untrained copy of each entry)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from benchmarks import zoo


@pytest.mark.parametrize("name", list(zoo.ENTRIES))
def test_every_entry_builds_splits_and_classifies(name):
    entry = zoo.ENTRIES[name]
    model = zoo.build(name).eval()
    assert entry.layer in dict(model.named_modules())
    with torch.no_grad():
        out = model(torch.rand(2, 1, 28, 28))
    assert out.shape == (2, 10)
    assert entry.dataset in ("fashion-mnist", "digits")


def test_build_is_seeded_and_leaves_the_callers_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = zoo.build("fm_plain2", seed=0)
    after = torch.rand(1)
    b = zoo.build("fm_plain2", seed=0)
    c = zoo.build("fm_plain2", seed=1)
    assert torch.equal(before, after)
    for (_, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(pa, pb)
    assert not torch.equal(a.features[0].weight, c.features[0].weight)


def test_the_split_is_fixed_disjoint_and_covers_the_zoo():
    assert zoo.DEV == ("fm_plain2", "fm_avg3", "fm_bn5", "fm_res2", "fm_gelu", "dg_plain2",
                       "dg_strided3")
    assert zoo.HELDOUT == ("fm_vggbn4", "fm_strided3", "fm_resbn3", "fm_wide2", "fm_vit",
                           "dg_silu", "dg_bn3")
    assert len(zoo.DEV) >= 6 and len(zoo.HELDOUT) >= 6
    assert not set(zoo.DEV) & set(zoo.HELDOUT)
    assert set(zoo.DEV) | set(zoo.HELDOUT) == set(zoo.ENTRIES)
    assert len(zoo.ENTRIES) >= 12
    assert zoo.names("dev") == zoo.DEV and zoo.names("heldout") == zoo.HELDOUT
    assert zoo.names("all") == zoo.DEV + zoo.HELDOUT
    with pytest.raises(ValueError):
        zoo.names("test")


def _has(model: nn.Module, kind: type) -> bool:
    return any(isinstance(m, kind) for m in model.modules())


def test_each_half_holds_a_mix():
    def kinds(split):
        built = {n: zoo.build(n) for n in zoo.names(split)}
        return {
            "bn_vgg": any(isinstance(m, zoo.PlainCNN) and _has(m, nn.BatchNorm2d)
                          for m in built.values()),
            "residual": any(_has(m, zoo.ResBlock) for m in built.values()),
            "smooth": any(zoo.ENTRIES[n].head in ("gelu", "silu") for n in built),
            "digits": sum(zoo.ENTRIES[n].dataset == "digits" for n in built),
            "fashion": sum(zoo.ENTRIES[n].dataset == "fashion-mnist" for n in built),
            "vit": any(isinstance(m, zoo.TinyViT) for m in built.values()),
        }
    dev, held = kinds("dev"), kinds("heldout")
    assert held["bn_vgg"] and held["residual"]
    assert dev["smooth"] and held["smooth"]
    assert dev["digits"] >= 1 and held["digits"] >= 1
    assert dev["digits"] + held["digits"] >= 3
    assert dev["fashion"] >= 1 and held["fashion"] >= 1
    assert dev["vit"] or held["vit"]
    assert dev["residual"]


def test_the_smooth_heads_and_the_vit_are_what_they_say():
    gelu = {n for n, e in zoo.ENTRIES.items() if e.head == "gelu"}
    silu = {n for n, e in zoo.ENTRIES.items() if e.head == "silu"}
    assert gelu and silu
    for n in gelu:
        assert _has(zoo.build(n).classifier, nn.GELU)
    for n in silu:
        assert _has(zoo.build(n).classifier, nn.SiLU)
    vit = zoo.build("fm_vit")
    assert 1 <= len(vit.blocks) <= 2


def test_relu_heads_are_piecewise_linear():
    """After the split layer, a ReLU entry's head holds only piecewise linear modules."""
    allowed = (nn.Linear, nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
               nn.Flatten, nn.Dropout, nn.BatchNorm2d, nn.Sequential, nn.Identity)
    for name, e in zoo.ENTRIES.items():
        if e.head != "relu":
            continue
        model = zoo.build(name)
        head = model.classifier
        assert all(isinstance(m, allowed) for m in head.modules()), name


def test_digits_are_28x28_in_the_unit_range_split_1200_597():
    x, y, xt, yt = zoo.digits()
    assert x.shape == (1200, 1, 28, 28) and xt.shape == (597, 1, 28, 28)
    assert len(y) == 1200 and len(yt) == 597
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert set(y.tolist()) == set(range(10))
    assert torch.equal(zoo.digits()[0], x)


def test_the_cache_path_and_an_untrained_load_without_training(tmp_path, monkeypatch):
    monkeypatch.setenv("REPINTERP_CACHE", str(tmp_path))
    assert zoo.weights_path("dg_bn3", 3) == tmp_path / "zoo" / "dg_bn3-s3.pt"
    assert not zoo.is_cached("dg_bn3", 3)
    with pytest.raises(FileNotFoundError):
        zoo.load("dg_bn3", 3, train=False)
    with pytest.raises(KeyError):
        zoo.load("no_such_net")


@pytest.mark.slow
def test_a_digits_entry_trains_caches_and_loads_the_same(tmp_path, monkeypatch):
    monkeypatch.setenv("REPINTERP_CACHE", str(tmp_path))
    zm = zoo.load("dg_strided3", 5)
    assert zm.split == "dev" and zm.dataset == "digits" and not zm.model.training
    assert zm.accuracy >= 0.9
    assert zoo.weights_path("dg_strided3", 5).exists()
    again = zoo.load("dg_strided3", 5, train=False)
    assert again.accuracy == zm.accuracy
    x = zm.test_images[:16]
    with torch.no_grad():
        assert torch.equal(zm.model(x), again.model(x))
    assert not list(tmp_path.glob("zoo/*.tmp"))


@pytest.mark.slow
def test_the_interpreter_fits_at_every_split_layer():
    from repinterp import RepresentativeInterpreter
    images = torch.rand(64, 1, 28, 28)
    for name, e in zoo.ENTRIES.items():
        model = zoo.build(name).eval()
        RepresentativeInterpreter(model, e.layer, num_boundaries=10, progress=False).fit(images)
