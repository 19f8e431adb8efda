"""Reports and notebooks a person reads: captions that tell members apart, the seed
shown once, counts in words, the model named in every report, class names in the
notebook views, a small summary.pt and small pages, and progress bars that stay out of
logs."""
from __future__ import annotations

import io
import json
import re
import sys

import numpy as np
import pytest
import torch
from helpers import folded_summary
from nets import tiny_cnn, tiny_images
from PIL import Image

from repinterp import RepresentativeInterpreter
from repinterp.app.captions import captions
from repinterp.app.io import load_summary, save_summary
from repinterp.app.notebook import show
from repinterp.app.report import header_facts, write_report
from repinterp.app.schema import SUMMARY_MAGIC, pack_summary, unpack_summary
from repinterp.app.thumbs import encode
from repinterp.cli import main
from repinterp.core.errors import UserError
from repinterp.core.progress import progress_bar, showing
from repinterp.core.summary import SUMMARY_VERSION
from repinterp.core.words import at_most, layer_words

CUT = "\u2026"
NAMES = ["cat", "dog", "bird"]
BASE = ("--layer", "2", "--num-boundaries", "8", "--normalize", "none", "--quiet")


# --- captions ---------------------------------------------------------------------------
def test_captions_drop_the_shared_start_and_keep_the_end():
    names = [f"photo_everyday_{i:03d}.jpg" for i in (1, 8, 12, 240)]
    assert captions(names) == [f"{CUT}001.jpg", f"{CUT}008.jpg", f"{CUT}012.jpg",
                               f"{CUT}240.jpg"]
    # a shared start is cut at a separator: no number is split
    assert captions(["img_0042.png", "img_0043.png", "a_long_name_past_one_line.png"]) == \
        ["img_0042.png", "img_0043.png", "a_long_name_past_one_line.png"]
    assert captions(["shots/photo_everyday_0041_edit.jpg",
                     "shots/photo_everyday_0047_edit.jpg"]) == \
        [f"{CUT}0041_edit.jpg", f"{CUT}0047_edit.jpg"]


@pytest.mark.parametrize("names", [
    [f"photo_everyday_{i:03d}.jpg" for i in range(40)],
    [f"/data/microscopy/slides/microscopy_{i:05d}_stained_high_resolution_scan.tif"
     for i in range(0, 900, 37)],
    [f"{d}/holiday-2026-camera-{i:03d}.jpg" for d in ("cats", "dogs") for i in range(5)],
    [f"run_{i}_the_same_very_long_descriptive_file_name_for_every_image.png"
     for i in range(12)],
    ["a.png", "b.png", "photo_everyday_001.jpg"],
])
def test_captions_tell_names_apart_and_are_never_cut_at_both_ends(names):
    caps = captions(names)
    assert len(set(caps)) == len(set(names)) == len(names)
    for name, cap in zip(names, caps, strict=True):
        assert not (cap.startswith(CUT) and cap.endswith(CUT))
        assert cap == name or (cap.startswith(CUT) and name.endswith(cap[1:]))
        assert cap.endswith(name[-4:])                     # the end always shows


def test_a_lone_long_name_shows_its_end_on_two_lines():
    assert captions(["x" * 40]) == [CUT + "x" * 31]
    assert captions(["short.png"]) == ["short.png"]


# --- words ------------------------------------------------------------------------------
def test_limits_and_layers_in_words():
    assert at_most(0, "image of another class", "images of other classes") == \
        "no image of another class"
    assert at_most(1, "image of another class", "images of other classes") == \
        "at most 1 image of another class"
    assert at_most(4, "image") == "at most 4 images"
    assert layer_words("layer4.0") == "layer4.0" and layer_words("2") == "layer 2"
    assert layer_words("features") == "layer features"
    facts = header_facts({"layer": "layer4.0", "references": 1, "num_boundaries": 1,
                          "skipped_files": 1, "bank": 1})
    assert facts == ["Model: not recorded", "Split after layer4.0",
                     "1 reference image \u00b7 1 boundary sampled per seed \u00b7 1 "
                     "unreadable file skipped \u00b7 1 boundary in the index's bank"]
    assert header_facts({"model": {"arch": "resnet18", "weights": "/w/m.pt",
                                   "model_file": None}})[0] == "Model: resnet18, weights m.pt"


