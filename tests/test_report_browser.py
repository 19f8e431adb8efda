"""Issue 12: the report to debug with, checked in a real browser (Debian's chromium and
chromium-driver, driven by Selenium; `make test` installs them as root).

The report of a network with two reasons for class 0 (an object, or a mark) and labels
that say the marked images are really class 1: the marked images' region must be flagged
first, the search must find images by file name and lead to their region's page, and the
member grid must page and filter.
"""
import os
import re
import shutil

import pytest
from helpers import folded_summary, photos_224, two_logic_images, two_logic_net

from repinterp import RepresentativeInterpreter
from repinterp.app.captions import captions
from repinterp.app.report import write_report

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    x, groups = two_logic_images(scale=2)          # 80 object, 60 marked, 100 class 1
    folder = {0: "object", 1: "marked", 2: "other"}
    names = [f"{folder[int(g)]}/img-{i:03d}.png" for i, g in enumerate(groups)]
    labels = (groups >= 1).long()                  # the marked images are class-1 objects
    interp = RepresentativeInterpreter(two_logic_net(), "1", num_boundaries=20,
                                       progress=False).fit(x)
    summary = interp.summarize(coverage=1.0, max_regions=2, separate_logics=True)
    out = tmp_path_factory.mktemp("report")
    write_report(out, summary, x, heatmap=interp.heatmap, names=names, labels=labels,
                 class_names=["zero", "one"], predictions=interp.predictions_,
                 title="two reasons")
    return out, summary, names


def wait(browser):
    from selenium.webdriver.support.ui import WebDriverWait
    return WebDriverWait(browser, 20)


