"""Hostile inputs at the edges of the command line and the API: each case exits 2 with
one readable line (or does the right thing), and leaves the user's files as they were."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from helpers import cli, one_line_error, pixels, png, script_model

from repinterp import RepresentativeInterpreter, UserError

BASE = ("--layer", "2", "--quiet", "--num-boundaries", "8", "--normalize", "none")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return script_model(tmp_path_factory.mktemp("m"))


def folder(root, names):
    pix = pixels(0, len(names))
    for i, name in enumerate(names):
        png(root / f"c{i % 3}" / name, pix[i, 0])
    return root


def test_formula_like_names_are_text_in_members_csv(capsys, tmp_path, model_file):
    """A cell that starts with = + - @ is a formula to a spreadsheet: members.csv quotes
    it with a leading ' (OWASP's advice for CSV exports); Parquet keeps the raw name."""
    import pyarrow.parquet as pq
    lead = ["=", "+", "-", "@", "a"]
    flat = folder(tmp_path / "staging", [f"{lead[i % 5]}HYPERLINK(x){i:02d}.png"
                                         for i in range(30)])
    (tmp_path / "flat").mkdir()
    for path in flat.rglob("*.png"):                       # a flat folder: names lead
        path.rename(tmp_path / "flat" / path.name)
    flat = tmp_path / "flat"
    code, _, err = cli(capsys, "summarize", "--model", model_file, "--data", flat, "--out",
                       tmp_path / "f", *BASE)
    assert code == 0, err
    with open(tmp_path / "f" / "members.csv", newline="") as fh:
        cells = [row["image"] for row in csv.DictReader(fh)]
    raw = pq.read_table(tmp_path / "f" / "members.parquet").column("image").to_pylist()
    assert len(cells) == len(raw) and {r[0] for r in raw} == set("=+-@a")
    for c, r in zip(cells, raw, strict=True):
        assert c == ("'" + r if r[0] in "=+-@" else r)


@pytest.mark.parametrize("argv, needle", [
    (("--seed", str(2**70)), "--seed must be in 0 .. 2**63 - 1"),
    (("--seed", "-1"), "--seed must be in 0 .. 2**63 - 1"),
    (("--size", "100000"), "larger than 8192 pixels a side"),
    (("--engine", "ray", "--index", "nowhere", "--ray-address", "not an address"),
     "--ray-address must be HOST:PORT"),
])
def test_out_of_range_options(capsys, tmp_path, model_file, argv, needle):
    code, _, err = cli(capsys, "summarize", "--model", model_file, "--data", tmp_path,
                       "--out", tmp_path / "s", *BASE, *argv)
    one_line_error(code, err, needle)
    assert not (tmp_path / "s").exists()


def test_heldout_of_another_size_is_refused_before_the_fit(capsys, tmp_path, model_file):
    data = folder(tmp_path / "data", [f"i{i}.png" for i in range(30)])
    np.save(tmp_path / "held.npy", np.zeros((5, 1, 12, 12), np.uint8))
    code, _, err = cli(capsys, "summarize", "--model", model_file, "--data", data,
                       "--heldout", tmp_path / "held.npy", "--out", tmp_path / "s", *BASE)
    one_line_error(code, err, "the held-out images", "(1, 12, 12)", "(1, 8, 8)", "--size H,W")


def test_out_of_memory_is_one_line(capsys, tmp_path, model_file, monkeypatch):
    import repinterp.app.pipeline as pipeline

    def exhausted(*args, **kwargs):
        raise MemoryError
    monkeypatch.setattr(pipeline, "fit_job", exhausted)
    data = folder(tmp_path / "data", [f"i{i}.png" for i in range(6)])
    code, _, err = cli(capsys, "summarize", "--model", model_file, "--data", data, "--out",
                       tmp_path / "s", *BASE)
    one_line_error(code, err, "out of memory", "--references", "--store-dir")


def test_fit_on_no_references_and_a_boolean_seed(net, images):
    it = RepresentativeInterpreter(net, "2", progress=False)
    with pytest.raises(UserError, match="at least one reference image"):
        it.fit(images[:0])
    it.fit(images[:40])
    for seed in (True, torch.tensor(True)):
        with pytest.raises(UserError, match="seed must be a reference index"):
            it.explain(seed)