# --- the reports of the command line ------------------------------------------------------
@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """Every kind of report of a 3-class TorchScript model on 8x8 PNGs whose names share
    a long start (``photo_everyday_``) and end (``.png``): a summary, an explanation,
    where a new image falls in the summary, and an index's summary and explanation."""
    root = tmp_path_factory.mktemp("reading")
    torch.jit.script(tiny_cnn(0, dtype=torch.float32)).save(str(root / "m.pt"))
    x = tiny_images(0, 90).float()
    pix = (x * 40 + 128).clamp(0, 255).round().to(torch.uint8).numpy()
    for i in range(len(pix)):
        path = root / "data" / NAMES[i % 3] / f"photo_everyday_{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pix[i, 0]).save(path)
    Image.fromarray(pix[5, 0]).save(root / "query.png")
    common = ["--model", str(root / "m.pt"), "--data", str(root / "data"), *BASE]
    runs = {
        "summary": ["summarize", *common],
        "explain": ["explain", *common, "--image", str(root / "query.png")],
        "located": ["explain", *common, "--summary", str(root / "summary"), "--image",
                    str(root / "query.png")],
        "index": ["index", *common, "--bank", "16", "--pilot", "60", "--shard-size", "50"],
        "index-summary": ["summarize", "--index", str(root / "index"), "--quiet"],
        "index-explain": ["explain", "--index", str(root / "index"), "--model",
                          str(root / "m.pt"), "--image", str(root / "query.png"),
                          "--quiet"],
    }
    for kind, argv in runs.items():
        assert main([*argv, "--out", str(root / kind)]) == 0, kind
    return root


REPORTS = ("summary", "explain", "located", "index-summary", "index-explain")


def _pages(folder) -> list[str]:
    return [(folder / "report.html").read_text(),
            *(p.read_text() for p in sorted((folder / "regions").glob("*.html")))]


@pytest.mark.parametrize("kind", REPORTS)
def test_every_report_names_the_model(reports, kind):
    for page in _pages(reports / kind):
        header = page.split("<header>", 1)[1].split("</header>", 1)[0]
        facts = re.findall(r'<p class="fact">([^<]*)</p>', header)
        assert facts and facts[0].startswith("Model: "), facts
        assert "not recorded" not in facts[0] and "m.pt" in facts[0], facts


@pytest.mark.parametrize("kind", REPORTS)
def test_counts_read_as_words(reports, kind):
    wrong = re.compile(r"\b1 (boundaries|images|members|regions|reference images)\b|"
                       r"at most 0|\b0 in no larger|layer layer|adds 0\b|\(1 members\)")
    text = " ".join(_pages(reports / kind))
    assert not wrong.search(text), wrong.search(text)
    data = json.loads((reports / kind / "summary.json").read_text())
    deltas = {r["delta"] for c in data["classes"] for r in c["regions"]}
    if 0 in deltas:
        assert "no image of another class allowed in" in text


@pytest.mark.parametrize("kind", ["summary", "index-summary"])
def test_the_seed_shows_once_and_captions_tell_members_apart(reports, kind):
    page = (reports / kind / "report.html").read_text()
    data = json.loads((reports / kind / "summary.json").read_text())
    cards = page.split('<div class="region">')[1:]
    regions = [r for c in data["classes"] for r in c["regions"]]
    assert len(cards) == len(regions)
    for card, r in zip(cards, regions, strict=True):
        card = card.split('<section class="cls"', 1)[0]
        card = card.split('<div class="group across-group">', 1)[0]   # members only
        n, top, far = r["size"], 8, 4
        assert card.count("<figure") == min(n, top) + max(0, min(far, n - top)), r
        assert card.count('<figure class="seed">') == (1 if r["seed_index"] is not None
                                                       else 0)
        caps = re.findall(r'<figcaption title="([^"]*)">([^<]*)</figcaption>', card)
        assert len({c for _, c in caps}) == len(caps)
        for name, cap in caps:
            assert cap == name or (cap.startswith(CUT) and name.endswith(cap[1:]))
            assert not cap.endswith(CUT) and len(cap) <= 32


def test_a_region_page_draws_its_first_members_and_lists_the_rest(reports, tmp_path):
    summary = load_summary(reports / "summary")
    position = max(range(len(summary.regions)), key=lambda k: summary.regions[k].size)
    region, one = summary.regions[position], summary.one_region(position)
    x = tiny_images(0, 90).float()
    names = [f"{NAMES[i % 3]}/photo_everyday_{i:03d}.png" for i in range(90)]
    write_report(tmp_path, one, x, heatmap=lambda r, imgs: torch.rand(len(imgs), 8, 8),
                 names=names, drawn=3)
    page = next((tmp_path / "regions").glob("*.html")).read_text()
    grid = json.loads(page.split('<script id="tiles" type="application/json">')[1]
                      .split("</script>")[0])
    assert [t["name"] for t in grid] == [names[i] for i in region.members.tolist()]
    assert ["src" in t for t in grid] == [k < 3 for k in range(region.size)]
    assert f"The first 3 are drawn; the other {region.size - 3} members" in page


