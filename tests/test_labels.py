"""Issue 12: labels where the user has them (ImageFolder folders, IDX labels, a CSV of
path,label), and what they add to a region."""

import numpy as np
import pytest
import torch
from helpers import region, write_idx_labels

from repinterp.app.labels import load_labels
from repinterp.app.memberships import membership_rows
from repinterp.app.stats import label_stats, region_flags
from repinterp.core.errors import UserError
from repinterp.core.summary import ClassSummary, Summary


def test_imagefolder_labels(tmp_path):
    names = ["cat/a.png", "dog/b.png", "cat/c.png"]
    (tmp_path / "cat").mkdir()
    assert load_labels(tmp_path, names).tolist() == [0, 1, 0]          # sorted folders
    assert load_labels(tmp_path, names, class_names=["dog", "cat"]).tolist() == [1, 0, 1]
    assert load_labels(tmp_path, ["3/a.png", "10/b.png"]).tolist() == [3, 10]
    assert load_labels(tmp_path, ["a.png", "b.png"]) is None             # flat folder
    assert load_labels(tmp_path, names, "none") is None


def test_csv_and_idx_labels(tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label\ncat/a.png,dog\ndog/b.png, 2\n")
    got = load_labels(tmp_path, ["cat/a.png", "dog/b.png", "x.png"], str(csv),
                      class_names=["cat", "dog", "bird"])
    assert got.tolist() == [1, 2, -1]                                   # unknown: -1
    csv.write_text("cat/a.png,zebra\n")
    with pytest.raises(UserError, match="line 1: label 'zebra' is neither"):
        load_labels(tmp_path, ["cat/a.png"], str(csv))
    idx = tmp_path / "train-labels-idx1-ubyte.gz"
    write_idx_labels(idx, [4, 2, 9])
    assert load_labels(tmp_path, ["x[0]", "x[1]"], str(idx)).tolist() == [4, 2]
    with pytest.raises(UserError, match="does not exist"):
        load_labels(tmp_path, ["a"], str(tmp_path / "nope.csv"))
    # an MNIST-style folder: the labels file beside the images
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"")
    assert load_labels(tmp_path, ["a", "b", "c"]).tolist() == [4, 2, 9]


def test_label_stats_and_flags():
    labels = torch.tensor([1, 0, 1, 2, -1, 1])
    r = region([5, 1, 3, 0, 4])
    st = label_stats(r, labels, ["a", "b", "c"], [f"f{i}" for i in range(6)])
    assert st["label_mix"] == {"b": 2, "a": 1, "c": 1}
    assert st["labelled"] == 4 and st["label_accuracy"] == 0.5
    assert [d["name"] for d in st["disagreeing"]] == ["f1", "f3"]       # rank order
    assert [d["label"] for d in st["disagreeing"]] == ["a", "c"]
    assert region_flags({**st, "heldout_purity": 0.99, "heat_concentration": 0.1}) == [
        "labels agree with 50.0% of members"]
    assert region_flags({"heldout_purity": 0.9, "label_accuracy": None,
                         "heat_concentration": 0.6}) == [
        "held-out purity 90.0%", "heat on a small area (60% on the hottest 5% of pixels)"]


def test_membership_rows():
    r1, r2 = region([2, 0]), region([1], cls=0, logic=1)
    summary = Summary([ClassSummary(1, 2, [r1], 2), ClassSummary(0, 1, [r2], 1)], 1.0, 1)
    cols = membership_rows(summary, ["a", "b", "c"], torch.tensor([1, 0, 1]),
                           torch.tensor([1, 1, 0]))
    assert cols["image"] == ["c", "a", "b"] and cols["region"] == [1, 1, 2]
    assert cols["rank"] == [1, 2, 1] and cols["logic"] == [-1, -1, 1]
    assert cols["label"] == [0, 1, 1] and cols["predicted"] == [1, 1, 0]
    assert np.allclose(cols["distance"], [0, 1, 0])


