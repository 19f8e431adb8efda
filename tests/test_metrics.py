import math

import numpy as np
import pytest
import torch
from nets import tiny_cnn, tiny_images
from pytorch_grad_cam.metrics.cam_mult_image import DropInConfidence, IncreaseInConfidence
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget
from torch import nn

from benchmarks.protocol import cam_weights, evaluate_seeds, reused_cam
from repinterp import RepresentativeInterpreter
from repinterp.core.metrics import average_drop_increase, keep_top, paired_ci


def test_keep_top_keeps_exactly_the_top_share():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 10, 10, generator=g)
    heat = torch.rand(4, 10, 10, generator=g)
    out = keep_top(x, heat, keep=0.2, baseline=-7.0)
    for i in range(4):
        kept = (out[i] != -7.0).all(0)
        assert int(kept.sum()) == 20
        assert heat[i][kept].min() > heat[i][~kept].max()
        assert torch.equal(out[i][:, kept], x[i][:, kept])
    assert int((keep_top(x[:1], heat[:1], keep=0.15)[0, 0] != 0).sum()) == math.ceil(15)


def test_drop_and_increase_match_pytorch_grad_cam():
    model = tiny_cnn(1, dtype=torch.float32).eval()
    x = tiny_images(1, 40, torch.float32)
    heat = torch.rand(40, 8, 8, generator=torch.Generator().manual_seed(2))
    masked = keep_top(x, heat)
    mask = (masked != 0).all(1).float().numpy()           # input * mask == masked
    cls = 1
    drop, inc = average_drop_increase(model, x, masked, cls)
    targets = [ClassifierOutputSoftmaxTarget(cls)] * len(x)
    their_drop = DropInConfidence()(x, mask, targets, model).reshape(-1)
    with torch.no_grad():
        y = model(x).softmax(1)[:, cls].numpy()
    np.testing.assert_allclose(drop.numpy(), their_drop / y, atol=1e-5)
    their_inc = IncreaseInConfidence()(x, mask, targets, model)
    np.testing.assert_array_equal(inc.numpy(), their_inc.reshape(-1))
    assert 0 < inc.sum() < len(x) and (drop > 0).any()   # both outcomes occur here


def test_grad_cam_weights_are_mean_gradients():
    model = tiny_cnn(0, dtype=torch.float32).train()
    x = tiny_images(0, 3, torch.float32)[0]
    layer = model[1]
    w = cam_weights("Grad-CAM", model, layer, x, 2)
    a = model[:2](x[None]).detach().requires_grad_(True)
    (g,) = torch.autograd.grad(model[2:](a)[0, 2], a)
    torch.testing.assert_close(w, g[0].mean((1, 2)), rtol=1e-5, atol=1e-7)
    # pytorch-grad-cam set eval and registered hooks: both undone
    assert model.training and all(not m._forward_hooks for m in model.modules())
    cam = reused_cam(w, a.detach(), (8, 8))
    assert cam.shape == (1, 8, 8) and (cam >= 0).all()


def test_paired_ci():
    a = np.array([1.0, 2.0, 3.0, np.nan])
    b = np.array([0.0, 1.0, 2.0, 5.0])
    mean, lo, hi = paired_ci(a, b)
    assert mean == 1.0 and lo == 1.0 and hi == 1.0