# --- thumbnails ---------------------------------------------------------------------------
def test_thumbnails_are_small_webp_or_png_for_tiny_images():
    rng = np.random.default_rng(0)
    small = encode(rng.random((28, 28, 3)))
    assert small.startswith("data:image/webp;base64,") and small.pixelated
    assert len(small) < 1200
    flat = encode(np.ones((4, 4, 3)) * 0.5)
    assert flat.startswith(("data:image/png", "data:image/webp")) and flat.pixelated
    photo = encode(rng.random((224, 224, 3)), limit=80)
    assert photo.startswith("data:image/webp") and not photo.pixelated
    import base64
    img = Image.open(io.BytesIO(base64.b64decode(photo.split(",", 1)[1])))
    assert img.size == (80, 80)


# --- the notebook -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def named(net, images):
    interp = RepresentativeInterpreter(net, "2", num_boundaries=10, progress=False,
                                       class_names=NAMES).fit(images)
    return interp, interp.summarize(coverage=0.5, max_regions=2)


def test_regions_and_summaries_carry_the_class_names(named, images):
    interp, summary = named
    region = summary.regions[0]
    name = NAMES[region.predicted_class]
    assert region.class_name == name
    assert f"Region({name} (class {region.predicted_class})," in repr(region)
    assert f"<td>{name} (class {region.predicted_class})</td>" in region._repr_html_()
    assert summary.class_names == NAMES
    assert all(f"<td>{NAMES[c.cls]}</td>" in summary._repr_html_() for c in summary)
    assert f"{name}: " in repr(summary) and "class 0" not in summary._repr_html_()
    assert interp.explain(3).class_name == NAMES[int(interp.predictions_[3])]
    view = show(region, images, interp.heatmap, top=4)._repr_html_()
    assert f"{name} (class {region.predicted_class}):" in view
    assert view.count("<img ") == min(4, region.size)        # the seed is rank 1
    assert view.count("width:224px") == min(4, region.size)
    assert view.count("<figcaption>seed #") == 1 and "1 boundaries" not in view


def test_class_names_must_fit_the_model(net, images):
    with pytest.raises(UserError, match="class_names has 2 names for a model with 3"):
        RepresentativeInterpreter(net, "2", num_boundaries=4, progress=False,
                                  class_names=["a", "b"]).fit(images[:40])
    with pytest.raises(UserError, match="sequence of strings"):
        RepresentativeInterpreter(net, "2", num_boundaries=4, progress=False,
                                  class_names="abc").fit(images[:40])


# --- summary.pt ---------------------------------------------------------------------------
def _payload(blob: bytes) -> dict:
    return torch.load(io.BytesIO(blob[len(SUMMARY_MAGIC):].split(b"\n", 2)[2]),
                      weights_only=True)


def _sealed(data: dict, version: int) -> bytes:
    import hashlib
    buf = io.BytesIO()
    torch.save(data, buf)
    body = buf.getvalue()
    return SUMMARY_MAGIC + (f"version {version}\nsha256 "
                            f"{hashlib.sha256(body).hexdigest()}\n").encode() + body


def test_summary_pt_keeps_what_explain_needs_and_no_boundary_points(named, tmp_path):
    interp, summary = named
    assert SUMMARY_VERSION == 2
    blob = pack_summary(summary)
    data = _payload(blob)
    regions = [r for c in data["classes"] for r in c["regions"]]
    assert all("boundary_points" not in r and r["class_name"] in NAMES for r in regions)
    # the previous version, every region with its points and no names, is read as well
    old = dict(data, version=1, classes=[
        dict(c, regions=[{k: v for k, v in r.to_dict().items() if k != "class_name"}
                         for r in cs.regions])
        for c, cs in zip(data["classes"], summary.classes, strict=True)])
    old_blob = _sealed(old, 1)
    points = sum(r.boundary_points.numel() * r.boundary_points.element_size()
                 for r in summary.regions)
    assert len(old_blob) - len(blob) >= 0.9 * points > 0
    for back in (unpack_summary(blob), unpack_summary(old_blob)):
        for r, b in zip(summary.regions, back.regions, strict=True):
            assert torch.equal(r.members, b.members) and torch.equal(r.weights, b.weights)
            assert b.class_name == r.class_name
        assert back.class_names == NAMES
    back = unpack_summary(blob)
    assert back.regions[0].boundary_points.shape == (0, summary.regions[0].weights.shape[1])
    with pytest.raises(UserError, match="saved without them"):
        interp.heatmap(back.regions[0], tiny_images(0, 2), method="logprob")
    assert interp.heatmap(back.regions[0], tiny_images(0, 2)).shape == (2, 8, 8)
    with pytest.raises(UserError, match="header says version 1"):
        unpack_summary(_sealed(data, 1))
    save_summary(tmp_path / "summary.pt", summary)
    assert load_summary(tmp_path).regions[0].class_name == summary.regions[0].class_name


