"""Issue 20: a first hour without surprises, and reports that say what they mean.

Through the command line on real files: every option has help, ``--version`` works, bad
inputs are refused before any fit (the fit is replaced by one that fails the test),
class names come from an ImageFolder's folders, a saved summary keeps them, a names file
of the wrong length is an error, and the explain / locate reports lead with the query
and number its region as the summary does.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import cli, pixels, png, region, script_model
from nets import tiny_cnn
from PIL import Image

from repinterp import RepresentativeInterpreter, __version__
from repinterp.app.captions import captions
from repinterp.app.report import header_facts
from repinterp.app.stats import summary_dict
from repinterp.app.thumbs import colour_bar_css
from repinterp.cli import build_parser, main
from repinterp.core.summary import ClassSummary, Summary
from repinterp.core.words import plural

FOLDERS = ("cat", "dog", "bird")          # sorted: bird, cat, dog (ImageFolder's order)
BASE = ("--layer", "2", "--num-boundaries", "8", "--normalize", "none", "--quiet")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A 3-class TorchScript model and an ImageFolder of 8x8 gray PNGs in folders named
    after animals; a query image outside the folder."""
    root = tmp_path_factory.mktemp("first-hour")
    script_model(root)
    pix = pixels(0, 90)
    for i in range(len(pix)):
        png(root / "data" / FOLDERS[i % 3] / f"a-long-common-prefix-{i:03d}.png", pix[i, 0])
    Image.fromarray(pix[5, 0]).save(root / "query.png")
    (root / "notes.txt").write_text("not an image")
    (root / "two.txt").write_text("cat\ndog\n")
    return root


