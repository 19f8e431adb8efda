"""A hostile suite of the project's own (hypothesis): drawn folders of images in every
format and pixel type, drawn file names, drawn label files, and, for each draw, the
contract: the right result, or exit 2 / a ``UserError`` with one line, and the user's
files untouched. Bounded: a few dozen draws per property (CI's budget)."""
from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import script_model, tree
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from nets import tiny_images
from PIL import Image

from repinterp.app.labels import load_labels
from repinterp.app.loading import load_images
from repinterp.cli import main
from repinterp.core.errors import UserError

# no shrinking: a failing draw is reported as drawn (shrinking a CLI run takes minutes)
SETTINGS = dict(deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


# --- formats and pixel types --------------------------------------------------------------
#: (format, the dtype written, whether the rule scales it without a stated range)
WRITERS = {
    "png-u8": lambda p, v: Image.fromarray(v).save(p.with_suffix(".png")),
    "png-u16": lambda p, v: Image.fromarray(v.astype(np.uint16) * 257).save(p.with_suffix(".png")),
    "tif-u8": lambda p, v: Image.fromarray(v).save(p.with_suffix(".tif")),
    "tif-f32-unit": lambda p, v: Image.fromarray(v.astype(np.float32) / 255).save(
        p.with_suffix(".tif")),
    "npy-u8": lambda p, v: np.save(p.with_suffix(".npy"), v),
    "npy-f32-unit": lambda p, v: np.save(p.with_suffix(".npy"), v.astype(np.float32) / 255),
    "npy-bool": lambda p, v: np.save(p.with_suffix(".npy"), v > 127),
    # ambiguous without a stated range: floats of 0-255, int16, int32
    "tif-f32-255": lambda p, v: Image.fromarray(v.astype(np.float32)).save(p.with_suffix(".tif")),
    "npy-f64-255": lambda p, v: np.save(p.with_suffix(".npy"), v.astype(np.float64)),
    "npy-i16": lambda p, v: np.save(p.with_suffix(".npy"), v.astype(np.int16)),
    "npy-i32": lambda p, v: np.save(p.with_suffix(".npy"), v.astype(np.int32)),
}
AMBIGUOUS = {"tif-f32-255", "npy-f64-255", "npy-i16", "npy-i32"}


@settings(max_examples=40, **SETTINGS)
@given(fmt=st.sampled_from(sorted(WRITERS)), h=st.integers(2, 9), w=st.integers(2, 9),
       seed=st.integers(0, 2**32 - 1), stated=st.booleans())
def test_every_format_decodes_to_the_same_picture_or_names_the_file(
        tmp_path_factory, fmt, h, w, seed, stated):
    v = np.random.default_rng(seed).integers(0, 256, (h, w), np.uint8)
    if fmt == "npy-bool":
        v = np.where(v > 127, 255, 0).astype(np.uint8)
    folder = tmp_path_factory.mktemp("f")
    WRITERS[fmt](folder / "pic", v)
    (path,) = folder.iterdir()
    before = tree(folder)
    options = {"pixel_range": (0, 255)} if stated and fmt in AMBIGUOUS else {}
    want = torch.from_numpy(v.astype(np.float32) / np.float32(255))[None, None]
    if fmt in AMBIGUOUS and not stated:
        with pytest.raises(UserError) as info:
            load_images(path, normalize="none", **options)
        assert path.name in str(info.value) and "\n" not in str(info.value)
    else:
        got = load_images(path, normalize="none", **options).images
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert tree(folder) == before


# --- names --------------------------------------------------------------------------------
NAME_CHARS = st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\\")
NAMES = st.one_of(
    st.text(NAME_CHARS, min_size=1, max_size=40),
    st.sampled_from(["=SUM(A1)", "+1", "-rf", "@cmd", "--out", "-", " lead", "trail ",
                     "a" * 200, "数据", "ﬁle", "e\u0301", ".hidden"]))


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return script_model(tmp_path_factory.mktemp("m"))


def _file_name(stem: str) -> bytes:
    """``stem`` + ``.png`` as a file name the file system takes (at most 255 bytes)."""
    raw = os.fsencode(stem)[:200]
    return (raw if raw not in (b".", b"..") else b"dot") + b".png"


@settings(max_examples=12, **SETTINGS)
@given(stems=st.lists(NAMES, min_size=3, max_size=6, unique_by=lambda s: _file_name(s)),
       invalid=st.booleans())
def test_any_file_names_give_a_report_or_one_line(tmp_path_factory, capsys, model_file,
                                                   stems, invalid):
    """Unicode, formulas, dashes, very long names and names that are not valid UTF-8: a
    summary whose report names each image as it is called, or exit 2 with one line;
    the data untouched either way."""
    root = tmp_path_factory.mktemp("n")
    data = root / "data"
    rng = np.random.default_rng(len(stems))
    names = [_file_name(s) for s in stems] + ([b"bad-\xff\xfe.png"] if invalid else [])
    for k, raw in enumerate(names * 4):                  # 4 copies across the classes
        folder = os.path.join(os.fsencode(data), f"c{k % 3}".encode())
        os.makedirs(folder, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (8, 8), np.uint8)).save(
            os.path.join(folder, raw), format="PNG")
    before = tree(data)
    out = root / "out"
    code = main(["summarize", "--model", str(model_file), "--data", str(data), "--out",
                 str(out), "--layer", "2", "--quiet", "--num-boundaries", "8",
                 "--normalize", "none"])
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("repinterp: warning")]
    assert code in (0, 2), err
    if code == 2:
        assert len(lines) == 1 and lines[0].startswith("repinterp: error: "), err
        assert not out.exists()
    else:
        assert (out / "report.html").is_file() and (out / "members.parquet").is_file()
    assert tree(data) == before


