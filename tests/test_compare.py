"""What changed between two models (:func:`repinterp.core.compare.compare_summaries` and
``repinterp compare``): each rule on hand-built summaries, a model against itself, a
planted shortcut learnt by fine-tuning, and the command line end to end."""
from __future__ import annotations

import copy
import json
import pickle

import pytest
import torch
from helpers import cli, one_line_error, pixels, png, region, script_model
from nets import tiny_cnn, tiny_images
from torch import nn

from repinterp import RepresentativeInterpreter, UserError, load_summary
from repinterp.core.compare import compare_summaries
from repinterp.core.summary import ClassSummary, Summary


def summary(regions, references: int = 100, **meta) -> Summary:
    """A summary of hand-made regions (grouped by class, in the order given)."""
    by: dict[int, list] = {}
    for r in regions:
        by.setdefault(r.predicted_class, []).append(r)
    return Summary([ClassSummary(c, references, rs, 0) for c, rs in sorted(by.items())],
                   0.9, 6, meta={"references": references, **meta})


def span(lo: int, hi: int, cls: int):
    return region(list(range(lo, hi)), cls)


def rows(comparison) -> list[tuple]:
    return [(c.status, c.regions_a, c.regions_b, c.classes_a, c.classes_b)
            for c in comparison.changes]


# --- each rule, where the answer is known ---------------------------------------------------
def test_each_rule_on_hand_built_summaries():
    a = summary([span(0, 20, 0), span(20, 40, 0),                   # kept, split
                 span(40, 50, 1), span(50, 60, 1), span(60, 70, 1),  # merged (2), moved
                 span(70, 80, 2)])                                   # gone
    b = summary([region([*range(0, 19), 99], 0), span(20, 30, 0), span(30, 40, 0),
                 span(40, 60, 1), span(60, 70, 2), span(80, 90, 2)])  # ..., new
    c = compare_summaries(a, b)
    # ordered by images changed (20, 20, 10, 10, 10, 2), ties in the statuses' order
    assert rows(c) == [("split", (1,), (1, 2), (0,), (0, 0)),
                       ("merged", (2, 3), (3,), (1, 1), (1,)),
                       ("new", (), (5,), (), (2,)),
                       ("gone", (5,), (), (2,), ()),
                       ("moved", (4,), (4,), (1,), (2,)),
                       ("kept", (0,), (0,), (0,), (0,))]
    kept = c.changes[-1]
    assert kept.jaccard == pytest.approx(19 / 21) and (kept.entered, kept.left) == (1, 1)
    assert kept.changed == 2 and c.changes[0].changed == 20
    assert [ch.jaccard for ch in c.changes[:2]] == [1.0, 1.0]
    assert c.counts == {"new": 1, "gone": 1, "moved": 1, "split": 1, "merged": 1, "kept": 1}
    assert c.changes[2].overlap is None and c.changes[3].overlap is None
    assert [ch.status for ch in c.of_status("kept")] == ["kept"]


def test_a_large_part_is_a_split_and_a_sliver_is_new_inside_a_kept_region():
    a = summary([span(0, 100, 0)])
    # 60 / 40: each part holds >= min_part, together all of it -> split, though J = 0.6
    assert rows(compare_summaries(a, summary([span(0, 60, 0), span(60, 100, 0)]))) == [
        ("split", (0,), (0, 1), (0,), (0, 0))]
    # 90 / 10: the sliver holds < min_part (0.2): no split; 90 is kept, 10 is new (both
    # 10 images changed: the tie goes to the statuses' order)
    c = compare_summaries(a, summary([span(0, 90, 0), span(90, 100, 0)]))
    assert rows(c) == [("new", (), (1,), (), (0,)), ("kept", (0,), (0,), (0,), (0,))]
    assert (c.changes[0].overlap, c.changes[0].overlap_share) == (0, 1.0)
    # the Jaccard threshold is inclusive: 50 of 100 is kept at min_jaccard 0.5
    assert rows(compare_summaries(a, summary([span(0, 50, 0)])))[0][0] == "kept"
    assert rows(compare_summaries(a, summary([span(0, 49, 0)]))) == [   # 100, then 49
        ("gone", (0,), (), (0,), ()), ("new", (), (0,), (), (0,))]


def test_ties_go_to_the_larger_jaccard_then_the_lower_index():
    # two copies of one region in B are no split (the second adds nothing): the
    # one-to-one match takes the lower j; the other is new, its overlap the A region
    c = compare_summaries(summary([span(0, 10, 0)]),
                          summary([span(0, 10, 0), span(0, 10, 0)]))
    assert rows(c) == [("new", (), (1,), (), (0,)), ("kept", (0,), (0,), (0,), (0,))]
    assert c.changes[0].overlap == 0
    # B0 lies wholly inside both A0 and A1: its parent is the A region of larger Jaccard
    # (A1, the tighter one), which B0 and B1 then split
    a = summary([span(0, 40, 0), span(0, 20, 0)])
    b = summary([span(0, 10, 0), span(10, 20, 0)])
    assert rows(compare_summaries(a, b)) == [("gone", (0,), (), (0,), ()),
                                             ("split", (1,), (0, 1), (0,), (0, 0))]


