"""Issue 12: the planted-shortcut data (marks by hand, seeded splits) and the benchmark's
scoring of a candidate group against the slice."""
import pytest
import torch

from benchmarks.shortcut import best, logic_scores, scores
from repinterp.core.errors import UserError
from repinterp.demo.data import FASHION_MEAN, FASHION_STD, find_fashion_mnist
from repinterp.demo.shortcut import SETTINGS, MarkSetting, mark_mask, paste_mark, shortcut_split


@pytest.mark.parametrize("shape,count", [("square", 25), ("cross", 9), ("ring", 16)])
def test_mark_shapes_by_hand(shape, count):
    s = MarkSetting("t", cls=0, shape=shape, size=5, row=2, col=20)
    m = mark_mask(s)
    assert m.shape == (28, 28) and int(m.sum()) == count
    rows, cols = m.nonzero().T
    assert rows.min() >= 2 and rows.max() <= 6 and cols.min() >= 20 and cols.max() <= 24
    if shape == "ring":
        assert not m[4, 22] and m[2, 20] and m[6, 24]      # hollow, corners set
    if shape == "cross":
        assert m[4, 20] and m[2, 22] and not m[2, 20]


def test_paste_mark_only_where_asked():
    s = SETTINGS[0]
    x = torch.zeros(3, 1, 28, 28)
    out = paste_mark(x, s, torch.tensor([True, False, True]))
    bright = (1.0 - FASHION_MEAN) / FASHION_STD
    m = mark_mask(s)
    assert torch.equal(out[1], x[1]) and torch.equal(x, torch.zeros_like(x))  # a copy
    assert bool((out[0, 0][m] == bright).all()) and bool((out[2, 0][~m] == 0).all())


def test_bad_settings_are_user_errors():
    with pytest.raises(UserError, match="shape"):
        MarkSetting("t", cls=0, shape="star")
    with pytest.raises(UserError, match="leaves the 28x28 image"):
        MarkSetting("t", cls=0, size=6, row=25)


@pytest.mark.skipif(find_fashion_mnist() is None, reason="Fashion-MNIST not installed")
def test_splits_are_seeded_and_marked_as_specified():
    s = SETTINGS[1]
    x, y, marked, masks = shortcut_split(s, "test", seed=0)
    x2, _, marked2, _ = shortcut_split(s, "test", seed=0)
    assert torch.equal(marked, marked2) and torch.equal(x, x2)
    assert not torch.equal(marked, shortcut_split(s, "test", seed=1)[2])
    assert 0.28 < float(marked.float().mean()) < 0.32                 # p_eval = 0.3
    _, yt, mt, _ = shortcut_split(s, "train", seed=0, train_marks=True)
    assert float(mt[yt == s.cls].float().mean()) > 0.88               # p_class = 0.9
    assert float(mt[yt != s.cls].float().mean()) < 0.03               # p_other = 0.02
    m = mark_mask(s)
    bright = (1.0 - FASHION_MEAN) / FASHION_STD
    assert bool((x[marked][:, 0][:, m] == bright).all())
    assert torch.equal(masks[marked], m.expand(int(marked.sum()), 28, 28))
    assert not bool(masks[~marked].any())


@pytest.mark.skipif(find_fashion_mnist() is None, reason="Fashion-MNIST not installed")
def test_the_harder_settings():
    """Issue 19: a background texture (on background pixels only, at half brightness),
    a mark anywhere (its position varies), 10% label noise in the class (training
    labels only)."""
    from repinterp.demo.data import load_fashion_mnist
    by_name = {s.name: s for s in SETTINGS}
    clean, labels = load_fashion_mnist("test")
    raw = clean[:, 0] * FASHION_STD + FASHION_MEAN
    x, _, marked, masks = shortcut_split(by_name["stripes-background-coat"], "test")
    half = (0.5 - FASHION_MEAN) / FASHION_STD
    assert bool((x[:, 0][masks] == half).all()) and bool((raw[masks] < 0.05).all())
    assert torch.equal(x[:, 0][~masks], clean[:, 0][~masks])
    assert float(masks[marked].sum((1, 2)).float().mean()) > 100   # a texture, not a dot
    x, _, marked, masks = shortcut_split(by_name["square-anywhere-sneaker"], "test")
    corners = {tuple(m.nonzero()[0].tolist()) for m in masks[marked][:200]}
    assert len(corners) > 100 and bool((masks[marked].sum((1, 2)) == 16).all())
    noisy = by_name["square-topleft-pullover-noisy"]
    _, y, _, _ = shortcut_split(noisy, "train", train_marks=True)
    _, y_true = load_fashion_mnist("train")
    flipped = y != y_true
    assert 0.08 < float(flipped[y_true == noisy.cls].float().mean()) < 0.12
    assert not bool(flipped[y_true != noisy.cls].any())
    assert torch.equal(shortcut_split(noisy, "test").labels, labels)


def test_benchmark_scores_by_hand():
    """Every ranking is over all evaluated images: p@k counts exactly k of them (all
    six when k > 6)."""
    in_slice = torch.tensor([True, True, False, False, True, False])
    row = scores(torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0, 0.0]), in_slice)
    assert row["p@10"] == row["p@25"] == row["p@100"] == 0.5
    # positives score 5, 4, 1; negatives 3, 2, 0: 7 of the 9 pairs are won
    assert row["auroc"] == pytest.approx(7 / 9)
    assert best([{"p@25": 0.5, "auroc": 0.9}, {"p@25": 0.6, "auroc": 0.1}])["p@25"] == 0.6