# --- label files --------------------------------------------------------------------------
@settings(max_examples=40, **SETTINGS)
@given(truth=st.lists(st.integers(0, 2), min_size=3, max_size=8),
       bom=st.booleans(), crlf=st.booleans(), header=st.booleans(),
       duplicate=st.one_of(st.none(), st.integers(0, 7)),
       wrong=st.one_of(st.none(), st.sampled_from([3, 57, -3])),
       by_name=st.booleans())
def test_a_label_file_gives_each_image_its_own_label_or_a_clear_error(
        tmp_path_factory, truth, bom, crlf, header, duplicate, wrong, by_name):
    """A CSV of path,label with a BOM, CRLF line ends, a header, a duplicated row, a
    label outside the model's classes, labels by index or by name: every image gets its
    own label (or -1, unknown, with a warning), never another image's; a label outside
    the classes is an error naming its line."""
    classes = ["cat", "dog", "emu"]
    root = tmp_path_factory.mktemp("l")
    names = [f"img{i}.png" for i in range(len(truth))]
    rows = [(n, classes[t] if by_name else str(t)) for n, t in zip(names, truth, strict=True)]
    if duplicate is not None and duplicate < len(rows):
        rows.append(rows[duplicate])
    if wrong is not None:
        rows[0] = (rows[0][0], str(wrong))
    end = "\r\n" if crlf else "\n"
    text = (("path,label" + end) if header else "") + end.join(",".join(r) for r in rows) + end
    (root / "labels.csv").write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if wrong is not None:
            with pytest.raises(UserError, match=rf"line {2 if header else 1}\b.*{wrong}"):
                load_labels(root, names, str(root / "labels.csv"), classes, classes=3)
            return
        got = load_labels(root, names, str(root / "labels.csv"), classes, classes=3)
    assert got is not None
    for g, t in zip(got.tolist(), truth, strict=True):
        assert g in (t, -1)                                 # its own label, or unknown
    if duplicate is None:
        assert got.tolist() == truth