def test_the_images_that_changed_region_or_class():
    a = summary([span(0, 4, 0), span(4, 8, 1)], references=10)
    b = summary([span(0, 4, 0), span(4, 8, 0)], references=10)
    pa = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
    pb = torch.tensor([0, 0, 0, 1, 0, 0, 0, 0, 2, 0])
    c = compare_summaries(a, b, predictions_a=pa, predictions_b=pb)
    assert rows(c) == [("moved", (1,), (1,), (1,), (0,)), ("kept", (0,), (0,), (0,), (0,))]
    # reference 3: region A1 holds it? no: A0 (class 0) holds it, but B predicts class 1
    # and no region of class 1 in B holds it -> no region
    assert c.region_a.tolist() == [0, 0, 0, 0, 1, 1, 1, 1, -1, -1]
    assert c.region_b.tolist() == [0, 0, 0, -1, 1, 1, 1, 1, -1, -1]
    assert c.change_a.tolist() == [1, 1, 1, 1, 0, 0, 0, 0, -1, -1]
    assert c.change_b.tolist() == [1, 1, 1, -1, 0, 0, 0, 0, -1, -1]
    assert c.class_changed.tolist() == [3, 4, 5, 6, 7, 9]
    assert c.region_changed.tolist() == [3]
    data = json.loads(json.dumps(c.to_dict()))
    assert [r["index"] for r in data["images_changed"]] == [3, 4, 5, 6, 7, 9]
    assert data["images_changed"][0] == {"index": 3, "region_a": 0, "region_b": -1,
                                         "class_a": 0, "class_b": 1}
    assert len(pickle.dumps(c)) < 8000
    assert "1 moved, 1 kept" in repr(c)


def test_summaries_of_other_references_or_bad_settings_are_refused():
    a = summary([span(0, 10, 0)])
    with pytest.raises(UserError, match="100 and 50 reference images"):
        compare_summaries(a, summary([span(0, 10, 0)], references=50))
    with pytest.raises(UserError, match="different reference images"):
        compare_summaries(summary([span(0, 10, 0)], references_sha256="x"),
                          summary([span(0, 10, 0)], references_sha256="y"))
    with pytest.raises(UserError, match="both models"):
        compare_summaries(a, a, predictions_a=torch.zeros(100, dtype=torch.long))
    with pytest.raises(UserError, match="100 references and 99 predictions"):
        compare_summaries(a, a, predictions_a=torch.zeros(99, dtype=torch.long),
                          predictions_b=torch.zeros(99, dtype=torch.long))
    with pytest.raises(UserError, match=r"min_jaccard, min_share and min_part must each"):
        compare_summaries(a, a, min_share=0)
    with pytest.raises(UserError, match="members outside its 100 references"):
        compare_summaries(a, summary([region([5, 100], 0)]))


# --- on fitted networks ---------------------------------------------------------------------
def fitted_summary(model, refs, **kw):
    interp = RepresentativeInterpreter(model, "2", num_boundaries=12, seed=0,
                                       progress=False).fit(refs)
    return interp.summarize(**kw), interp.predictions_


def test_a_model_compared_with_itself_keeps_every_region(net, images):
    s1, p1 = fitted_summary(net, images)
    s2, p2 = fitted_summary(net, images)                 # fitted again: the same
    c = compare_summaries(s1, s2, predictions_a=p1, predictions_b=p2)
    assert len(s1.regions) >= 3
    assert [ch.status for ch in c.changes] == ["kept"] * len(s1.regions)
    assert sorted(ch.regions_a for ch in c.changes) == [(k,) for k in range(len(s1.regions))]
    assert all(ch.regions_a == ch.regions_b and ch.jaccard == 1.0 and ch.changed == 0
               for ch in c.changes)
    assert len(c.class_changed) == 0 and len(c.region_changed) == 0
    assert c.references == len(images)
    assert c.to_dict() == compare_summaries(s1, s2, predictions_a=p1,
                                            predictions_b=p2).to_dict()   # deterministic


