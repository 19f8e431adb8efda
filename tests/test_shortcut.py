"""Issue 12: the planted-shortcut data (marks by hand, seeded splits) and the benchmark's
scoring of a candidate group against the slice."""
import pytest
import torch
from shortcut import best, scores

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
    x, y, marked = shortcut_split(s, "test", seed=0)
    x2, _, marked2 = shortcut_split(s, "test", seed=0)
    assert torch.equal(marked, marked2) and torch.equal(x, x2)
    assert not torch.equal(marked, shortcut_split(s, "test", seed=1)[2])
    assert 0.28 < float(marked.float().mean()) < 0.32                 # p_eval = 0.3
    _, yt, mt = shortcut_split(s, "train", seed=0, train_marks=True)
    assert float(mt[yt == s.cls].float().mean()) > 0.88               # p_class = 0.9
    assert float(mt[yt != s.cls].float().mean()) < 0.03               # p_other = 0.02
    m = mark_mask(s)
    bright = (1.0 - FASHION_MEAN) / FASHION_STD
    assert bool((x[marked][:, 0][:, m] == bright).all())


def test_benchmark_scores_by_hand():
    in_slice = torch.tensor([True, True, False, False, True, False])
    member = torch.tensor([True, True, True, False, False, False])
    row = scores(torch.tensor([2, 0, 1]), member, in_slice)
    assert row["p@10"] == row["p@25"] == row["p@100"] == pytest.approx(2 / 3)
    # membership scores: positives 1, 1, 0; negatives 1, 0, 0. Of the 9 pairs, 4 are
    # won, 1 lost and 4 tied: AUROC = (4 + 4 / 2) / 9
    assert row["auroc"] == pytest.approx(6 / 9)
    assert row["size"] == 3
    assert best([{"p@25": 0.5, "auroc": 0.9}, {"p@25": 0.6, "auroc": 0.1}])["p@25"] == 0.6