@pytest.fixture(scope="module")
def browser():
    if not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)):
        if os.environ.get("REPINTERP_NO_BROWSER"):
            pytest.skip("REPINTERP_NO_BROWSER is set")
        pytest.fail("chromium and chromium-driver are needed (apt-get install chromium "
                    "chromium-driver; `make test` does it as root)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu",
                "--disable-dev-shm-usage", "--window-size=1280,1000"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


def test_report_leads_with_the_flagged_region_and_searches(report, browser):
    from selenium.webdriver.common.by import By

    out, summary, names = report
    marked = next(k for k, r in enumerate(summary.regions, 1) if r.logic == 1)
    browser.get((out / "report.html").as_uri())
    rows = browser.find_elements(By.CSS_SELECTOR, "#flagged tr.flagged-row")
    assert rows, "no flagged region"
    first = rows[0]
    assert first.find_element(By.TAG_NAME, "a").text == f"region {marked}"
    assert "labels agree with 0.0% of members" in first.text
    # search by file name
    box = browser.find_element(By.ID, "search")
    box.send_keys("marked/")
    count = browser.find_element(By.CSS_SELECTOR, "#search-result .search-count").text
    assert count.startswith("60 images in a region")
    hits = browser.find_elements(By.CSS_SELECTOR, "#search-result .search-hit")
    assert len(hits) == 20
    box.clear()
    box.send_keys("img-085")
    hit = browser.find_element(By.CSS_SELECTOR, "#search-result .search-hit")
    assert hit.text.startswith("marked/img-085.png: region")
    hit.find_element(By.TAG_NAME, "a").click()
    # click-through: the region page opens filtered to that image
    wait(browser).until(lambda d: d.current_url.endswith(
        f"region-{marked:03d}.html#q=marked%2Fimg-085.png"))
    tiles = browser.find_elements(By.CSS_SELECTOR, "#grid figure.tile")
    caps = [t.find_element(By.TAG_NAME, "figcaption") for t in tiles]
    assert [c.get_attribute("title") for c in caps] == ["marked/img-085.png"]
    members = [names[i] for i in summary.regions[marked - 1].members.tolist()]
    rank = members.index("marked/img-085.png")
    assert caps[0].text == captions(members)[rank] == "\u2026085.png"   # its own part
    assert "wrong" in tiles[0].get_attribute("class")        # its label disagrees
    browser.find_element(By.ID, "back").click()
    wait(browser).until(lambda d: d.current_url.endswith("report.html"))


def test_region_page_pages_and_filters_in_rank_order(report, browser):
    from selenium.webdriver.common.by import By

    out, summary, _ = report
    number, region = next((k, r) for k, r in enumerate(summary.regions, 1)
                          if r.predicted_class == 1)
    assert region.size == 100
    browser.get((out / "regions" / f"region-{number:03d}.html").as_uri())

    def ranks():
        return [int(t.get_attribute("data-rank"))
                for t in browser.find_elements(By.CSS_SELECTOR, "#grid figure.tile")]

    assert ranks() == list(range(1, 61))
    info = browser.find_element(By.ID, "page-info")
    assert info.text == "page 1 of 2 (100 members)"
    assert browser.find_element(By.ID, "prev").get_attribute("disabled") is not None
    browser.find_element(By.ID, "next").click()
    assert ranks() == list(range(61, 101)) and info.text == "page 2 of 2 (100 members)"
    # captions are the members in rank order
    names = [t.get_attribute("title") for t in
             browser.find_elements(By.CSS_SELECTOR, "#grid figcaption")]
    expected = [f"other/img-{i:03d}.png" for i in region.members[60:].tolist()]
    assert names == expected
    # the filter keeps the rank order and starts again at page 1
    browser.find_element(By.ID, "filter").send_keys("img-2")
    wanted = [k + 1 for k, i in enumerate(region.members.tolist()) if 200 <= i < 300]
    assert 0 < len(wanted) < 60
    assert ranks() == wanted and info.text == f"page 1 of 1 ({len(wanted)} members)"


@pytest.fixture(scope="module")
def photos224(tmp_path_factory):
    """The README's commands on 224x224 JPEGs in class folders (cats, dogs, birds) with
    long shared file-name prefixes, a ResNet-18 with random weights and a classifier
    centred on them: a summary, an explanation and where a new image falls."""
    from PIL import Image

    from repinterp.cli import main

    root = tmp_path_factory.mktemp("photos224")
    photos_224(root, 24, "holiday-2026-camera-{i:03d}.jpg")
    Image.open(root / "my_images/dogs/holiday-2026-camera-004.jpg").save(root / "q.jpg")
    common = ["--arch", "resnet18", "--weights", str(root / "model.pt"), "--num-classes",
              "3", "--data", str(root / "my_images"), "--size", "224", "--quiet"]
    assert main(["summarize", *common, "--layer", "layer4.0", "--out",
                 str(root / "summary")]) == 0
    assert main(["explain", *common, "--layer", "layer4.0", "--image", str(root / "q.jpg"),
                 "--out", str(root / "query")]) == 0
    assert main(["explain", *common, "--summary", str(root / "summary"), "--image",
                 str(root / "q.jpg"), "--out", str(root / "located")]) == 0
    return root


@pytest.mark.slow
def test_a_224px_report_reads(photos224, browser):
    from selenium.webdriver.common.by import By

    browser.get((photos224 / "summary" / "report.html").as_uri())
    header = browser.find_element(By.TAG_NAME, "header").text
    assert "Split after layer4.0" in header and "24 reference images" in header
    assert "Model: resnet18" in header
    assert "approximate" not in header and "seconds" not in header
    names = {h.text for h in browser.find_elements(By.CSS_SELECTOR, ".ov-class h3 a")}
    assert names and names <= {"cats", "dogs", "birds"}          # the folders' names
    assert browser.find_element(By.CSS_SELECTOR, "#how-to-read .cbar").is_displayed()
    assert "Held-out purity: the same on images that were not used to build the regions" \
        in browser.find_element(By.ID, "how-to-read").text      # the purity contract's
    for card in browser.find_elements(By.CSS_SELECTOR, "div.region"):
        caps = card.find_elements(By.CSS_SELECTOR, "figure:not(.across) figcaption")
        texts = [c.text for c in caps]
        assert len(set(texts)) == len(texts), texts             # told apart at a glance
        for c in caps:                                          # cut at the start only
            assert c.text.endswith(".jpg") and c.get_attribute("title").endswith(
                c.text.lstrip("\u2026"))
            assert c.get_attribute("title").split("/")[0] in ("cats", "dogs", "birds")


@pytest.mark.slow
def test_each_boundary_shows_its_neighbours_across(photos224, browser):
    """The card: the nearest images decided otherwise, each naming the boundary it
    crosses alone and its class; the page: one row per boundary, as summary.json."""
    import json

    from selenium.webdriver.common.by import By

    data = json.loads((photos224 / "summary" / "summary.json").read_text())
    regions = [r for c in data["classes"] for r in c["regions"]]
    browser.get((photos224 / "summary" / "report.html").as_uri())
    browser.execute_script(
        "document.querySelectorAll('details.minor').forEach(d => d.open = true)")
    cards = browser.find_elements(By.CSS_SELECTOR, "div.region")
    assert len(cards) == len(regions)
    for card, rd in zip(cards, regions, strict=True):
        group = card.find_element(By.CSS_SELECTOR, ".across-group")
        assert group.is_displayed()
        crossed = sum(1 for row in rd["across"] if row["count"])
        assert f"{crossed} of {rd['num_boundaries']} " in group.text
        cls = card.find_element(By.TAG_NAME, "h3").text.split("\u00b7")[1].split()[0]
        for fig in group.find_elements(By.CSS_SELECTOR, "figure.across"):
            b = int(fig.find_element(By.CSS_SELECTOR, ".rank").text.lstrip("b"))
            predicted = fig.find_element(By.TAG_NAME, "figcaption").text.split("\u2192 ")[1]
            assert predicted != cls and predicted in ("cats", "dogs", "birds")
            row = rd["across"][b - 1]
            assert fig.find_element(By.TAG_NAME, "img").get_attribute("title").split(":")[0] in [
                n["name"] for n in row["nearest"]]
    rd = regions[0]
    browser.get((photos224 / "summary" / rd_href(rd)).as_uri())
    rows = browser.find_elements(By.CSS_SELECTOR, "#across-table tr")[1:]
    assert len(rows) == rd["num_boundaries"] == len(rd["across"])
    for tr, row in zip(rows, rd["across"], strict=True):
        cells = tr.find_elements(By.TAG_NAME, "td")
        assert cells[0].text == str(row["boundary"])
        assert len(cells[3].find_elements(By.TAG_NAME, "img")) == len(row["nearest"])
        if not row["count"]:
            assert "no image is outside by this boundary alone" in cells[3].text


def rd_href(rd: dict) -> str:
    return f"regions/region-{rd['region']:03d}.html"


@pytest.mark.slow
def test_a_link_to_a_folded_region_opens_it(tmp_path, browser):
    import json

    from selenium.webdriver.common.by import By

    out = folded_summary(tmp_path / "s")
    data = json.loads((out / "summary.json").read_text())
    minor = [r["region"] for c in data["classes"] for r in c["regions"] if r["minor"]]
    assert minor
    browser.get((out / "report.html").as_uri())
    folds = browser.find_elements(By.CSS_SELECTOR, "details.minor")
    assert len(folds) == len(minor) and not any(f.get_attribute("open") for f in folds)
    assert not browser.find_element(By.ID, f"region-{minor[0]}").is_displayed()
    browser.find_element(By.CSS_SELECTOR, "a.ov-minor").click()    # "+ N small regions"
    assert browser.find_element(By.ID, f"region-{minor[0]}").is_displayed()


@pytest.mark.slow
def test_explain_and_locate_reports_lead_with_the_query(photos224, browser):
    from selenium.webdriver.common.by import By

    for folder in ("query", "located"):
        browser.get((photos224 / folder / "report.html").as_uri())
        query = browser.find_element(By.ID, "query")
        how = browser.find_element(By.ID, "how-to-read")
        assert query.location["y"] < how.location["y"]             # the image comes first
        assert query.find_element(By.TAG_NAME, "h2").text == "The image: q.jpg"
        verdict = browser.find_element(By.ID, "verdict").text
        predicted = verdict.split("The model predicts ", 1)[1].split(".", 1)[0]
        assert predicted in ("cats", "dogs", "birds"), verdict
        number = browser.find_element(By.CSS_SELECTOR, "div.region h3 a").text
        assert number in verdict                                   # "Region k" both
        header = browser.find_element(By.TAG_NAME, "header").text
        assert "region:" not in header and "Model: resnet18" in header
        assert len(query.find_elements(By.TAG_NAME, "img")) >= 3   # image, map, members
        # the nearest images decided otherwise: where the report was fitted, not located
        groups = browser.find_elements(By.CSS_SELECTOR, "div.region .across-group")
        assert len(groups) == (folder == "query")
        # the edit that leaves the region, beside the image, where there is a fit
        edits = browser.find_elements(By.ID, "edit")
        assert len(edits) == (folder == "query")
        if edits:
            assert edits[0].is_displayed() and len(edits[0].find_elements(
                By.TAG_NAME, "img")) == 2
            facts = browser.find_element(By.ID, "edit-facts").text
            assert re.search(r"aimed across boundary \d+ of the region towards "
                             r"(cats|dogs|birds): the model (now|still) predicts", facts), facts