def test_drop_and_increase_on_known_probabilities():
    """Two classes, logits (x, 0): Y_0 = sigmoid(x). Image 0: Y 3/4 -> 1/2 (drop 1/3);
    image 1: 1/2 -> 3/4 (increase); image 2: unchanged (neither)."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(1, 2)).double()
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0], [0.0]]))
        model[1].bias.zero_()
    log3 = math.log(3.0)
    x = torch.tensor([[log3], [0.0], [1.0]], dtype=torch.float64).view(3, 1, 1, 1)
    masked = torch.tensor([[0.0], [log3], [1.0]], dtype=torch.float64).view(3, 1, 1, 1)
    drop, inc = average_drop_increase(model, x, masked, 0)
    torch.testing.assert_close(drop, torch.tensor([1 / 3, 0.0, 0.0], dtype=torch.float64),
                               rtol=0, atol=1e-15)
    assert inc.tolist() == [0.0, 1.0, 0.0]


def test_protocol_scores_are_the_metric_on_the_retrieved_images():
    """One seed, k = 5: the RI row is the mean drop of the region heat map over the five
    nearest unseen images of the region, and the Grad-CAM row the same for the seed's
    weights reused on the five Euclidean neighbours."""
    model = tiny_cnn(0, dtype=torch.float32)
    refs, unseen = tiny_images(0, 200, torch.float32), tiny_images(5, 100, torch.float32)
    it = RepresentativeInterpreter(model, "2", num_boundaries=10, progress=False).fit(refs)
    res = evaluate_seeds(it, refs, unseen, [3], ks=(5,), heatmaps=("margin",),
                         cams=("Grad-CAM",), extra_rows=False, progress=False)
    region = it.explain(3)
    idx, _ = it.rank(region, unseen)
    idx = idx[:5]
    assert len(idx) == 5
    x = unseen[idx]
    drop, inc = average_drop_increase(model, x, keep_top(x, it.heatmap(region, x)),
                                      region.predicted_class)
    assert res.ad["RI (margin)"][5][0] == pytest.approx(float(drop.mean()), abs=1e-6)
    assert res.ai["RI (margin)"][5][0] == pytest.approx(float(inc.mean()), abs=1e-12)
    feats = it.features(unseen)
    eu = torch.cdist(it.features_[3:4], feats)[0].topk(5, largest=False).indices
    w = cam_weights("Grad-CAM", model, model[1], refs[3], region.predicted_class)
    xe = unseen[eu]
    heat = reused_cam(w, feats[eu].reshape(-1, *it.feature_shape_), (8, 8))
    drop, _ = average_drop_increase(model, xe, keep_top(xe, heat), region.predicted_class)
    assert res.ad["Grad-CAM (reused)"][5][0] == pytest.approx(float(drop.mean()), abs=1e-6)


# --- deletion / insertion, blur fill, ROAD (issue 11) ----------------------------------
class PixelSum(nn.Module):
    """Logits ``[sum of pixel values weighted by W, 0]``: the class-0 probability is
    ``sigmoid(W . x)``, so every curve point can be computed by hand."""

    def __init__(self, weights: torch.Tensor):
        super().__init__()
        self.w = nn.Parameter(weights.double(), requires_grad=False)

    def forward(self, x):
        s = (x.double()[:, 0] * self.w).flatten(1).sum(1)
        return torch.stack([s, torch.zeros_like(s)], 1)


def test_deletion_insertion_against_a_hand_computation():
    from repinterp.core.metrics import deletion_insertion
    w = torch.tensor([[3.0, -1.0], [0.5, 2.0]])
    model = PixelSum(w)
    x = torch.ones(1, 1, 2, 2, dtype=torch.float64)
    heat = torch.tensor([[[0.9, 0.1], [0.2, 0.7]]])       # order: (0,0), (1,1), (1,0), (0,1)
    out = deletion_insertion(model, x, heat, 0, steps=4, fill=0.0)
    sig = lambda v: 1 / (1 + math.exp(-v))
    # deletion removes 3, then 2, then 0.5, then -1 from the sum 4.5
    dele = [sig(4.5), sig(1.5), sig(-0.5), sig(-1.0), sig(0.0)]
    ins = [sig(0.0), sig(3.0), sig(5.0), sig(5.5), sig(4.5)]
    torch.testing.assert_close(out["deletion"][0], torch.tensor(dele, dtype=torch.float64))
    torch.testing.assert_close(out["insertion"][0], torch.tensor(ins, dtype=torch.float64))
    area = lambda c: sum((a + b) / 2 for a, b in zip(c, c[1:], strict=False)) / 4
    assert out["deletion_auc"][0].item() == pytest.approx(area(dele), abs=1e-12)
    assert out["insertion_auc"][0].item() == pytest.approx(area(ins), abs=1e-12)
    # a per-pixel fill (here: the image itself) changes nothing
    same = deletion_insertion(model, x, heat, 0, steps=4, fill=x)
    assert torch.allclose(same["deletion"], same["deletion"][:, :1].expand(-1, 5))


def test_blur_keeps_constants_and_smooths():
    from repinterp.core.metrics import blur
    flat = torch.full((2, 3, 28, 28), 0.25)
    torch.testing.assert_close(blur(flat), flat)
    dot = torch.zeros(1, 1, 28, 28)
    dot[0, 0, 14, 14] = 1.0
    b = blur(dot, sigma=2.0)
    assert b.sum().item() == pytest.approx(1.0, abs=1e-5)     # mass kept away from borders
    assert b[0, 0, 14, 14] < 0.05 and b[0, 0, 14, 16] > 0.01
    assert torch.allclose(b[0, 0], b[0, 0].T, atol=1e-7)     # separable and symmetric
    fill = keep_top(dot, torch.rand(1, 28, 28), keep=0.2, baseline=b)
    kept = fill != b
    assert int(kept.sum()) <= math.ceil(0.2 * 784)


def test_road_is_pytorch_grad_cams_and_reproducible():
    from pytorch_grad_cam.metrics.road import ROADCombined

    from repinterp.metrics import road
    model = tiny_cnn(1, dtype=torch.float32).eval()
    x = tiny_images(1, 6, torch.float32)
    heat = torch.rand(6, 8, 8, generator=torch.Generator().manual_seed(3))
    before = torch.random.get_rng_state()
    a = road(model, x, heat, 1, seed=4)
    assert torch.equal(torch.random.get_rng_state(), before)       # caller's RNG untouched
    b = road(model, x, heat, 1, seed=4)
    np.testing.assert_array_equal(a["combined"], b["combined"])
    np.testing.assert_allclose(a["combined"], (a["lerf"] - a["morf"]) / 2)
    torch.manual_seed(4)
    targets = [ClassifierOutputSoftmaxTarget(1)] * 6
    theirs = ROADCombined()(x, heat.numpy(), targets, model)
    np.testing.assert_allclose(a["combined"], theirs, atol=0.05)   # noise differs in order
    assert a["combined"].shape == (6,)
    # a heat map that is each pixel's true contribution to the logit beats its reverse
    g = torch.Generator().manual_seed(5)
    lin = PixelSum(torch.randn(8, 8, generator=g))
    imgs = torch.rand(4, 1, 8, 8, generator=g, dtype=torch.float64).float()
    contribution = (imgs[:, 0].double() * lin.w).float()
    good = road(lin, imgs, contribution, 0)["combined"]
    bad = road(lin, imgs, -contribution, 0)["combined"]
    assert (good > 0).all() and (bad < 0).all()


# --- slice discovery (issue 12) ------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_matches_scikit_learn_with_ties(seed):
    from sklearn.metrics import roc_auc_score

    from repinterp.metrics import auroc
    g = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 5, (200,), generator=g).double()    # many ties
    labels = torch.rand(200, generator=g) < 0.3
    assert auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert auroc(labels.double(), labels) == 1.0
    assert auroc(-labels.double(), labels) == 0.0
    assert math.isnan(auroc(scores, torch.zeros(200, dtype=torch.bool)))


def test_precision_at_k_and_heat_share_by_hand():
    from repinterp.metrics import heat_share, precision_at_k
    in_slice = torch.tensor([True, False, True, True, False])
    scores = torch.tensor([0.5, 0.9, 1.0, -1.0, 0.0])      # order 2, 1, 0, 4, 3
    assert precision_at_k(scores, in_slice, 2) == 0.5
    assert precision_at_k(scores, in_slice, 3) == pytest.approx(2 / 3)
    assert precision_at_k(scores, in_slice, 25) == 0.6      # k > n: every item counts
    # ties go to the lower index
    assert precision_at_k(torch.zeros(5), in_slice, 1) == 1.0
    assert precision_at_k(torch.zeros(5), in_slice, 2) == 0.5
    with pytest.raises(ValueError, match="a score for every item"):
        precision_at_k(torch.tensor([2.0, 1.0]), in_slice, 2)
    with pytest.raises(ValueError, match="k >= 1"):
        precision_at_k(scores, in_slice, 0)
    heat = torch.tensor([[[1.0, 3.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])
    mask = torch.tensor([[False, True], [False, False]])
    share = heat_share(heat, mask)
    assert share[0].item() == 0.75 and math.isnan(share[1].item())
    # one mask per map
    per = heat_share(heat[:1].expand(2, 2, 2), torch.stack([mask, ~mask]))
    assert per.tolist() == [0.75, 0.25]


@pytest.mark.parametrize("seed", range(5))
def test_precision_at_k_is_dcbench_formula(seed):
    """dcbench: ``slice[np.argsort(-pred_slice)[:k]].mean()`` (a stable sort here, so
    that ties are reproducible)."""
    from repinterp.metrics import precision_at_k
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 6, 300).astype(float)
    in_slice = rng.random(300) < 0.2
    for k in (1, 10, 25, 100, 300, 1000):
        ref = in_slice[np.argsort(-scores, kind="stable")[:k]].mean()
        assert precision_at_k(torch.from_numpy(scores), torch.from_numpy(in_slice),
                              k) == ref


def test_a_one_member_region_no_longer_scores_one():
    """Issue 19: a region holding one marked image and nothing else scored p@25 = 1.0;
    over 25 items of the whole ranking it is what the rest of the ranking gives."""
    from repinterp.core.region import Region
    from repinterp.metrics import precision_at_k
    feats = torch.tensor([[2.0], [-1.0], [-2.0], [-3.0]], dtype=torch.float64)
    region = Region(predicted_class=0, weights=torch.tensor([[1.0]], dtype=torch.float64),
                    biases=torch.tensor([-1.0], dtype=torch.float64),
                    boundary_points=torch.zeros(1, 1), pairs=torch.tensor([[0, 1]]),
                    delta=0, min_delta=0, members=torch.tensor([0]),
                    member_distances=torch.zeros(1), purity=1.0, seed_index=0,
                    seed_values=torch.tensor([1.0], dtype=torch.float64),
                    feature_shape=(1,))
    in_slice = torch.tensor([True, False, False, False])
    scores = region.slice_scores(feats)
    assert scores.argsort(descending=True).tolist() == [0, 1, 2, 3]
    assert precision_at_k(scores, in_slice, 1) == 1.0
    assert precision_at_k(scores, in_slice, 4) == 0.25


@pytest.mark.parametrize("seed", range(3))
def test_region_slice_scores_match_a_sort_by_the_formula(seed):
    """Brute force: sort by (violated boundaries, semantic distance, index)."""
    from repinterp.core.region import Region
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(6, 5, generator=g, dtype=torch.float64)
    b = torch.randn(6, generator=g, dtype=torch.float64)
    feats = torch.randn(200, 5, generator=g, dtype=torch.float64)
    feats[:3] = feats[3]                                        # ties
    seed_values = (feats[10] @ w.T + b).abs()
    region = Region(predicted_class=0, weights=w, biases=b, boundary_points=w,
                    pairs=torch.zeros(6, 2, dtype=torch.long), delta=0, min_delta=0,
                    members=torch.tensor([], dtype=torch.long),
                    member_distances=torch.zeros(0), purity=1.0, seed_index=None,
                    seed_values=seed_values, feature_shape=(5,))
    keys = []
    for i, z in enumerate(feats):
        side = [float(z @ w[h] + b[h]) for h in range(6)]
        keys.append((sum(v < 0 for v in side),
                     sum(abs(side[h] - float(seed_values[h])) for h in range(6)), i))
    expected = [k[2] for k in sorted(keys)]
    got = torch.sort(-region.slice_scores(feats), stable=True).indices.tolist()
    assert got == expected
    inside = region.contains_features(feats)
    assert got[:int(inside.sum())] == region.rank_features(feats)[0].tolist()
