"""Each heat map formula on a 2x2x2 feature map with fixed normals, against values
computed by hand (the output size equals the map's, so the bilinear upsampling is the
identity), and against a slow per-pixel reference at another size."""
import pytest
import torch
import torch.nn.functional as F

from repinterp.core.heatmap import METHODS, region_heatmap

FEAT = torch.tensor([[[[1., 2.], [3., 4.]], [[0., 1.], [-1., 2.]]]], dtype=torch.float64)
NORMALS = torch.tensor([[[[1., 0.], [0., -1.]], [[2., 1.], [0., 0.]]],
                        [[[-1., -1.], [0., 1.]], [[0., 0.], [1., 1.]]]], dtype=torch.float64)

BY_HAND = {
    # a_0 = (0, .75), a_1 = (-.25, .5): map_0 = [[0, .75], [0, 1.5]] -> [[0, .5], [0, 1]];
    # map_1 = ReLU([[-.25, 0], [-1.25, 0]]) = 0 -> 0; mean over h
    "lineage": [[0.0, 0.25], [0.0, 0.5]],
    # sum_k ReLU(w) psi: h0 [[1, 1], [0, 0]], h1 ReLU([[0, 0], [-1, 6]]) -> [[0, 0], [0, 1]]
    "positive": [[0.5, 0.5], [0.0, 0.5]],
    # ReLU(sum_k w psi): h0 ReLU([[1, 1], [0, -4]]), h1 ReLU([[-1, -2], [-1, 6]])
    "contribution": [[0.5, 0.5], [0.0, 0.5]],
    "logprob": [[0.5, 0.5], [0.0, 0.5]],
    # ReLU(sum_h sum_k w psi) = ReLU([[0, -1], [-1, 2]]) -> [[0, 0], [0, 1]]
    "margin": [[0.0, 0.0], [0.0, 1.0]],
}


@pytest.mark.parametrize("method", METHODS)
def test_heatmap_by_hand(method):
    out = region_heatmap(NORMALS, FEAT, (2, 2), method)
    torch.testing.assert_close(out[0], torch.tensor(BY_HAND[method], dtype=torch.float64),
                               rtol=0, atol=1e-15)


