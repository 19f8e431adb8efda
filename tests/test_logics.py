"""Issue 12: separating the reasons for one prediction. A hand-built network with two
known reasons for class 0 (an object, or a mark), exact k-means / silhouette checks
against scikit-learn, hand-computed descriptors and logic boundaries."""
import numpy as np
import pytest
import torch
from helpers import MARK, two_logic_images, two_logic_net
from sklearn.metrics import silhouette_score

from repinterp import Region, RepresentativeInterpreter
from repinterp.core.logics import (
    centroid_boundaries,
    choose_logics,
    kmeans,
    logic_descriptors,
    silhouette,
)


@pytest.fixture(scope="module")
def fitted():
    model = two_logic_net()
    x, groups = two_logic_images()
    interp = RepresentativeInterpreter(model, "1", num_boundaries=20, progress=False).fit(x)
    assert torch.equal(interp.predictions_, (groups == 2).long())   # the design holds
    return interp, groups


def test_logic_labels_split_the_two_reasons(fitted):
    interp, groups = fitted
    idx, labels = interp.logic_labels(0)
    assert torch.equal(idx, torch.arange(70))
    assert torch.equal(labels, (groups[:70] == 1).long())     # 0 = the larger logic
    idx1, labels1 = interp.logic_labels(1)                   # one reason: not split
    assert torch.equal(labels1, torch.zeros(50, dtype=torch.long))


def test_separate_logics_gives_one_region_per_reason(fitted):
    interp, groups = fitted
    plain = interp.summarize(coverage=1.0, max_regions=3, classes=[0])
    # the paper's summary puts both reasons in one region
    assert len(plain.regions) == 1
    assert set(plain.regions[0].members.tolist()) == set(range(70))
    sep = interp.summarize(coverage=1.0, max_regions=3, classes=[0], separate_logics=True)
    assert [r.logic for r in sep.regions] == [0, 1]
    assert set(sep.regions[0].members.tolist()) == set(range(40))
    assert set(sep.regions[1].members.tolist()) == set(range(40, 70))
    assert sep.classes[0].covered == 70 and sep.meta["separate_logics"] is True
    # the mark's region's heat map is on the mark: the mark pixel is the hottest
    mark_region = sep.regions[1]
    heat = interp.heatmap(mark_region, interp.features_[40:70].reshape(-1, 1, 4, 4))
    assert bool((heat.flatten(1).argmax(1) == MARK[0] * 4 + MARK[1]).all())
    # a region stays a plain value and round-trips with its logic
    back = Region.from_dict(mark_region.to_dict())
    assert back.logic == 1 and torch.equal(back.members, mark_region.members)
    legacy = {k: v for k, v in mark_region.to_dict().items() if k != "logic"}
    assert Region.from_dict(legacy).logic is None


def test_separate_logics_is_reproducible(fitted):
    interp, _ = fitted
    a = interp.summarize(coverage=1.0, max_regions=2, separate_logics=True)
    b = interp.summarize(coverage=1.0, max_regions=2, separate_logics=True)
    assert [r.members.tolist() for r in a.regions] == [r.members.tolist() for r in b.regions]


def test_logic_descriptors_by_hand():
    r = torch.zeros(2, 2, 2, 2, dtype=torch.float64)
    r[0, 0, 0, 0], r[0, 1, 0, 0], r[0, 1, 1, 1] = 1.0, 2.0, 4.0   # positions: 3, 0, 0, 4
    r[1, 0, 1, 0] = -5.0
    d = logic_descriptors(r)
    assert torch.allclose(d[0], torch.tensor([3.0, 0, 0, 4], dtype=torch.float64) / 5)
    assert torch.allclose(d[1], torch.tensor([0.0, 0, -1, 0], dtype=torch.float64))
    flat = logic_descriptors(torch.tensor([[3.0, 4.0]]))
    assert torch.allclose(flat, torch.tensor([[0.6, 0.8]], dtype=torch.float64))


def test_centroid_boundaries_by_hand():
    means = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0]], dtype=torch.float64)
    w, b = centroid_boundaries(means, 1)
    assert torch.equal(w, torch.tensor([[2.0, 0.0], [2.0, -4.0]], dtype=torch.float64))
    # b = -w . (mu_A + mu_B) / 2: the midpoint lies on the boundary, mu_A on its + side
    assert torch.equal(b, torch.tensor([-2.0, 6.0], dtype=torch.float64))
    assert bool(((means[1] @ w.T + b) > 0).all())
    mids = (means[[0, 2]] + means[1]) / 2
    assert torch.allclose((mids * w).sum(1), -b)
    assert bool(((means[[0, 2]] @ w.T + b).diagonal() < 0).all())


def blobs(seed=0, k=3, n=40, d=5, spread=0.05):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, d, generator=g, dtype=torch.float64) * 3
    x = centres.repeat_interleave(n, 0) + spread * torch.randn(k * n, d, generator=g,
                                                                dtype=torch.float64)
    return x, torch.arange(k).repeat_interleave(n)


def test_kmeans_recovers_blobs_and_is_seeded():
    x, truth = blobs()
    labels, centres = kmeans(x, 3, seed=1)
    # the same partition (up to naming)
    pairs = set(zip(labels.tolist(), truth.tolist(), strict=True))
    assert len(pairs) == 3
    assert torch.allclose(centres[labels], torch.stack([x[truth == t].mean(0)
                                                        for t in truth.tolist()]))
    again, _ = kmeans(x, 3, seed=1)
    assert torch.equal(labels, again)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_silhouette_matches_scikit_learn(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(60, 4, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 3, (60,), generator=g)
    labels[:3] = torch.tensor([0, 1, 2])
    assert silhouette(x, labels) == pytest.approx(
        silhouette_score(x.numpy(), labels.numpy()), abs=1e-12)
    assert silhouette(x, torch.zeros(60, dtype=torch.long)) == -1.0


def test_choose_logics_splits_blobs_not_one_cloud():
    x, truth = blobs(k=3)
    labels = choose_logics(x, 4, seed=0)
    assert len(set(zip(labels.tolist(), truth.tolist(), strict=True))) == 3
    # one Gaussian cloud has no separate logics
    cloud = torch.randn(300, 6, generator=torch.Generator().manual_seed(3),
                        dtype=torch.float64)
    assert int(choose_logics(cloud, 4, seed=0).max()) == 0
    assert np.all(choose_logics(x, 1).numpy() == 0)
