"""Feature storage: half precision, memory-mapped files, chunked products."""

import pytest
import torch
from helpers import split_store
from torch import nn
from torch.utils.data import Dataset

from repinterp import RepresentativeInterpreter
from repinterp.core import store as store_module
from repinterp.core.boundaries import bisect_segments
from repinterp.core.errors import UserError


def _mapped_feature_files() -> list[str]:
    with open("/proc/self/maps") as f:
        return [ln for ln in f if "repinterp-features-" in ln]


@pytest.mark.parametrize("use_prefix", [False, True])
def test_store_dir_gives_the_same_regions_and_leaves_nothing(net, images, tmp_path,
                                                             use_prefix):
    kw = dict(num_boundaries=20, progress=False, use_prefix=use_prefix)
    mem = RepresentativeInterpreter(net, "2", **kw).fit(images)
    disk = RepresentativeInterpreter(net, "2", store_dir=tmp_path, **kw).fit(images)
    assert torch.equal(mem.features_, disk.features_)
    # the features live in a mapped file, already unlinked: nothing in the directory
    assert list(tmp_path.iterdir()) == []
    assert any("(deleted)" in ln for ln in _mapped_feature_files())
    for seed in (0, 3, 7):
        a, b = mem.explain(seed), disk.explain(seed)
        assert torch.equal(a.members, b.members)
        torch.testing.assert_close(a.weights, b.weights, rtol=0, atol=0)
    del disk
    import gc
    gc.collect()
    assert _mapped_feature_files() == []          # the mapping (and its disk space) is gone


class Endless(Dataset):
    """``2**50`` images (the given ones, over and over): only a Dataset's length is known
    before it is read."""

    def __init__(self, x: torch.Tensor):
        self.x = x

    def __len__(self) -> int:
        return 1 << 50

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.x[i % len(self.x)]


def test_store_dir_errors(net, images, tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        RepresentativeInterpreter(net, "2", progress=False,
                                  store_dir=tmp_path / "nope").fit(images)
    # more than any disk holds (2**50 references of 512 bytes): an error before the first
    # features are stored, not a crash later, and nothing left in the directory
    with pytest.raises(UserError, match=r"cannot reserve 536870912\.00 GiB"):
        RepresentativeInterpreter(net, "2", progress=False,
                                  store_dir=tmp_path).fit(Endless(images[:8]))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_chunked_half_products_equal_the_direct_product(net, images, monkeypatch, dtype):
    interp = RepresentativeInterpreter(net, "2", num_boundaries=5, progress=False,
                                       use_prefix=False, feature_dtype=dtype).fit(images)
    assert interp.features_.dtype == dtype
    assert interp.nbytes_ == interp.features_.numel() * 2
    # the interpreter's store, made as fit makes it (the same features)
    _, store = split_store(net, "2", images, use_prefix=False, feature_dtype=dtype)
    assert torch.equal(store.z, interp.features_)
    assert store.z.dtype == dtype and store.nbytes == store.z.numel() * 2
    g = torch.randn(7, store.z.shape[1], dtype=torch.float64)
    c = torch.randn(7, dtype=torch.float64)
    direct = store.z.double() @ g.T + c                # float64: the products are exact
    monkeypatch.setattr(store_module, "CHUNK_BYTES", store.z.shape[1] * 2 * 13)
    assert store_module.chunk_rows(store.z.shape[1] * 2) == 13
    chunked = store.side_values(g, c)
    torch.testing.assert_close(chunked, direct, rtol=0, atol=1e-12)


class NoisyMargin(nn.Module):
    """Logits ``[m, 0]`` with ``m = z_0 + a sin(1e12 z_0)``: a margin that is ``z_0`` up to a
    deterministic noise of amplitude ``a`` that changes between neighbouring floats (as
    a deep float32 head's rounding does: measured about 300 eps of the logits on
    resnet50 at 224)."""

    def __init__(self, a: float):
        super().__init__()
        self.a = a

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        m = z[:, 0] + self.a * torch.sin(1e12 * z[:, 0])
        return torch.stack([m, torch.zeros_like(m)], 1)


@pytest.mark.parametrize("a", [3e-5, 1e-5, 3e-6])
def test_boundary_search_stops_at_the_noise_of_a_float32_head(a):
    """The search must stop where the noise makes further steps meaningless (the earlier
    rule ran every segment of ``a = 3e-5`` to ``max_iter``: 42 passes), with its points
    on the true boundary ``z_0 = 0`` to the noise's precision."""
    g = torch.Generator().manual_seed(0)
    origin = torch.tensor([[1.0, 0.0]])
    targets = torch.stack([-torch.rand(30, generator=g) - 0.5, torch.rand(30, generator=g)], 1)
    head = NoisyMargin(a)
    passes = []
    hook = head.register_forward_pre_hook(lambda m, i: passes.append(len(i[0])))
    try:
        t = bisect_segments(head, origin, targets, 0, (2,), max_iter=40)
    finally:
        hook.remove()
    assert len(passes) <= 20
    points = origin + t * (targets - origin)
    assert (points[:, 0].abs() <= 4 * a).all()
    assert (head(points)[:, 0] >= 0).all()          # the last point still classified 0