def test_a_logprob_summary_keeps_its_boundary_points(net, images):
    interp = RepresentativeInterpreter(net, "2", num_boundaries=10, progress=False,
                                       heatmap_method="logprob").fit(images)
    summary = interp.summarize(coverage=0.3, max_regions=1)
    back = unpack_summary(pack_summary(summary))
    for r, b in zip(summary.regions, back.regions, strict=True):
        assert torch.equal(r.boundary_points, b.boundary_points)
    data = _payload(pack_summary(summary))
    data["classes"][0]["regions"][0].pop("boundary_points")
    with pytest.raises(UserError, match="has no 'boundary_points'"):
        unpack_summary(_sealed(data, 2))


def test_the_cli_summary_pt_holds_no_boundary_points(reports):
    """The CLI's summary.pt (margin heat maps) holds no boundary points."""
    data = _payload((reports / "summary" / "summary.pt").read_bytes())
    assert data["version"] == 2 and all("boundary_points" not in r for c in data["classes"]
                                        for r in c["regions"])


# --- progress bars ------------------------------------------------------------------------
class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bars_stay_out_of_logs(monkeypatch):
    assert not sys.stderr.isatty()                      # pytest captures it: a log
    bar = progress_bar(range(3), desc="x", enabled=True)
    assert bar.disable and list(bar) == [0, 1, 2]
    monkeypatch.setattr(sys, "stderr", _Terminal())
    assert showing(True) and not showing(False)
    with progress_bar(total=2, desc="outer") as outer:
        assert not outer.disable
        inner = progress_bar(range(2), desc="inner")     # one bar at a time
        assert inner.disable and not showing(True)
        outer.update(2)
    assert showing(True)
    assert progress_bar(range(2), enabled=False).disable  # progress=False
    text = sys.stderr.getvalue()
    assert "outer" in text and "inner" not in text


def test_a_notebook_shows_its_bar_without_a_terminal(monkeypatch):
    import repinterp.core.progress as progress
    monkeypatch.setattr(progress, "in_notebook", lambda: True)
    assert showing(True)
    bar = progress_bar(range(2), enabled=True, file=io.StringIO())
    assert not bar.disable and bar.leave is False
    bar.close()


def test_minor_limit_is_2_percent_or_3_images():
    from repinterp.app.stats import minor_limit
    assert [minor_limit(n) for n in (0, 100, 150, 151, 1000)] == [3, 3, 3, 4, 20]


@pytest.fixture(scope="module")
def folded(tmp_path_factory):
    return folded_summary(tmp_path_factory.mktemp("folded") / "s")


def test_regions_that_add_little_are_folded_never_lost(folded):
    """A region adding under max(3, 2%) of its class's images, neither the class's
    first nor flagged, is one folded line in the report; its card, page and JSON stay."""
    from repinterp.app.stats import minor_limit
    page = (folded / "report.html").read_text()
    data = json.loads((folded / "summary.json").read_text())
    for c in data["classes"]:
        for k, r in enumerate(c["regions"]):
            expect = k > 0 and not r["flags"] and r["adds"] < minor_limit(c["n_images"])
            assert r["minor"] == expect, r
            card = page.index(f'<h3 id="region-{r["region"]}">')
            before = page.rfind("<details", 0, card), page.rfind("</details>", 0, card)
            inside = before[0] > before[1] and page[before[0]:].startswith(
                '<details class="minor">')
            assert inside == r["minor"]
            overview = f'href="#region-{r["region"]}" title="Region {r["region"]}'
            assert (overview in page) == (not r["minor"])          # an overview card
            assert (folded / f"regions/region-{r['region']:03d}.html").is_file()
    minor = sum(r["minor"] for c in data["classes"] for r in c["regions"])
    assert minor >= 1 and page.count('<details class="minor">') == minor
