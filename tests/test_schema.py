"""Saved state has one schema: ``summary.pt`` (versioned, its payload's SHA-256 in its
header, every field checked when read), the index manifest (typed, checked) and the
index's listing (the contents of an array file by SHA-256). Every tampering is refused
with one line naming the file and what is wrong."""
from __future__ import annotations

import hashlib
import io
import os
import shutil

import numpy as np
import pytest
import torch
from helpers import cli, one_line_error, script_model
from nets import tiny_images
from PIL import Image

from repinterp.app.io import load_summary, save_summary
from repinterp.app.schema import SUMMARY_MAGIC, check_against_model, check_manifest
from repinterp.cli import main
from repinterp.core.errors import UserError
from repinterp.core.summary import SUMMARY_VERSION, Summary

BASE = ("--layer", "2", "--quiet", "--num-boundaries", "8", "--normalize", "none",
        "--pixel-range", "raw")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A TorchScript model, 120 references as .npy, a query PNG and a summary of them."""
    root = tmp_path_factory.mktemp("schema")
    script_model(root)
    x = tiny_images(0, 120).float()
    np.save(root / "x.npy", x.numpy())
    pix = (x[0, 0] * 40 + 128).clamp(0, 255).round().to(torch.uint8).numpy()
    Image.fromarray(pix).save(root / "q.png")
    main(["summarize", "--model", str(root / "m.pt"), "--data", str(root / "x.npy"),
          "--out", str(root / "s"), *BASE])
    assert (root / "s" / "summary.pt").is_file()
    return root


def _explain(capsys, files, summary_dir, out):
    return cli(capsys, "explain", "--model", files / "m.pt", "--data", files / "x.npy",
               "--summary", summary_dir, "--image", files / "q.png", "--out", out, *BASE)


def _payload(path) -> dict:
    blob = path.read_bytes()
    body = blob[len(SUMMARY_MAGIC):].split(b"\n", 2)[2]
    return torch.load(io.BytesIO(body), weights_only=True)


def _craft(path, data: dict) -> None:
    """Write ``data`` as a hostile editor would: a valid header and checksum."""
    buf = io.BytesIO()
    torch.save(data, buf)
    body = buf.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(SUMMARY_MAGIC + f"version {SUMMARY_VERSION}\nsha256 "
                     f"{hashlib.sha256(body).hexdigest()}\n".encode() + body)


def test_round_trip(files, tmp_path):
    s = load_summary(files / "s")
    save_summary(tmp_path / "summary.pt", s)
    back = load_summary(tmp_path)
    assert back.to_dict()["meta"] == s.to_dict()["meta"]
    assert [r.members.tolist() for r in back.regions] == [r.members.tolist()
                                                         for r in s.regions]
    rec = back.record
    assert (rec.references, rec.classes, rec.feature_shape) == (120, 3, (4, 4, 4))
    assert rec.heatmap_method == "margin" and rec.heatmap_grid == "features"
    assert rec.num_boundaries == 8 and rec.seed == 0 and rec.min_purity is not None
    assert back.coverage_target == s.coverage_target and back.max_regions == s.max_regions
    check_against_model(back, 3, (4, 4, 4))
    with pytest.raises(UserError, match="model of 3 classes; this model has 10"):
        check_against_model(back, 10, (4, 4, 4))
    with pytest.raises(UserError, match=r"shape \(4, 4, 4\)"):
        check_against_model(back, 3, (8, 4, 4))


def test_every_flipped_bit_is_refused(files, tmp_path):
    blob = (files / "s" / "summary.pt").read_bytes()
    rng = np.random.default_rng(0)
    # every byte of the header, and bits spread over the payload
    positions = [*range(120), *rng.integers(120, len(blob), 200).tolist(), len(blob) - 1]
    for pos in positions:
        bad = bytearray(blob)
        bad[pos] ^= 1 << int(rng.integers(8))
        (tmp_path / "summary.pt").write_bytes(bytes(bad))
        with pytest.raises(UserError, match="summary.pt"):
            load_summary(tmp_path)


def _edit_region(files, tmp_path, change) -> None:
    data = _payload(files / "s" / "summary.pt")
    change(data, data["classes"][0]["regions"][0])
    _craft(tmp_path / "c" / "summary.pt", data)


@pytest.mark.parametrize("change,needle", [
    (lambda d, r: r.update(members=torch.cat([r["members"][:1], torch.tensor([-3])])),
     "member index -3 is outside 0..119"),
    (lambda d, r: r.update(members=torch.arange(5_000_000),
                           member_distances=torch.zeros(5_000_000)),
     "5000000 members, more than the 120 references"),
    (lambda d, r: r["weights"].__setitem__((0, 0), float("nan")), "weights holds a NaN"),
    (lambda d, r: r.update(predicted_class=57), "predicted_class is 57"),
    (lambda d, r: d["classes"][0].update(cls=57), "a class is 57"),
    (lambda d, r: r.update(weights=torch.zeros(len(r["weights"]), 80)),
     "weights has shape"),
    (lambda d, r: r.update(biases=r["biases"] * float("inf")), "biases holds a NaN"),
    (lambda d, r: d.pop("version"), "records no schema version"),
    (lambda d, r: d["meta"].pop("heatmap_grid"), "records no 'heatmap_grid'"),
    (lambda d, r: d["meta"].update(references="120"), "'references' has the wrong type"),
    (lambda d, r: r.update(surprise=1), "unknown field 'surprise'"),
])
def test_a_crafted_summary_is_refused(files, tmp_path, change, needle):
    _edit_region(files, tmp_path, change)
    with pytest.raises(UserError, match="summary.pt") as e:
        load_summary(tmp_path / "c")
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_an_old_summary_is_refused(files, tmp_path):
    """A summary.pt saved before the schema (torch.save of the plain dict)."""
    data = _payload(files / "s" / "summary.pt")
    data.pop("version")
    (tmp_path / "o").mkdir()
    torch.save(data, tmp_path / "o" / "summary.pt")
    with pytest.raises(UserError, match="older repinterp.*run `repinterp summarize` again"):
        load_summary(tmp_path / "o")


def test_a_region_field_added_later_passes_through(files):
    """Regions are (de)serialised over dataclasses.fields(Region): a field the check does
    not know is checked as plain data, and missing ones with a default take it."""
    data = _payload(files / "s" / "summary.pt")
    for c in data["classes"]:
        for r in c["regions"]:
            r.pop("logic")
    assert all(r.logic is None for r in Summary.from_dict(data).regions)


def test_cli_bit_flip_and_class_57(files, tmp_path, capsys):
    code, _, err = _explain(capsys, files, files / "s", tmp_path / "e0")
    assert code == 0, err
    flipped = tmp_path / "f" / "summary.pt"
    flipped.parent.mkdir()
    blob = bytearray((files / "s" / "summary.pt").read_bytes())
    blob[len(blob) // 2] ^= 0x10
    flipped.write_bytes(bytes(blob))
    code, _, err = _explain(capsys, files, flipped.parent, tmp_path / "e1")
    one_line_error(code, err, str(flipped), "checksum does not match")
    _edit_region(files, tmp_path, lambda d, r: r.update(predicted_class=57))
    code, _, err = _explain(capsys, files, tmp_path / "c", tmp_path / "e2")
    one_line_error(code, err, "summary.pt", "predicted_class is 57")
    _edit_region(files, tmp_path, lambda d, r: r.update(members=torch.tensor([-1])))
    code, _, err = _explain(capsys, files, tmp_path / "c", tmp_path / "e3")
    one_line_error(code, err, "summary.pt", "member index -1")
    assert not (tmp_path / "e1").exists() and not (tmp_path / "e2").exists()


# --- the index -------------------------------------------------------------------------
@pytest.fixture()
def index(files, tmp_path, capsys):
    data = tmp_path / "x.npy"
    shutil.copy(files / "x.npy", data)
    code, _, err = cli(capsys, "index", "--model", files / "m.pt", "--data", data, "--out",
                       tmp_path / "idx", "--bank", "16", "--pilot", "60", "--shard-size",
                       "50", *BASE)
    assert code == 0, err
    return tmp_path / "idx", data


def test_an_array_rewritten_with_the_same_shape_and_time_is_refused(index, capsys,
                                                                     tmp_path):
    idx, data = index
    code, _, err = cli(capsys, "summarize", "--index", idx, "--out", tmp_path / "s0",
                       "--quiet")
    assert code == 0, err
    st = data.stat()
    arr = np.load(data)
    arr[0, 0, 0, 0] += 1.0                          # same shape, same size
    np.save(data, arr)
    os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert data.stat().st_size == st.st_size and data.stat().st_mtime_ns == st.st_mtime_ns
    code, _, err = cli(capsys, "summarize", "--index", idx, "--out", tmp_path / "s1",
                       "--quiet")
    one_line_error(code, err, "x.npy was modified", "contents differ")


def test_the_manifest_is_typed_and_checked(index, tmp_path):
    import json

    from repinterp.app.index import read_manifest
    from repinterp.app.schema import MANIFEST_VERSION, manifest_checksum
    idx, _ = index
    m = read_manifest(idx)
    assert m["version"] == MANIFEST_VERSION and len(m["shards"]) == 3
    assert m["feature_shape"] == [4, 4, 4] and m["classes"] == 3
    path = idx / "manifest.json"
    for change, needle in [
        (lambda d: d.update(shards=d["shards"][:2]), "lists 2 shards, not 3"),
        (lambda d: d.update(bank_sha256="x" * 64), "'bank_sha256' is not a SHA-256"),
        (lambda d: d.update(feature_shape=[4, -4, 4]), "not a list of positive sizes"),
        (lambda d: d.update(classes=0), "'classes' is 0"),
        (lambda d: d.update(version=1), "not a version 2 index manifest"),
        (lambda d: d["data"].update(evil=1), "'data' has an unknown"),
    ]:
        d = json.loads(json.dumps(m))
        change(d)
        d["checksum"] = manifest_checksum(d)
        if needle.startswith("'data'"):
            path.write_text(json.dumps(d))
            with pytest.raises(UserError, match=needle):
                read_manifest(idx)
        else:
            with pytest.raises(UserError, match=needle):
                check_manifest(d, path)