def slow(method, normals, feat, size, cell=1):
    """Straight from the formulas, pixel by pixel; with ``cell``, the pre-ReLU value of
    each ``cell x cell`` block of positions averaged (the head's grid)."""
    def up_norm(m):
        m = F.interpolate(m[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
        span = m.max() - m.min()
        return (m - m.min()) / span if span > 0 else torch.zeros_like(m)
    C, h, w = feat.shape
    maps = []
    for wh in (normals if method != "margin" else [None]):
        m = torch.zeros(h, w, dtype=feat.dtype)
        for i in range(h):
            for j in range(w):
                if method == "lineage":
                    v = sum(wh[k].mean() * feat[k, i, j] for k in range(C))
                elif method == "positive":
                    v = sum(max(float(wh[k, i, j]), 0.0) * feat[k, i, j] for k in range(C))
                elif method == "margin":
                    v = sum(normals[p, k, i, j] * feat[k, i, j] for p in range(len(normals))
                            for k in range(C))
                else:
                    v = sum(wh[k, i, j] * feat[k, i, j] for k in range(C))
                m[i, j] = float(v)
        if cell > 1:
            m = torch.tensor([[float(m[a:a + cell, b:b + cell].mean())
                               for b in range(0, w, cell)] for a in range(0, h, cell)],
                             dtype=feat.dtype)
        maps.append(up_norm(m.clamp_min(0)))
    return torch.stack(maps).mean(0)


@pytest.mark.parametrize("method", METHODS)
def test_heatmap_matches_slow_reference(method):
    g = torch.Generator().manual_seed(0)
    normals = torch.randn(3, 4, 3, 3, generator=g, dtype=torch.float64)
    feats = torch.randn(2, 4, 3, 3, generator=g, dtype=torch.float64).relu()
    out = region_heatmap(normals, feats, (7, 5), method)
    for n in range(2):
        torch.testing.assert_close(out[n], slow(method, normals, feats[n], (7, 5)),
                                   rtol=0, atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_heatmap_on_the_head_grid_matches_slow_reference(method):
    g = torch.Generator().manual_seed(1)
    normals = torch.randn(3, 4, 6, 4, generator=g, dtype=torch.float64)
    feats = torch.randn(2, 4, 6, 4, generator=g, dtype=torch.float64).relu()
    out = region_heatmap(normals, feats, (9, 7), method, grid=(3, 2))
    for n in range(2):
        torch.testing.assert_close(out[n], slow(method, normals, feats[n], (9, 7), cell=2),
                                   rtol=0, atol=1e-12)
    # the feature map's own grid: unchanged
    torch.testing.assert_close(region_heatmap(normals, feats, (9, 7), method, grid=(6, 4)),
                               region_heatmap(normals, feats, (9, 7), method))


def test_a_strided_head_leaves_dots_on_the_feature_grid_and_none_on_its_own():
    """Issue 19: a head that starts with a stride-2 convolution reads only even
    positions, so every boundary normal is zero on odd ones and the map on the feature
    grid is a grid of dots; on the head's grid (4 x 4 here) it is not."""
    from repinterp import RepresentativeInterpreter
    from repinterp.core.network import SplitNetwork
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),             # psi: 8 x 8
        torch.nn.Conv2d(4, 6, 1, stride=2), torch.nn.ReLU(),              # head: 4 x 4
        torch.nn.Flatten(), torch.nn.Linear(6 * 16, 3)).double().eval()
    x = torch.randn(60, 1, 8, 8, dtype=torch.float64)
    with torch.no_grad():                                 # every class predicted
        model[5].weight.mul_(10)
        model[5].bias.sub_(model(x).mean(0))
    kw = dict(num_boundaries=10, progress=False, channels_last=False, min_purity=None)
    dots = RepresentativeInterpreter(model, "1", heatmap_grid="features", **kw).fit(x)
    cells = RepresentativeInterpreter(model, "1", heatmap_grid="head", **kw).fit(x)
    # the head's own grid, as the network the interpreter makes at fit finds it
    split = SplitNetwork(model, "1", progress=False, channels_last=False)
    split.features(x)
    assert split.head_grid == (4, 4)
    region = dots.explain(0)
    normals = region.weights.reshape(-1, 4, 8, 8)
    assert bool((normals[:, :, 1::2, :] == 0).all() and (normals[:, :, :, 1::2] == 0).all())
    flat = dots.heatmap(region, x[:5])                     # the image size is the map's
    assert bool((flat[:, 1::2, :] == 0).all() and (flat[:, :, 1::2] == 0).all())
    pooled = cells.heatmap(region, x[:5])
    feats = cells.features(x[:5], flat=False, progress=False)
    for n in range(5):
        torch.testing.assert_close(pooled[n], slow("margin", normals, feats[n], (8, 8),
                                                   cell=2), rtol=0, atol=1e-12)
    assert float((pooled[:, 1::2, 1::2] > 0).double().mean()) > 0.5
    with pytest.raises(Exception, match="heatmap_grid must be one of"):
        RepresentativeInterpreter(model, "1", heatmap_grid="pixels", **kw).fit(x)


def test_heatmap_needs_a_convolutional_layer():
    with pytest.raises(ValueError, match="convolutional"):
        region_heatmap(NORMALS.flatten(1), FEAT.flatten(1), (2, 2))


@pytest.mark.parametrize("method", METHODS)
def test_reference_heatmap_equals_heatmap_of_the_images(net, images, method):
    """The report draws references from their stored features: the same maps as a pass
    of the images themselves, for every method (float64)."""
    from repinterp import RepresentativeInterpreter
    interp = RepresentativeInterpreter(net, "2", num_boundaries=10, progress=False,
                                       channels_last=False).fit(images)
    region = interp.explain(3)
    idx = region.members[:7]
    stored = interp.reference_heatmap(region, idx, method)
    assert stored.shape == (len(idx), 8, 8)
    assert torch.allclose(stored, interp.heatmap(region, images[idx], method), atol=1e-12)
