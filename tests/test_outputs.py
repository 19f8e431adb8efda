"""The ownership rule for outputs: repinterp replaces or deletes only what it wrote.

Every case runs the command line on real files and checks what is left on disk; the
structural test at the end keeps every deletion and rename in ``app/outputs.py``."""
from __future__ import annotations

import ast
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import cli, one_line_error, pixels, png, script_model, tree
from nets import tiny_images

from repinterp.app.outputs import OUTPUT_MARKER, check_output, output_folder
from repinterp.core.errors import UserError

SRC = Path(__file__).resolve().parents[1] / "src" / "repinterp"
BASE = ("--layer", "2", "--quiet", "--num-boundaries", "8", "--normalize", "none")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return script_model(tmp_path_factory.mktemp("m"))


def image_folder(root: Path, n: int = 60) -> Path:
    pix = pixels(0, n)
    for i in range(n):
        png(root / f"c{i % 3}" / f"img{i:03d}.png", pix[i, 0])
    return root


def summarize(capsys, model_file: Path, data: Path, out: Path, *extra) -> tuple[int, str]:
    code, _, err = cli(capsys, "summarize", "--model", model_file, "--data", data,
                       "--out", out, *BASE, *extra)
    return code, err


# --- the two data losses ------------------------------------------------------------------
def test_a_users_folder_with_its_own_report_html_is_left_alone(capsys, tmp_path, model_file):
    data = image_folder(tmp_path / "data")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.html").write_text("<p>my own report</p>")
    (mine / "thesis.tex").write_text("precious")
    before = tree(mine)
    code, err = summarize(capsys, model_file, data, mine)
    one_line_error(code, err, "holds files repinterp did not write")
    assert tree(mine) == before


def test_an_out_holding_the_data_is_refused(capsys, tmp_path, model_file):
    parent = tmp_path / "project"
    data = image_folder(parent / "images")
    (parent / "summary.json").write_text('{"mine": true}')
    before = tree(parent)
    code, err = summarize(capsys, model_file, data, parent)
    one_line_error(code, err, "holds the input")
    assert tree(parent) == before and len(list(data.rglob("*.png"))) == 60


def test_an_out_inside_or_equal_to_the_data_is_refused(capsys, tmp_path, model_file):
    data = image_folder(tmp_path / "data")
    before = tree(data)
    for out, needle in [(data, "is the input"), (data / "runs" / "s", "is inside the input")]:
        code, err = summarize(capsys, model_file, data, out)
        one_line_error(code, err, needle)
    assert tree(data) == before


def test_the_current_folder_is_refused(capsys, tmp_path, model_file, monkeypatch):
    data = image_folder(tmp_path / "data")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for out in (".", ".."):
        code, err = summarize(capsys, model_file, data, out)
        one_line_error(code, err, "is the current folder or holds it")
    assert os.listdir(work) == []


# --- replacing an earlier output ----------------------------------------------------------
def test_an_earlier_output_is_replaced_file_by_file_as_its_marker_lists(
        capsys, tmp_path, model_file):
    data = image_folder(tmp_path / "data")
    out = tmp_path / "s"
    code, err = summarize(capsys, model_file, data, out)
    assert code == 0, err
    marker = json.loads((out / OUTPUT_MARKER).read_text())
    assert marker["written_by"] == "repinterp" and "report.html" in marker["files"]
    assert sorted(marker["files"] + [OUTPUT_MARKER]) == sorted(tree(out))
    # a user's file dropped into it: the next run refuses, naming it
    (out / "regions" / "notes.txt").write_text("mine")
    code, err = summarize(capsys, model_file, data, out, "--max-regions", "1")
    one_line_error(code, err, "regions/notes.txt, which repinterp did not write")
    assert (out / "regions" / "notes.txt").read_text() == "mine"
    (out / "regions" / "notes.txt").unlink()
    code, err = summarize(capsys, model_file, data, out, "--max-regions", "1")
    assert code == 0, err
    assert sorted(json.loads((out / OUTPUT_MARKER).read_text())["files"]
                  + [OUTPUT_MARKER]) == sorted(tree(out))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "s"]   # no leftovers


def test_a_folder_of_an_older_repinterp_without_a_listing_is_refused(tmp_path):
    out = tmp_path / "old"
    out.mkdir()
    (out / OUTPUT_MARKER).write_text("written by repinterp; replaced as a whole\n")
    (out / "report.html").write_text("old")
    with pytest.raises(UserError, match="older repinterp that did not list its files"):
        check_output(out)
    assert sorted(os.listdir(out)) == [OUTPUT_MARKER, "report.html"]


def test_a_file_that_appears_during_the_run_is_kept(tmp_path):
    out = tmp_path / "out"
    with output_folder(out) as tmp:
        (tmp / "a.txt").write_text("old")
    with pytest.warns(UserWarning, match="late.txt .* is kept in"), \
            output_folder(out) as tmp:
        (tmp / "a.txt").write_text("new")
        (out / "late.txt").write_text("the user's")           # after the check
    assert (out / "a.txt").read_text() == "new" and not (out / "late.txt").exists()
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("out.kept-")]
    assert len(kept) == 1 and os.listdir(kept[0]) == ["late.txt"]


# --- links and locks ----------------------------------------------------------------------
def test_a_link_as_out_is_resolved_never_swapped(capsys, tmp_path, model_file):
    data = image_folder(tmp_path / "data")
    target = tmp_path / "target"
    link = tmp_path / "link"
    link.symlink_to(target, target_is_directory=True)
    for _ in range(2):                                 # a new target, then a replacement
        code, err = summarize(capsys, model_file, data, link)
        assert code == 0, err
        assert link.is_symlink() and os.readlink(link) == str(target)
        assert (target / "report.html").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "link", "target"]


