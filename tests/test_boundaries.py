import pytest
import torch
from nets import tiny_cnn, tiny_images

from repinterp.core.boundaries import bisect_segments, boundaries_at, flip, orientation
from repinterp.core.split import split_model


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bisection_boundaries_are_exact_local_affine_maps(seed):
    model = tiny_cnn(seed).eval()
    split = split_model(model, "2")
    x = tiny_images(seed, 200)
    with torch.no_grad():
        z = split.features(x)
    shape = tuple(z.shape[1:])
    z = z.flatten(1)
    pred = split.head(z.view(-1, *shape)).argmax(1)
    cls = int(pred[0])
    targets = z[pred != cls][:20]
    t = bisect_segments(split.head, z[0:1], targets, cls, shape, tol=1e-9)
    pts = z[0:1] + t * (targets - z[0:1])
    c1 = torch.full((len(pts),), cls)
    b = boundaries_at(split.head, pts, shape, c1)
    logits = split.head(pts.view(-1, *shape)).detach()
    # on cls's side (an exact landing is a tie: G_cls = max G), and the top-2 margin is
    # ~0: the point is on the boundary
    assert (logits[:, cls] >= logits.max(1).values - 1e-12).all()  # float64 rounding
    top2 = logits.topk(2, 1).values
    assert (top2[:, 0] - top2[:, 1]).max() < 1e-8
    for q in range(len(pts)):
        c2 = int(b.pairs[q, 1])
        def margin(v):
            out = split.head(v.view(1, *shape))[0]
            return out[cls] - out[c2]
        jac = torch.autograd.functional.jacobian(margin, pts[q])
        torch.testing.assert_close(b.weights[q], jac, rtol=0, atol=1e-12)
        # w.z + b reproduces the margin at the point and at nearby points of its piece
        torch.testing.assert_close(b.weights[q] @ pts[q] + b.biases[q], margin(pts[q]).detach(),
                                   rtol=0, atol=1e-10)
        step = 1e-7 * (pts[q] - z[0])
        torch.testing.assert_close(b.weights[q] @ (pts[q] - step) + b.biases[q],
                                   margin(pts[q] - step).detach(), rtol=0, atol=1e-10)


def test_finite_difference_agrees_with_normal(net, images):
    split = split_model(net.eval(), "2")
    with torch.no_grad():
        z = split.features(images[:5])
    shape = tuple(z.shape[1:])
    b = boundaries_at(split.head, z.flatten(1), shape)
    e = torch.zeros(z[0].numel(), dtype=torch.float64)
    for q in range(5):
        c1, c2 = b.pairs[q].tolist()
        for k in (0, 7, 33):
            e.zero_()
            e[k] = 1e-6
            f = lambda v: (lambda o: o[c1] - o[c2])(split.head(v.view(1, *shape))[0]).item()
            fd = (f(z[q].flatten() + e) - f(z[q].flatten() - e)) / 2e-6
            assert abs(fd - b.weights[q, k].item()) < 1e-6


def test_flip_orients_the_seed_and_swaps_pairs(net, images):
    split = split_model(net.eval(), "2")
    with torch.no_grad():
        z = split.features(images[:30]).flatten(1)
    b = boundaries_at(split.head, z, (4, 4, 4))
    for z0 in z[:5]:
        signs = orientation(b.weights @ z0 + b.biases)
        o = flip(b, signs)
        assert (o.weights @ z0 + o.biases >= 0).all()
        assert torch.equal(o.weights, b.weights * signs[:, None])
        assert torch.equal(o.biases, b.biases * signs)
        flipped = signs < 0
        assert torch.equal(o.pairs[flipped], b.pairs[flipped].flip(1))
        assert torch.equal(o.pairs[~flipped], b.pairs[~flipped])


@pytest.mark.parametrize("sampling", ["bisection", "shared"])
@pytest.mark.parametrize("use_prefix", [True, False])
def test_interpreter_boundaries_are_exact_on_the_full_head(use_prefix, sampling):
    """Both sampling paths, through the head's linear prefix or not, give LDBs exact at
    their points: ``w = grad (G_c1 - G_c2)`` there, with the pair's order after flipping."""
    from repinterp import RepresentativeInterpreter
    model = tiny_cnn(0).eval()
    x = tiny_images(0, 200)
    it = RepresentativeInterpreter(model, "2", num_boundaries=15, progress=False,
                                   sampling=sampling, use_prefix=use_prefix).fit(x)
    # the prefix's projections are kept, and counted, exactly when it is used
    z = it.features_
    assert (it.nbytes_ > z.numel() * z.element_size()) == use_prefix
    region = it.explain(5)
    # the full head: the user's (the interpreter's private copy is a copy of it)
    head, shape = split_model(model, "2").head, it.feature_shape_
    for q in range(region.num_boundaries):
        c1, c2 = region.pairs[q].tolist()
        def margin(v):
            out = head(v.view(1, *shape))[0]
            return out[c1] - out[c2]
        p = region.boundary_points[q]
        if sampling == "bisection":
            assert abs(float(margin(p))) < 1e-5               # bisection tolerance
        jac = torch.autograd.functional.jacobian(margin, p)
        torch.testing.assert_close(region.weights[q], jac, rtol=0, atol=1e-10)
        torch.testing.assert_close(region.weights[q] @ p + region.biases[q],
                                   margin(p).detach(), rtol=0, atol=1e-10)