def test_heat_concentration_by_hand():
    from repinterp.app.stats import heat_concentration
    uniform = torch.ones(3, 10, 10)
    assert heat_concentration(uniform) == pytest.approx(0.05)
    spot = torch.zeros(2, 10, 10)
    spot[:, 2, 3] = 1.0                         # the same spot in every map
    assert heat_concentration(spot) == 1.0
    moving = torch.zeros(20, 10, 10)             # a spot at a new place in each map:
    moving.view(20, 100)[torch.arange(20), torch.arange(20) * 5] = 1.0
    assert heat_concentration(moving) == pytest.approx(5 / 20)   # 5 of its 20 pixels
    assert heat_concentration(torch.zeros(2, 4, 4)) is None


def test_report_of_an_empty_region_and_a_cap_below_top(tmp_path):
    """An outside image's region may hold no reference; a member cap below the number of
    closest members shown still draws them."""
    from repinterp.app.report import write_report
    images = torch.rand(6, 1, 4, 4)
    empty = region([0])
    empty.members, empty.member_distances = torch.tensor([], dtype=torch.long), torch.zeros(0)
    empty.seed_index = None
    full = region([3, 1, 2, 0, 5, 4])
    summary = Summary([ClassSummary(1, 6, [empty, full], 6)], 1.0, 2)
    calls = []

    def heat(r, x):
        calls.append(len(x))
        return torch.rand(len(x), 4, 4)

    path = write_report(tmp_path, summary, images, heatmap=heat, max_members=2, top=4,
                        far=1)
    html = path.read_text()
    assert html.count('alt="member') == 4 + 1                 # closest 4, far end 1
    assert (tmp_path / "regions" / "region-001.html").is_file()
    assert sum(calls) == 4 + 1     # top (the seed is rank 1; the grid reuses them), far
    calls.clear()
    write_report(tmp_path / "all", summary, images, heatmap=heat, top=4, far=1)
    assert sum(calls) == 4 + 2 + 1           # top, the rest of the grid, far


def test_statistics_are_data_before_any_rendering():
    """summary.json's statistics come from summary_dict alone (not from drawing the
    report): heat concentration from the closest members' maps, flags by the rules, and
    each class's mean held-out purity."""
    from repinterp.app.stats import RegionStats, heat_concentration, summary_dict
    a, b = region([0, 1, 2]), region([3, 4])
    summary = Summary([ClassSummary(1, 6, [a, b], 5)], 1.0, 2)
    spot = torch.zeros(3, 10, 10)
    spot[:, 0, 0] = 1.0                                       # one hot pixel: flagged
    flat = torch.ones(2, 10, 10)
    data = summary_dict(summary, stats=[RegionStats(10, 0.9), RegionStats(4, 1.0)],
                        top_heat=[spot, flat])
    ra, rb = data["classes"][0]["regions"]
    assert ra["heat_concentration"] == heat_concentration(spot) == 1.0
    assert rb["heat_concentration"] == pytest.approx(0.05)
    assert ra["flags"] == ["held-out purity 90.0%", "heat on a small area (100% on the "
                           "hottest 5% of pixels)"] and rb["flags"] == []
    assert data["classes"][0]["heldout_purity"] == pytest.approx(0.95)
    assert summary_dict(summary)["classes"][0]["regions"][0]["heat_concentration"] is None


def test_report_order_leads_with_the_flagged_region_most_labels_disagree_with():
    """Issue 19: the flagged list is ordered by members whose label disagrees (most
    first), then lowest held-out purity; unflagged regions follow class by class."""
    from repinterp.app.stats import report_order

    def rd(n, flags, wrong=None, hp=None):
        return {"region": n, "flags": flags, "label_disagreements": wrong,
                "heldout_purity": hp}
    data = {"classes": [
        {"regions": [rd(1, []), rd(2, ["x"], wrong=5, hp=0.9), rd(3, ["x"], wrong=None,
                                                                    hp=0.5)]},
        {"regions": [rd(4, ["x"], wrong=72, hp=0.92), rd(5, []),
                     rd(6, ["x"], wrong=5, hp=0.8)]}]}
    assert report_order(data) == [4, 6, 2, 3, 1, 5]