def test_version_and_help_for_every_option(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"repinterp {__version__}"
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    missing = [f"{name} {opt.option_strings[0]}" for name, p in sub.choices.items()
               for opt in p._actions if opt.option_strings and not opt.help]
    assert missing == []


def test_counts_in_words():
    assert plural(1, "boundary") == "1 boundary"
    assert plural(3, "boundary") == "3 boundaries"
    assert plural(2, "day") == "2 days" and plural(0, "image") == "0 images"
    assert plural(12500, "image") == "12,500 images"


def test_captions_header_and_colour_bar():
    assert captions(["everyday/everyday-photo-0042.jpg", "everyday/everyday-photo-0043.jpg"]
                    ) == ["\u20260042.jpg", "\u20260043.jpg"]
    assert captions(["x" * 40]) == ["\u2026" + "x" * 31] and captions(["a.png"]) == ["a.png"]
    facts = header_facts({"model": "vgg", "test_accuracy": 0.914, "layer": "features",
                          "references": 10000, "seconds": 1742.6, "approximate": False,
                          "skipped_files": 0, "regions_per_class": {"a": 1}})
    assert facts == ["Model: vgg (91.4% test accuracy)", "Split after layer features",
                     "10,000 reference images \u00b7 made in 29 min 3 s"]
    bar = colour_bar_css(stops=3)      # transparent where low, opaque red-ish where high
    assert bar.startswith("linear-gradient(to right, rgba(0,0,128,0.00) 0%")
    assert bar.endswith("rgba(128,0,0,0.70) 100%)")


def test_adds_counts_the_members_no_larger_region_holds():
    big, mid, small = region(list(range(10))), region(list(range(5, 15))), \
        region(list(range(12, 21)))
    other = region([0, 1, 2], cls=0)          # another class: counted on its own
    summary = Summary([ClassSummary(1, 21, [big, mid, small], 21),
                       ClassSummary(0, 3, [other], 3)], 1.0, 3)
    data = summary_dict(summary)
    assert [r["adds"] for c in data["classes"] for r in c["regions"]] == [10, 5, 6, 3]
    renumbered = summary_dict(Summary([ClassSummary(1, 10, [big], 10)], 1.0, 1),
                              numbers=[7])
    assert renumbered["classes"][0]["regions"][0]["region"] == 7


@pytest.fixture()
def no_fit(monkeypatch):
    """Any fit fails the test: an error must come before the work."""
    def fail(self, *a, **k):
        raise AssertionError("the fit ran before the input was checked")
    monkeypatch.setattr(RepresentativeInterpreter, "fit", fail)


@pytest.mark.parametrize("case,needle", [
    ("missing image", "--image"),
    ("not an image", "is not a readable image"),
    ("names of the wrong length", "has 2 class names for a model with 3 classes"),
])
def test_inputs_are_checked_before_the_fit(files, capsys, tmp_path, no_fit, case, needle):
    args = ["explain", "--model", files / "m.pt", "--data", files / "data", *BASE,
            "--out", tmp_path / "e"]
    if case == "missing image":
        args += ["--image", files / "nope.png"]
    elif case == "not an image":
        args += ["--image", files / "notes.txt"]
    else:
        args[0] = "summarize"
        args += ["--class-names", files / "two.txt"]
    code, _, err = cli(capsys, *args)
    assert code == 2 and err.startswith("repinterp: error:") and needle in err, err
    assert not (tmp_path / "e").exists()


def test_folder_names_are_the_class_names_and_a_summary_keeps_them(files, capsys, tmp_path):
    code, out, err = cli(capsys, "summarize", "--model", files / "m.pt", "--data",
                         files / "data", *BASE, "--out", tmp_path / "s")
    assert code == 0, err
    data = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert {c["name"] for c in data["classes"]} <= set(FOLDERS)
    regions = [r for c in data["classes"] for r in c["regions"]]
    assert all(set(r["label_mix"]) <= set(FOLDERS) for r in regions)
    from repinterp.app.io import load_summary
    assert load_summary(tmp_path / "s").record.class_names == sorted(FOLDERS)
    html = (tmp_path / "s" / "report.html").read_text()
    # captions are the names' distinctive parts (whole, or without the start the names
    # shown share), the full name on hover
    shown = re.findall(r'<figcaption title="([a-z]+/a-long-common-prefix-\d{3}\.png)">'
                       r'([^<]*)</figcaption>', html)
    assert shown and all(c == name or (c.startswith("\u2026") and name.endswith(c[1:]))
                         for name, c in shown)
    # no held-out folder: the purity contract's held-out references give the figures
    assert "<b>Held-out purity</b>: the same on images that were not used to build" in html
    assert "every region at least 99% pure on the references it was not grown on" in html
    assert "No held-out images were given" not in html
    code, _, err = cli(capsys, "summarize", "--model", files / "m.pt", "--data",
                       files / "data", *BASE, "--target-purity", "none",
                       "--out", tmp_path / "paper")
    assert code == 0, err
    html = (tmp_path / "paper" / "report.html").read_text()
    assert "No held-out images were given" in html and "held-out purity" not in html
    assert "pure on the references it was not grown on" not in html
    # the saved names are reused where a new image is located; the query leads
    code, out, err = cli(capsys, "explain", "--model", files / "m.pt", "--data",
                         files / "data", "--normalize", "none", "--quiet", "--summary",
                         tmp_path / "s", "--image", files / "query.png", "--out",
                         tmp_path / "loc")
    assert code == 0, err
    name = re.search(r"\(predicted (\w+)\)", out).group(1)
    assert name in FOLDERS, out
    page = (tmp_path / "loc" / "report.html").read_text()
    head = page.split('<section id="query">', 1)
    assert len(head) == 2 and "The image: query.png" in head[1]
    assert f"The model predicts <b>{name}</b>" in page
    number = int(re.search(r"region (\d+)", out).group(1))
    assert f'id="region-{number}"' in page and f"Region {number}</b>" in page
    assert "covered" not in page and "%.1f" not in page
    loc = json.loads((tmp_path / "loc" / "summary.json").read_text())
    assert [r["region"] for c in loc["classes"] for r in c["regions"]] == [number]
    # a names file of the wrong length is refused here too
    code, _, err = cli(capsys, "explain", "--model", files / "m.pt", "--data",
                       files / "data", "--normalize", "none", "--quiet", "--summary",
                       tmp_path / "s", "--image", files / "query.png", "--class-names",
                       files / "two.txt", "--out", tmp_path / "loc2")
    assert code == 2 and "has 2 class names for a model with 3 classes" in err


def test_explain_report_leads_with_the_query(files, capsys, tmp_path):
    code, out, err = cli(capsys, "explain", "--model", files / "m.pt", "--data",
                         files / "data", *BASE, "--image", files / "query.png", "--out",
                         tmp_path / "q")
    assert code == 0, err
    assert re.match(r"region of query\.png \((bird|cat|dog)\) at layer 2: \d+ members?, "
                    r"\d+ boundar(y|ies), delta \d+; report: ", out), out
    page = (tmp_path / "q" / "report.html").read_text()
    query = page.index('<section id="query">')
    assert query < page.index('id="how-to-read"') < page.index('id="region-1"')
    assert "It falls in <b>Region 1</b>" in page
    assert 'id="flagged"' not in page and 'id="classes"' not in page


def test_a_flat_folder_or_a_folder_per_digit_keeps_class_indices(tmp_path):
    from repinterp.app.pipeline import class_names_for
    for name in ("0", "1", "2"):
        (tmp_path / "digits" / name).mkdir(parents=True)
    assert class_names_for(None, None, None, data=tmp_path / "digits", classes=3) is None
    for name in ("cat", "dog"):
        (tmp_path / "animals" / name).mkdir(parents=True)
    assert class_names_for(None, None, None, data=tmp_path / "animals", classes=2) == \
        ["cat", "dog"]
    assert class_names_for(None, None, None, data=tmp_path / "animals", classes=3) is None
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.png").write_bytes(b"")
    assert class_names_for(None, None, None, data=tmp_path / "flat", classes=3) is None


@pytest.mark.slow
def test_demo_prints_its_summary_line_only(capsys, tmp_path):
    code, out, err = cli(capsys, "demo", "--out", tmp_path / "demo", "--references",
                         "600", "--quiet")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 2 and re.match(r"model: vgg, weights (shipped with repinterp|"
                                        r"trained on this machine), test accuracy", lines[0])
    assert re.match(r"\d+ regions over 10 classes; on the test set: purity \d+\.\d\d%, "
                    r"\d+\.\d% of images in a region; \d+ s in all; report: ", lines[1])
    assert Path(lines[1].rsplit("report: ", 1)[1]).is_file()
    np.testing.assert_equal(json.loads((tmp_path / "demo" / "summary.json").read_text())
                            ["meta"]["references"], 600)


def test_preprocess_normalises_queries_as_the_model_was_trained():
    """With ``preprocess`` the interpreter takes images as they look: the same regions,
    members and heat maps as normalised images without it (float64, exact)."""
    model = tiny_cnn(0)
    raw = torch.rand(120, 1, 8, 8, generator=torch.Generator().manual_seed(3),
                     dtype=torch.float64)
    mean, std = 0.4, 0.25

    def normalise(x):
        return (x - mean) / std

    plain = RepresentativeInterpreter(model, "2", num_boundaries=10, seed=0,
                                      progress=False).fit(normalise(raw))
    pre = RepresentativeInterpreter(model, "2", num_boundaries=10, seed=0, progress=False,
                                    preprocess=normalise).fit(raw)
    query = torch.rand(1, 8, 8, dtype=torch.float64,
                       generator=torch.Generator().manual_seed(4))
    for a, b in ((plain.explain(7), pre.explain(7)),
                 (plain.explain(normalise(query)), pre.explain(query))):
        assert torch.equal(a.members, b.members) and torch.equal(a.weights, b.weights)
        assert torch.equal(plain.heatmap(a, normalise(raw[:5])), pre.heatmap(b, raw[:5]))
    assert torch.equal(plain.predict(normalise(raw)), pre.predict(raw))


def test_show_draws_heat_only_where_it_is_high():
    import repinterp
    image = torch.full((3, 4, 4), 0.5)
    heat = torch.zeros(4, 4)
    heat[0, 0] = 2.0                                      # scaled to its own range
    img = np.asarray(repinterp.show(image, heat, scale=1))
    assert img.shape == (4, 4, 3)
    assert (img[1:, :] == 128).all() and (img[0, 1:] == 128).all()   # untouched
    # jet's top is (0.5, 0, 0) at opacity 0.7: 0.3 * 0.5 + 0.7 * (0.5, 0, 0)
    assert img[0, 0].tolist() == [128, 38, 38]
    # un-normalised with mean and std; [H, W, C] arrays and bytes are read too
    norm = (image - 0.25) / 0.5
    assert np.array_equal(np.asarray(repinterp.show(norm, mean=[0.25] * 3, std=[0.5] * 3,
                                                    scale=1)), np.full((4, 4, 3), 128))
    as_bytes = np.full((4, 4, 3), 255, np.uint8)
    assert np.asarray(repinterp.show(as_bytes, scale=1)).min() == 255
    assert repinterp.show(image).size == (224, 224)                  # enlarged
    with pytest.raises(repinterp.UserError, match="differ in size"):
        repinterp.show(image, torch.zeros(3, 3))