def mark(x: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
    """A bright 3x3 square in the top-left corner of the images where ``which`` is True
    (a planted mark, as :mod:`repinterp.demo.shortcut` pastes one)."""
    x = x.clone()
    x[which, :, :3, :3] = 3.0
    return x


@pytest.mark.slow
def test_a_shortcut_learnt_by_fine_tuning_is_a_new_region():
    before = tiny_cnn(0)
    train = tiny_images(7, 600)
    with torch.no_grad():
        labels = before(train).argmax(1)
    # fine-tune a copy on the images plus a quarter of them marked, the marked ones all
    # labelled class 0: the copy learns "mark => class 0"
    marked = torch.arange(len(train)) % 4 == 0
    x = torch.cat([train, mark(train[marked], torch.ones(int(marked.sum()), dtype=torch.bool))])
    y = torch.cat([labels, torch.zeros(int(marked.sum()), dtype=torch.long)])
    after = copy.deepcopy(before)
    opt = torch.optim.Adam(after.parameters(), 3e-3)
    for _ in range(300):
        opt.zero_grad()
        nn.functional.cross_entropy(after(x), y).backward()
        opt.step()
    after.eval()
    on = torch.arange(300) % 3 == 0                     # a third of the references marked
    refs = mark(tiny_images(1, 300), on)
    sa, pa = fitted_summary(before, refs)
    sb, pb = fitted_summary(after, refs)
    assert float((pb[on] == 0).float().mean()) > 0.95   # the shortcut is learnt
    assert float((pa[on] == 0).float().mean()) < 0.2    # and was not there before
    c = compare_summaries(sa, sb, predictions_a=pa, predictions_b=pb)
    # the region of model B holding most of the marked images: new, and first
    k = max(range(len(sb.regions)), key=lambda j: int(on[sb.regions[j].members].sum()))
    shortcut = sb.regions[k]
    assert int(on[shortcut.members].sum()) >= 0.9 * int(on.sum())
    assert shortcut.predicted_class == 0
    change = next(ch for ch in c.changes if k in ch.regions_b)
    assert change.status == "new" and c.changes[0] is change
    # the images that changed class: mostly the marked ones, now class 0
    moved = c.class_changed
    assert bool((pb[moved][on[moved]] == 0).all())
    assert int(on[moved].sum()) >= int(((pa != 0) & on).sum()) - 2


# --- the command line ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Two TorchScript models (seeds 0 and 1) and 90 gray 8x8 PNGs in 3 class folders."""
    root = tmp_path_factory.mktemp("compare")
    for seed, name in ((0, "m.pt"), (1, "other.pt")):
        script_model(root, seed, name)
    for i, picture in enumerate(pixels(0, 90)):
        png(root / "folder" / f"c{i % 3}" / f"img{i:03d}.png", picture[0])
    return root


BASE = ("--layer", "2", "--quiet", "--num-boundaries", "8", "--normalize", "none")


def test_compare_on_the_command_line(files, tmp_path, capsys):
    out = tmp_path / "same"
    code, text, err = cli(capsys, "compare", "--model", files / "m.pt", "--model",
                          files / "m.pt", "--data", files / "folder", "--out", out, *BASE)
    assert code == 0, err
    data = json.loads((out / "comparison.json").read_text())
    assert data["references"] == 90 and data["images_changed"] == []
    assert {ch["status"] for ch in data["changes"]} == {"kept"}
    assert f"{data['counts']['kept']} kept; 0 images changed class, 0 images" in text
    assert "Nothing changed" in (out / "compare.html").read_text()
    assert len(load_summary(out / "summary-a.pt").regions) == data["counts"]["kept"]

    out = tmp_path / "other"
    code, text, err = cli(capsys, "compare", "--model", files / "m.pt", "--model",
                          files / "other.pt", "--data", files / "folder", "--out", out, *BASE)
    assert code == 0, err
    data = json.loads((out / "comparison.json").read_text())
    html = (out / "compare.html").read_text()
    assert data["meta"]["model_b"].endswith("other.pt") and "What changed" in html
    assert data["images_changed"] and all(r["name"].startswith("c") for r in
                                          data["images_changed"])
    first = data["changes"][0]["status"]
    assert html.index(f'id="{first}"') < html.index('id="changed-class"')
    assert "report: " in text and str(out / "compare.html") in text


def test_compare_errors_are_one_line(files, tmp_path, capsys):
    model = files / "m.pt"
    code, _, err = cli(capsys, "compare", "--model", model, "--data", files / "folder",
                       "--out", tmp_path / "o", *BASE)
    one_line_error(code, err, "compare takes two models")
    code, _, err = cli(capsys, "compare", "--model", model, "--model", model, "--data",
                       files / "folder", "--out", tmp_path / "o", "--min-share", "1.5", *BASE)
    one_line_error(code, err, "--min-jaccard, --min-share and --min-part")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    code, _, err = cli(capsys, "compare", "--model", model, "--model", model, "--data",
                       files / "folder", "--out", mine, *BASE)
    one_line_error(code, err, str(mine))
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    assert not (tmp_path / "o").exists()