def test_a_logic_ranks_its_regions_members_first_then_the_nearest_outside():
    """Two one-boundary regions on a line: members of the first, then of the second,
    then the rest by fewest violations and distance; brute force on the formula."""
    from repinterp.core.region import Region

    def region(w, b, seed_value):
        return Region(predicted_class=0, weights=torch.tensor([[w]], dtype=torch.float64),
                      biases=torch.tensor([b], dtype=torch.float64),
                      boundary_points=torch.zeros(1, 1), pairs=torch.tensor([[0, 1]]),
                      delta=0, min_delta=0, members=torch.tensor([], dtype=torch.long),
                      member_distances=torch.zeros(0), purity=1.0, seed_index=None,
                      seed_values=torch.tensor([seed_value], dtype=torch.float64),
                      feature_shape=(1,))
    # region A: z >= 4 (seed at z = 6); region B: z <= -4 (seed at z = -6)
    a, b = region(1.0, -4.0, 2.0), region(-1.0, -4.0, 2.0)
    feats = torch.tensor([[0.0], [5.0], [-5.0], [9.0], [-3.0], [3.5], [-9.0]],
                         dtype=torch.float64)
    got = torch.sort(-logic_scores([a, b], feats), stable=True).indices.tolist()
    # A's members 5 (dist 1), 9 (3); B's -5 (1), -9 (3); the rest: 3.5 violates A by
    # 0.5 (dist 2.5), -3 violates B (dist 3), 0 violates both (A: dist 6, B: 6)
    assert got == [1, 3, 2, 6, 5, 4, 0]


def test_heldout_settings_keep_the_development_ones_and_their_cache_key():
    """The held-out settings' new fields change nothing where they keep their defaults:
    a development setting's record (the model cache's key) has the old fields only."""
    from repinterp.demo.shortcut import DEV_SETTINGS, HELDOUT_SETTINGS, setting_record
    assert DEV_SETTINGS is SETTINGS and len(HELDOUT_SETTINGS) >= 6
    assert not {s.name for s in HELDOUT_SETTINGS} & {s.name for s in SETTINGS}
    old = {"name", "cls", "shape", "size", "row", "col", "p_class", "p_other", "p_eval",
           "position", "label_noise"}
    assert all(set(setting_record(s)) == old for s in SETTINGS)
    assert all(s.level == (0.5 if s.shape == "stripes" else 1.0) for s in SETTINGS)
    two = next(s for s in HELDOUT_SETTINGS if s.also)
    assert setting_record(two)["also"][0]["shape"] == "ring"       # JSON-shaped
    with pytest.raises(UserError, match="contrast"):
        MarkSetting("t", cls=0, contrast=2.0)
    with pytest.raises(UserError, match="dataset"):
        MarkSetting("t", cls=0, dataset="mnist")


def test_checker_texture_and_contrast_by_hand():
    s = MarkSetting("t", cls=0, shape="checker")
    m = mark_mask(s)
    assert m[0, 0] and m[1, 1] and not m[0, 2] and not m[2, 0] and m[2, 2]
    assert int(m.sum()) == 28 * 28 // 2
    x = torch.zeros(2, 1, 28, 28)                         # raw 0: all background
    out = paste_mark(x, s, torch.tensor([True, False]), normalized=False)
    assert bool((out[0, 0][m] == 0.5).all()) and bool((out[0, 0][~m] == 0).all())
    faint = MarkSetting("t", cls=0, size=3, contrast=0.5)
    out = paste_mark(x, faint, torch.tensor([True, True]), normalized=False)
    assert float(out.sum()) == 2 * 9 * 0.5


@pytest.mark.skipif(find_fashion_mnist() is None, reason="Fashion-MNIST not installed")
def test_flips_and_two_marks():
    """flip_other: that share of the other classes' training images carry the mark and
    the class's label; also: each marked image carries one of the marks, told apart by
    which_mark."""
    from repinterp.demo.data import load_fashion_mnist
    from repinterp.demo.shortcut import HELDOUT_SETTINGS, which_mark
    by_name = {s.name: s for s in HELDOUT_SETTINGS}
    flip = by_name["cross-flips-others-trouser"]
    _, y_true = load_fashion_mnist("train")
    _, y, marked, _ = shortcut_split(flip, "train", train_marks=True)
    moved = (y != y_true)
    assert bool((y[moved] == flip.cls).all()) and bool(marked[moved].all())
    assert 0.015 < float(moved[y_true != flip.cls].float().mean()) < 0.025
    two = by_name["two-marks-pullover"]
    x, _, marked, masks = shortcut_split(two, "test")
    w = which_mark(two, masks)
    assert torch.equal(w >= 0, marked)
    share = float((w[marked] == 1).float().mean())
    assert 0.45 < share < 0.55
    assert torch.equal(masks[w == 0][0], mark_mask(two))
    assert torch.equal(masks[w == 1][0], mark_mask(two.also[0]))


def test_digits_setting_is_28px_and_split_as_the_zoo():
    pytest.importorskip("sklearn")
    from repinterp.demo.shortcut import HELDOUT_SETTINGS
    d = next(s for s in HELDOUT_SETTINGS if s.dataset == "digits")
    tr, te = shortcut_split(d, "train", train_marks=True), shortcut_split(d, "test")
    assert tr.images.shape == (1200, 1, 28, 28) and te.images.shape == (597, 1, 28, 28)
    raw = tr.images * FASHION_STD + FASHION_MEAN
    assert float(raw.min()) > -1e-5 and float(raw.max()) < 1 + 1e-5
