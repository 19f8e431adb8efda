import pytest
import torch

from repinterp import RepresentativeInterpreter, UserError
from repinterp.heatmap import METHODS


@pytest.fixture(scope="module", params=["bisection", "shared"])
def fitted(request, net, images):
    it = RepresentativeInterpreter(net, "2", num_boundaries=20, sampling=request.param,
                                   seed=3, progress=False)
    return it.fit(images)


def test_members_contains_rank_agree_with_boundaries(fitted, images):
    for seed in (0, 5, 17):
        ri = fitted.explain(seed)
        z = fitted.features_
        inside = ((z @ ri.weights.T + ri.biases) >= 0).all(1)
        assert inside[seed]
        assert set(ri.members.tolist()) == set(inside.nonzero()[:, 0].tolist())
        assert torch.equal(ri.contains(images), inside)
        idx, dist = ri.rank(images)
        assert torch.equal(idx, ri.members)
        # semantic distance straight from the formula, in float64
        ref = torch.stack([(ri.weights @ z[seed] - ri.weights @ z[i]).abs().sum()
                           for i in idx.tolist()])
        torch.testing.assert_close(dist, ref)
        assert (dist[1:] >= dist[:-1]).all() and dist[0] == 0
        assert ri.members[0] == seed
        assert ri.predicted_class == int(fitted.predictions_[seed])
        others_inside = int((fitted.predictions_[ri.members] != ri.predicted_class).sum())
        assert others_inside <= ri.delta
        assert ri.purity == pytest.approx(1 - others_inside / ri.size)


def test_image_seed_equals_index_seed_region_membership(fitted, images):
    ri = fitted.explain(images[4])
    assert ri.seed_index is None
    assert ri.contains(images[4:5])[0]


@pytest.mark.parametrize("method", METHODS)
def test_heatmaps_in_unit_range_with_input_size(fitted, images, method):
    ri = fitted.explain(0)
    h = ri.heatmap(images[:7], method=method)
    assert h.shape == (7, 8, 8)
    assert h.min() >= 0 and h.max() <= 1
    assert h.max() > 0
    assert torch.equal(ri.heatmap(images[3], method=method)[0], h[3])


def test_same_seed_same_result(net, images):
    a = RepresentativeInterpreter(net, "2", num_boundaries=15, seed=7, progress=False).fit(images)
    b = RepresentativeInterpreter(net, "2", num_boundaries=15, seed=7, progress=False).fit(images)
    ra, rb = a.explain(11), b.explain(11)
    assert torch.equal(ra.weights, rb.weights) and torch.equal(ra.members, rb.members)


def test_summary_covers_classes_and_orders_regions(fitted):
    s = fitted.summarize(coverage=0.8, max_regions=4)
    preds = fitted.predictions_
    assert [c.cls for c in s] == sorted(set(preds.tolist()))
    for c in s:
        sizes = [r.size for r in c.regions]
        assert sizes == sorted(sizes, reverse=True)
        covered = torch.zeros(len(preds), dtype=torch.bool)
        for r in c.regions:
            covered[r.members] = True
            assert r.predicted_class == c.cls
        assert c.covered == int((covered & (preds == c.cls)).sum())
        assert c.coverage >= 0.8 or len(c.regions) == 4


def test_errors(net, images):
    it = RepresentativeInterpreter(net, "2", progress=False)
    with pytest.raises(RuntimeError, match="fit"):
        it.explain(0)
    it.fit(images)
    with pytest.raises(UserError, match="out of range"):
        it.explain(10_000)
    with pytest.raises(UserError, match="Tensor"):
        it.fit([1, 2, 3])
    with pytest.raises(UserError, match="sampling"):
        RepresentativeInterpreter(net, "2", sampling="nope")
    with pytest.raises(UserError, match="NaN"):
        it.features(images[:2] * float("nan"))


def test_one_class_only_is_reported(net, images):
    it = RepresentativeInterpreter(net, "2", progress=False).fit(images)
    keep = it.predictions_ == it.predictions_[0]
    it.fit(images[keep])
    with pytest.raises(UserError, match="every reference image is predicted as class"):
        it.explain(0)


@pytest.mark.parametrize("sampling", ["bisection", "shared"])
def test_linear_prefix_fast_path_equals_direct_product(net, images, sampling):
    from repinterp.split import linear_prefix
    fast = RepresentativeInterpreter(net, "2", num_boundaries=20, sampling=sampling,
                                     seed=1, progress=False).fit(images)
    slow = RepresentativeInterpreter(net, "2", num_boundaries=20, sampling=sampling,
                                     seed=1, progress=False, use_prefix=False).fit(images)
    assert linear_prefix(fast.split.head) is net[4]
    assert fast.store_.prefix is not None and slow.store_.prefix is None
    w, b = fast.explain(0).weights, fast.explain(0).biases
    torch.testing.assert_close(fast.store_.side_values(w, b), slow.store_.side_values(w, b),
                               rtol=0, atol=1e-10)
    for seed in range(0, 60, 7):
        a, c = fast.explain(seed), slow.explain(seed)
        assert torch.equal(a.members, c.members)
        assert torch.equal(a.weights, c.weights) and a.delta == c.delta
        torch.testing.assert_close(a.member_distances, c.member_distances, rtol=1e-9, atol=1e-9)


def test_half_precision_store(net, images):
    full = RepresentativeInterpreter(net, "2", num_boundaries=20, progress=False,
                                     use_prefix=False).fit(images)
    half = RepresentativeInterpreter(net, "2", num_boundaries=20, progress=False,
                                     use_prefix=False, feature_dtype=torch.float16).fit(images)
    assert half.features_.dtype == torch.float16
    assert half.store_.nbytes * 4 == full.store_.nbytes        # float64 -> float16
    ra, rb = full.explain(3), half.explain(3)
    overlap = len(set(ra.members.tolist()) & set(rb.members.tolist()))
    assert overlap >= 0.9 * max(ra.size, rb.size)


def test_locate_puts_images_in_their_largest_containing_region(fitted):
    s = fitted.summarize(coverage=0.9, max_regions=3)
    feats = fitted.features_
    where = s.locate_features(feats, fitted.predictions_)
    regions = s.regions
    for i in range(len(feats)):
        c = int(fitted.predictions_[i])
        own = [k for k, r in enumerate(regions) if r.predicted_class == c
               and bool(r.contains_features(feats[i:i + 1])[0])]
        assert int(where[i]) == (min(own) if own else -1)


def test_channels_last_copy_gives_the_same_features(net, images):
    fast = RepresentativeInterpreter(net, "2", progress=False)
    plain = RepresentativeInterpreter(net, "2", progress=False, channels_last=False)
    assert fast.channels_last and not plain.channels_last
    assert fast._feature_net is not plain.split.features
    torch.testing.assert_close(fast.features(images), plain.features(images),
                               rtol=1e-12, atol=1e-12)
    # the user's parameters keep their layout
    assert net[0].weight.is_contiguous()