# --- saved-state tampering ----------------------------------------------------------------
@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A summary of 120 references of the 3-class tiny network, saved by the CLI."""
    root = tmp_path_factory.mktemp("saved")
    script_model(root)
    np.save(root / "x.npy", tiny_images(0, 120).float().numpy())
    assert main(["summarize", "--model", str(root / "m.pt"), "--data", str(root / "x.npy"),
                 "--out", str(root / "s"), "--layer", "2", "--quiet", "--num-boundaries",
                 "8", "--normalize", "none", "--pixel-range", "raw"]) == 0
    return root / "s" / "summary.pt"


def _resealed(blob: bytes, edit) -> bytes:
    """``blob``'s payload edited by ``edit`` and sealed again with a valid header and
    checksum, as a hostile editor would."""
    import io

    from repinterp.app.schema import SUMMARY_MAGIC
    from repinterp.core.summary import SUMMARY_VERSION
    data = torch.load(io.BytesIO(blob[len(SUMMARY_MAGIC):].split(b"\n", 2)[2]),
                      weights_only=True)
    edit(data)
    buf = io.BytesIO()
    torch.save(data, buf)
    body = buf.getvalue()
    return SUMMARY_MAGIC + (f"version {SUMMARY_VERSION}\nsha256 "
                            f"{hashlib.sha256(body).hexdigest()}\n").encode() + body


FIELDS = {   # field -> (how to write the drawn value, whether it is valid in region r)
    "member": (lambda r, v: r["members"].__setitem__(0, int(v)),
               lambda r, v: 0 <= v < 120 and v not in r["members"][1:].tolist()),
    "class": (lambda r, v: r.update(predicted_class=int(v)),       # as listed, no other
              lambda r, v: v == r["predicted_class"]),
    "weight": (lambda r, v: r["weights"].__setitem__((0, 0), float(v)),
               lambda r, v: bool(np.isfinite(v))),
}


@settings(max_examples=40, **SETTINGS)
@given(flip=st.one_of(st.none(), st.tuples(st.integers(0, 2**31), st.integers(0, 7))),
       field=st.sampled_from(sorted(FIELDS)),
       value=st.one_of(st.integers(-2**40, 2**40),
                       st.floats(allow_nan=True, allow_infinity=True, width=32)))
def test_a_tampered_summary_is_refused_in_one_line_or_read_as_written(
        saved, tmp_path, flip, field, value):
    """A flipped bit anywhere is refused; a crafted field with a valid checksum is read
    back exactly when its value is valid (a member index within the references and not
    listed twice, the class the region is listed under, a finite weight) and refused in
    one line naming the file otherwise."""
    import tempfile

    from repinterp.app.io import load_summary
    folder = Path(tempfile.mkdtemp(dir=tmp_path))
    saved = saved.read_bytes()
    if flip is not None:
        bad = bytearray(saved)
        bad[flip[0] % len(bad)] ^= 1 << flip[1]
        (folder / "summary.pt").write_bytes(bytes(bad))
        valid = False
    else:
        write, ok = FIELDS[field]
        if field != "weight":
            value = int(value) if np.isfinite(value) else -1
        checks = []

        def edit(d):
            region = d["classes"][0]["regions"][0]
            checks.append(ok(region, value))
            write(region, value)
        (folder / "summary.pt").write_bytes(_resealed(saved, edit))
        valid = checks[0]
    try:
        summary = load_summary(folder)
    except UserError as exc:
        assert not valid, f"a valid {field}={value!r} was refused: {exc}"
        assert "summary.pt" in str(exc) and "\n" not in str(exc)
        return
    assert valid, f"{field}={value!r} (flip {flip}) was believed"
    region = summary.classes[0].regions[0]
    got = {"member": lambda: int(region.members[0]), "class": lambda: region.predicted_class,
           "weight": lambda: float(region.weights[0, 0])}[field]()
    assert got == value or (field == "weight" and got == np.float32(value))
