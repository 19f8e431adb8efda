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


def slow(method, normals, feat, size):
    """Straight from the formulas, pixel by pixel."""
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
                m[i, j] = max(float(v), 0.0)
        maps.append(up_norm(m))
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
