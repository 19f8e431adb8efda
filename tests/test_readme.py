"""The README and the guides are a tested path: every ``bash`` and ``python`` block in
them runs verbatim, in order, on 224x224 JPEGs and a ResNet-18 with a classifier centred
on them (random weights: nothing is downloaded), and every link in the docs resolves."""
from __future__ import annotations

import contextlib
import io
import re
import shlex
import subprocess
from pathlib import Path

import pytest
from helpers import photos_224

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
GUIDES = sorted((ROOT / "docs" / "guides").glob("*.md"))
DOCS = [README, *sorted((ROOT / "docs").rglob("*.md"))]
BLOCK = re.compile(r"^```(bash|python)\n(.*?)^```", re.S | re.M)


def blocks(path: Path) -> list[tuple[str, str]]:
    """The ``bash`` and ``python`` blocks of a page, in order (``text`` blocks are
    synopses, not run)."""
    return BLOCK.findall(path.read_text())


def commands(script: str) -> list[str]:
    """A bash block's command lines, continuations joined and comments dropped."""
    lines = script.replace("\\\n", " ").splitlines()
    return [ln.split(" #")[0].strip() for ln in lines if ln.strip() and
            not ln.lstrip().startswith("#")]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """``my_images/`` (18 JPEGs at 224x224 in three class folders), ``query.jpg`` and
    ``model.pt`` (a ResNet-18 state dict with 3 classes, centred on the images)."""
    from PIL import Image
    root = tmp_path_factory.mktemp("files")
    photos_224(root, 18, "photo {i:02d}.jpg")
    Image.open(root / "my_images/dogs/photo 04.jpg").save(root / "query.jpg")
    return root


def run_page(page: Path, cwd: Path, monkeypatch, capsys) -> list[str]:
    """Every block of ``page`` in order in ``cwd``: ``repinterp`` lines through the CLI's
    ``main`` (``--quiet`` added), ``make`` lines as a dry run of the target, ``python``
    blocks executed. Returns the stdout of each ``repinterp`` line."""
    from repinterp.cli import main
    monkeypatch.chdir(cwd)
    outs = []
    for kind, text in blocks(page):
        if kind == "python":
            with contextlib.redirect_stdout(io.StringIO()):
                exec(compile(text, f"{page.name} python block", "exec"), {})
            continue
        for line in commands(text):
            argv = shlex.split(line)
            if argv[0] == "make":
                subprocess.run(["make", "-n", "-C", str(ROOT), *argv[1:]], check=True,
                               capture_output=True)
                continue
            assert argv[0] == "repinterp", f"{page.name}: not a command the tests run: {line}"
            code = main(argv[1:] + ([] if argv[1] == "layers" else ["--quiet"]))
            out, err = capsys.readouterr()
            assert code == 0, (page.name, line, err)
            outs.append(out)
    return outs


def workspace(tmp_path: Path, files: Path) -> Path:
    for name in ("my_images", "query.jpg", "model.pt"):
        (tmp_path / name).symlink_to(files / name)
    return tmp_path


def test_the_readme_is_short_and_its_commands_are_the_promised_three():
    text = README.read_text()
    assert len(text.splitlines()) <= 150
    bash = [commands(t) for k, t in blocks(README) if k == "bash"]
    assert [ln.split()[:2] for ln in bash[0]] == [["make", "demo"], ["make", "test"],
                                                   ["make", "quick"]]
    assert [ln.split()[:2] for ln in bash[1]] == [["repinterp", "layers"],
                                                   ["repinterp", "summarize"],
                                                   ["repinterp", "explain"]]
    assert not re.search(r"\bissue \d+|used to|before 0\.\d", text)   # no changelog


@pytest.mark.slow
def test_the_readme_runs_verbatim(tmp_path, files, monkeypatch, capsys):
    outs = run_page(README, workspace(tmp_path, files), monkeypatch, capsys)
    assert "suggested layer: layer4.0" in outs[0]
    assert "at layer4.0;" in outs[1]               # the suggestion, used and named
    report = (tmp_path / "out/resnet/report.html").read_text()
    assert "photo 04.jpg" in report and any(c in report for c in ("cats", "dogs", "birds"))
    assert "falls in" in outs[2] or "nearest" in outs[2]
    assert re.search(r"\(predicted (cats|dogs|birds)\)", outs[2])    # the folders' names


@pytest.mark.slow
@pytest.mark.parametrize("page", GUIDES, ids=[p.stem for p in GUIDES])
def test_every_guide_runs_verbatim(page, tmp_path, files, monkeypatch, capsys):
    assert blocks(page), f"{page.name} has no block to run"
    run_page(page, workspace(tmp_path, files), monkeypatch, capsys)
    if page.stem == "debugging":
        import json
        debug = json.loads((tmp_path / "out/debug/summary.json").read_text())
        regions = [r for c in debug["classes"] for r in c["regions"]]
        assert regions and all(r["logic"] is not None and r["labelled"] == r["size"]
                               for r in regions)


# --- links --------------------------------------------------------------------------------
LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def broken_links(pages: list[Path]) -> list[str]:
    """``page: target`` for each relative link to a missing file, or to a heading that
    the target page does not have."""
    found = []
    for page in pages:
        for target in LINK.findall(page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue                                   # https:, mailto:, ...
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                found.append(f"{page.relative_to(ROOT)}: {target}")
            elif anchor and dest.suffix == ".md":
                heads = {slug(h) for h in re.findall(r"^#+ (.*)$", dest.read_text(), re.M)}
                if anchor not in heads:
                    found.append(f"{page.relative_to(ROOT)}: {target}")
    return found


def test_the_link_check_finds_a_missing_page_and_a_missing_heading(tmp_path):
    (tmp_path / "a.md").write_text("# A page\n[b](b.md) [c](c.md) [h](a.md#a-page) "
                                   "[x](a.md#nope) [w](https://example.org)\n")
    (tmp_path / "b.md").write_text("# B\n")
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        assert broken_links([tmp_path / "a.md"]) == ["a.md: c.md", "a.md: a.md#nope"]
    finally:
        ROOT = saved


def test_no_link_in_the_docs_is_broken():
    assert broken_links(DOCS) == []