def test_a_second_writer_of_one_out_is_refused(capsys, tmp_path, model_file):
    data = image_folder(tmp_path / "data")
    out = tmp_path / "s"
    lock = tmp_path / ".s.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)        # another run holds the lock
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, b"4242")
        code, err = summarize(capsys, model_file, data, out)
        one_line_error(code, err, "another repinterp run (pid 4242) is writing")
        code, _, err = cli(capsys, "index", "--model", model_file, "--data", data, "--out",
                           out, "--bank", "16", "--pilot", "30", "--shard-size", "20", *BASE)
        one_line_error(code, err, "is writing")
    finally:
        os.close(fd)
    assert not out.exists()
    code, err = summarize(capsys, model_file, data, out)
    assert code == 0, err
    assert not lock.exists()                           # released, and its file removed


def test_index_into_a_users_folder_or_a_report_folder_is_refused(capsys, tmp_path,
                                                                 model_file):
    data = image_folder(tmp_path / "data")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "manifest.json").write_text("{}")
    args = ("--bank", "16", "--pilot", "30", "--shard-size", "20", *BASE)
    code, _, err = cli(capsys, "index", "--model", model_file, "--data", data, "--out",
                       mine, *args)
    one_line_error(code, err, "holds files repinterp did not write")
    assert os.listdir(mine) == ["manifest.json"]
    code, err = summarize(capsys, model_file, data, tmp_path / "s")
    assert code == 0, err
    code, _, err = cli(capsys, "index", "--model", model_file, "--data", data, "--out",
                       tmp_path / "s", *args)
    one_line_error(code, err, "holds a repinterp report, not a index")
    code, _, err = cli(capsys, "index", "--model", model_file, "--data", data, "--out",
                       data / "idx", *args)
    one_line_error(code, err, "is inside the input")


@pytest.mark.slow
def test_sigterm_leaves_no_temporary_folder(tmp_path, model_file):
    """SIGTERM is handled as SIGINT: a run terminated while it writes its temporary
    folder unwinds (exit 130) and the folder goes. The signal is sent once the folder
    exists, so that it lands in the write phase whatever the machine's speed."""
    np.save(tmp_path / "x.npy", tiny_images(0, 900).float().numpy())
    argv = [sys.executable, "-m", "repinterp.cli", "summarize", "--model", str(model_file),
            "--data", str(tmp_path / "x.npy"), *BASE, "--pixel-range", "raw",
            "--out", str(tmp_path / "out")]
    caught = 0
    for _ in range(3):
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        while proc.poll() is None and not list(tmp_path.glob(".out.tmp-*")):
            time.sleep(0.002)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
        caught += proc.returncode == 130
        assert proc.returncode in (0, 130), err
        left = {p.name for p in tmp_path.iterdir()}
        assert left in ({"x.npy"}, {"x.npy", "out"}), (left, err)
    assert caught, "no run was caught in its write phase"


# --- the structural rule ------------------------------------------------------------------
# the one module that deletes or renames, and the one exception: the feature store's own
# memory-mapped file, unlinked right after mkstemp created it (never a user's path)
OWNER = "app/outputs.py"
EXCEPTIONS = {("core/network.py", "_mapped")}
DELETIONS = {"rmtree", "rename", "replace", "unlink", "rmdir", "remove", "removedirs",
             "renames"}


def deletions(root: Path) -> list[str]:
    """``file:line function call`` for every call of a deleting or renaming function
    (``shutil.rmtree``, ``os.rename/replace/remove/unlink/rmdir``, ``Path.unlink/rename/
    replace/rmdir``) in the package below ``root``, outside :data:`OWNER`."""
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel == OWNER:
            continue
        tree_ = ast.parse(path.read_text(), str(path))
        owner = {}                                  # each node's innermost function
        for fn in ast.walk(tree_):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    owner[node] = fn.name           # inner functions come later: win
        for node in ast.walk(tree_):
            name = owner.get(node, "<module>")
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in DELETIONS):
                continue
            base, attr = node.func.value, node.func.attr
            is_os = isinstance(base, ast.Name) and base.id in ("os", "shutil")
            # str.replace(old, new) and list.remove(item) are not file operations:
            # os.replace / os.remove, and Path.replace(target), are
            if attr == "replace" and not is_os and len(node.args) != 1:
                continue
            if attr in ("remove", "removedirs", "renames") and not is_os:
                continue
            if isinstance(base, ast.Name) and base.id == "dataclasses":
                continue                            # dataclasses.replace(obj, field=...)
            if isinstance(base, ast.Constant):
                continue
            if (rel, name) in EXCEPTIONS:
                continue
            found.append(f"{rel}:{node.lineno} {name} .{node.func.attr}(")
    return sorted(set(found))


def test_only_the_outputs_module_deletes_or_renames():
    assert deletions(SRC) == []


def test_the_deletion_scan_finds_a_deletion(tmp_path):
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "report.py").write_text(
        "import os, shutil\nfrom pathlib import Path\n"
        "def write(out):\n    shutil.rmtree(out)\n    Path(out).unlink()\n"
        "    os.replace('a', 'b')\n    name = out.replace('a', 'b')\n"
        "    [1].remove(1)\n    os.remove(out)\n"
        "    import dataclasses\n    dataclasses.replace(out, a=1)\n    Path(out).replace(out)\n")
    found = sorted(deletions(tmp_path), key=lambda f: int(f.split(":")[1].split()[0]))
    assert found == ["app/report.py:4 write .rmtree(",
                                   "app/report.py:5 write .unlink(",
                                   "app/report.py:6 write .replace(",
                                   "app/report.py:9 write .remove(",
                                   "app/report.py:12 write .replace("]
