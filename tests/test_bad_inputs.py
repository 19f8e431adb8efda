"""Trust at the edges (issue 17): every case runs through the command line (or the API
where the case is an API call) on real files in a temporary folder, and asserts the
exit code, the one-line message and what is left in ``--out`` afterwards."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import cli, one_line_error, pixels, png, png16, png_chunk, script_model
from nets import tiny_cnn
from PIL import Image
from torch import nn

from repinterp import RepresentativeInterpreter
from repinterp.app.labels import load_labels
from repinterp.app.loading import load_images
from repinterp.core.errors import UserError


def declared_png(path: Path, width: int, height: int) -> None:
    """A PNG header declaring ``width x height`` gray pixels, with almost no data (the
    shape of a decompression bomb; nothing of it may be decoded)."""
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(
        ">IIBBBBB", width, height, 8, 0, 0, 0, 0)) + png_chunk(b"IDAT", zlib.compress(
            b"\x00" * 64)) + png_chunk(b"IEND", b""))


class Evil:
    """Unpickling this creates a file: the proof that code ran."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A TorchScript model, an ImageFolder of 8x8 gray PNGs, the same as .npy."""
    root = tmp_path_factory.mktemp("bad")
    script_model(root)
    script_model(root, seed=1, name="other.pt")
    pix = pixels(0, 120)
    for i in range(len(pix)):
        png(root / "folder" / f"c{i % 3}" / f"img{i:03d}.png", pix[i, 0])
    np.save(root / "x.npy", pix)
    return root


BASE = ("--layer", "2", "--quiet", "--num-boundaries", "8", "--normalize", "none")


# --- 1, 2, 8, 10, 12: the index --------------------------------------------------------
@pytest.fixture()
def index(files, tmp_path, capsys):
    """An index of a copy of the folder (so each test may change it)."""
    data = tmp_path / "data"
    shutil.copytree(files / "folder", data)
    code, _, err = cli(capsys, "index", "--model", files / "m.pt", "--data", data, "--out",
                       tmp_path / "idx", "--bank", "16", "--pilot", "60", "--shard-size",
                       "50", *BASE[:2], "--quiet", "--normalize", "none")
    assert code == 0, err
    return tmp_path / "idx", data


def test_a_file_added_to_an_indexed_folder_is_named(index, capsys, tmp_path):
    idx, data = index
    png(data / "c0" / "aaa-first.png", np.zeros((8, 8), np.uint8))
    code, _, err = cli(capsys, "summarize", "--index", idx, "--out", tmp_path / "s", "--quiet")
    one_line_error(code, err, "c0/aaa-first.png was added", "rebuild the index")
    assert not (tmp_path / "s").exists()
    (data / "c0" / "aaa-first.png").unlink()
    st = (data / "c1" / "img004.png").stat()
    os.utime(data / "c1" / "img004.png", ns=(1, 1))            # same name, new time
    code, _, err = cli(capsys, "explain", "--index", idx, "--image", data / "c0/img000.png",
                       "--out", tmp_path / "e", "--quiet")
    one_line_error(code, err, "c1/img004.png was modified")
    os.utime(data / "c1" / "img004.png", ns=(st.st_atime_ns, st.st_mtime_ns))
    (data / "c2" / "img005.png").unlink()
    code, _, err = cli(capsys, "summarize", "--index", idx, "--out", tmp_path / "s", "--quiet")
    one_line_error(code, err, "c2/img005.png was removed")


def test_flipped_bits_in_a_shard_or_the_bank_are_refused(index, capsys, tmp_path):
    idx, _ = index
    shard = idx / "shards" / "part-00001.parquet"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x10
    shard.write_bytes(bytes(data))
    code, _, err = cli(capsys, "summarize", "--index", idx, "--out", tmp_path / "s", "--quiet")
    one_line_error(code, err, "part-00001.parquet is corrupt", "checksum")
    data[len(data) // 2] ^= 0x10
    shard.write_bytes(bytes(data))
    bank = bytearray((idx / "bank.pt").read_bytes())
    bank[-40] ^= 0x01
    (idx / "bank.pt").write_bytes(bytes(bank))
    code, _, err = cli(capsys, "summarize", "--index", idx, "--out", tmp_path / "s", "--quiet")
    one_line_error(code, err, "bank.pt is missing or corrupt")


def _rewrite_manifest(idx: Path, change) -> None:
    """Edit the manifest as a hostile editor would: the change, then a recomputed
    checksum (a naive hand edit keeps the old one)."""
    from repinterp.app.schema import manifest_checksum
    m = json.loads((idx / "manifest.json").read_text())
    change(m)
    m["checksum"] = manifest_checksum(m)
    (idx / "manifest.json").write_text(json.dumps(m))


@pytest.mark.parametrize("edit,needle", [
    (lambda m: m.pop("layer"), "has no 'layer'"),
    (lambda m: m.update(items="120"), "'items' has the wrong type"),
    (lambda m: m.update(layer="1"), "was edited after the index was built"),
])
def test_a_hand_edited_manifest_is_refused(index, capsys, tmp_path, edit, needle):
    idx, _ = index
    m = json.loads((idx / "manifest.json").read_text())
    edit(m)
    (idx / "manifest.json").write_text(json.dumps(m))
    code, _, err = cli(capsys, "summarize", "--index", idx, "--out", tmp_path / "s", "--quiet")
    one_line_error(code, err, needle)


def test_an_index_folder_cannot_grant_trust(index, capsys, tmp_path):
    """A manifest naming a pickled model with ``trust_pickle: true`` runs nothing: only
    --trust-pickle on the command line allows unpickling."""
    idx, _ = index
    proof = tmp_path / "pwned"
    torch.save(Evil(proof), tmp_path / "evil.pt")
    _rewrite_manifest(idx, lambda m: m.update(model={
        "arch": None, "weights": None, "num_classes": None,
        "model_file": str(tmp_path / "evil.pt"), "trust_pickle": True}))
    code, _, err = cli(capsys, "summarize", "--index", idx, "--out", tmp_path / "s", "--quiet")
    one_line_error(code, err, "--trust-pickle")
    code, _, err = cli(capsys, "explain", "--index", idx, "--image",
                       tmp_path / "data/c0/img000.png", "--out", tmp_path / "e", "--quiet")
    one_line_error(code, err, "--trust-pickle")
    assert not proof.exists()
    # the bank is read with weights_only, whatever its checksum says
    torch.save(Evil(proof), idx / "bank.pt")
    _rewrite_manifest(idx, lambda m: m.update(bank_sha256=hashlib.sha256(
        (idx / "bank.pt").read_bytes()).hexdigest()))
    code, _, err = cli(capsys, "summarize", "--index", idx, "--model", tmp_path / "evil.pt",
                       "--out", tmp_path / "s", "--quiet")
    one_line_error(code, err)
    assert not proof.exists()


def test_no_model_or_summary_file_runs_code(files, capsys, tmp_path):
    proof = tmp_path / "pwned"
    torch.save(Evil(proof), tmp_path / "evil.pt")
    cases = [
        ("summarize", "--model", tmp_path / "evil.pt", "--data", files / "x.npy", *BASE),
        ("explain", "--arch", "resnet18", "--weights", tmp_path / "evil.pt",
         "--data", files / "x.npy", *BASE),
        ("layers", "--model", tmp_path / "evil.pt"),
        ("index", "--model", tmp_path / "evil.pt", "--data", files / "x.npy", "--out",
         tmp_path / "i", *BASE),
    ]
    for argv in cases:
        code, _, err = cli(capsys, *argv)
        one_line_error(code, err)
    (tmp_path / "sum").mkdir()
    torch.save(Evil(proof), tmp_path / "sum" / "summary.pt")
    code, _, err = cli(capsys, "explain", "--model", files / "m.pt", "--data", files / "x.npy",
                       "--summary", tmp_path / "sum", "--image", files / "folder/c0/img000.png",
                       *BASE)
    one_line_error(code, err, "is not a summary written by repinterp")
    assert not proof.exists()


def test_a_smaller_bank_than_asked_resumes(files, capsys, tmp_path):
    """A pilot too small for --bank gives fewer boundaries; the same command must still
    resume (it compares what was asked, not what came out)."""
    argv = ["index", "--model", files / "m.pt", "--data", files / "x.npy", "--out",
            tmp_path / "i", "--bank", "5000", "--pilot", "20", *BASE]
    code, out, err = cli(capsys, *argv)
    assert code == 0, err
    manifest = json.loads((tmp_path / "i" / "manifest.json").read_text())
    assert manifest["bank"] == 5000 and manifest["bank_size"] < 5000
    code, out2, err = cli(capsys, *argv)
    assert code == 0, err
    assert out2 == out


# --- 3: a summary used with another model or other data ------------------------------
def test_a_summary_refuses_another_model_or_other_data(files, capsys, tmp_path):
    code, _, err = cli(capsys, "summarize", "--model", files / "m.pt", "--data",
                       files / "x.npy", "--out", tmp_path / "s", *BASE)
    assert code == 0, err
    image = files / "folder/c0/img000.png"
    code, _, err = cli(capsys, "explain", "--model", files / "other.pt", "--data",
                       files / "x.npy", "--summary", tmp_path / "s", "--image", image, *BASE)
    one_line_error(code, err, "made with another model")
    other = pixels(7, 120)                                      # as many images
    np.save(tmp_path / "y.npy", other)
    code, _, err = cli(capsys, "explain", "--model", files / "m.pt", "--data",
                       tmp_path / "y.npy", "--summary", tmp_path / "s", "--image", image, *BASE)
    one_line_error(code, err, "made from other reference images")
    code, out, err = cli(capsys, "explain", "--model", files / "m.pt", "--data",
                         files / "x.npy", "--summary", tmp_path / "s", "--image", image,
                         "--out", tmp_path / "e", *BASE)
    assert code == 0, err


# --- 4, 11: image files ------------------------------------------------------------------
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("filters", [(0,), (1, 2, 3, 4)])
def test_16_bit_pngs_are_scaled_by_65535_exactly(tmp_path, channels, filters):
    """Known 16-bit values come back as value / 65535 (alpha dropped), through every
    PNG filter; Pillow alone clipped gray ones to white and cut colour ones to 8 bits."""
    rng = np.random.default_rng(channels)
    arr = rng.integers(0, 65536, (5, 7, channels)).astype(np.uint16)
    arr[0, 0] = 65535
    arr[0, 1] = 1
    png16(tmp_path / "a.png", arr, filters)
    got = load_images(tmp_path / "a.png", normalize="none").images[0]
    colour = arr[..., :3] if channels >= 3 else arr[..., :1]
    want = torch.from_numpy(colour.transpose(2, 0, 1).astype(np.float32) / np.float32(65535))
    assert torch.equal(got, want)


def test_16_bit_gray_png_written_by_pillow(tmp_path):
    arr = np.array([[0, 1000, 65535], [30000, 257, 40000]], np.uint16)
    Image.fromarray(arr).save(tmp_path / "g.png")
    assert Image.open(tmp_path / "g.png").mode == "I;16"
    got = load_images(tmp_path / "g.png", normalize="none").images[0, 0]
    assert torch.equal(got, torch.from_numpy(arr.astype(np.float32) / np.float32(65535)))
    rgb = load_images(tmp_path / "g.png", channels=3, normalize="none").images[0]
    assert torch.equal(rgb[0], got) and torch.equal(rgb[2], got)


def test_decompression_bombs_are_refused_before_decoding(files, capsys, tmp_path):
    declared_png(tmp_path / "bomb.png", 30000, 30000)
    declared_png(tmp_path / "big.png", 10000, 10000)            # 100 Mpx
    for name in ("bomb.png", "big.png"):
        code, _, err = cli(capsys, "explain", "--model", files / "m.pt", "--data",
                           files / "x.npy", "--image", tmp_path / name, *BASE)
        one_line_error(code, err, name, "pixels")
    folder = tmp_path / "f"
    shutil.copytree(files / "folder", folder)
    shutil.copy(tmp_path / "bomb.png", folder / "c0" / "bomb.png")
    code, _, err = cli(capsys, "summarize", "--model", files / "m.pt", "--data", folder,
                       "--out", tmp_path / "s", *BASE)
    assert code == 0, err
    assert err.count("\n") == 0 and "skipped 1 unreadable" in err


# --- 5, 6: the split checked at fit, bytes refused ---------------------------------------
class Doubled(nn.Module):
    """A custom forward that fx traces in the training branch when the model is left
    in training mode (a tracing mistake: model(x) in eval mode takes the other)."""

    def __init__(self):
        super().__init__()
        self.net = tiny_cnn(0)

    def forward(self, x):
        y = self.net(x)
        return y * 3.0 if self.training else y


class Pair(nn.Module):
    """Logits and their double: the first item is taken as the logits."""

    def __init__(self, dtype: torch.dtype):
        super().__init__()
        self.net = tiny_cnn(0, dtype=dtype)

    def forward(self, x):
        y = self.net(x)
        return y, 2.0 * y


class Scores(nn.Module):
    """Returns its outputs in a dict without a "logits" entry."""

    def __init__(self):
        super().__init__()
        self.net = tiny_cnn(0, dtype=torch.float32)

    def forward(self, x):
        y = self.net(x)
        return {"scores": y, "probabilities": y.softmax(1)}


def test_the_split_is_checked_at_fit(net, images):
    hooked = tiny_cnn(0)
    handle = hooked.register_forward_hook(lambda m, i, o: o * 2.0)
    with pytest.raises(UserError, match="hooks on the model itself"):
        RepresentativeInterpreter(hooked, "2", progress=False).fit(images)
    handle.remove()
    hooked.register_forward_pre_hook(lambda m, i: (i[0] * 0.5,))
    with pytest.raises(UserError, match="hooks on the model itself"):
        RepresentativeInterpreter(hooked, "2", progress=False).fit(images)
    inner = tiny_cnn(0)                      # hooks on a leaf module run in the split
    inner[4].register_forward_hook(lambda m, i, o: o * 2.0)
    RepresentativeInterpreter(inner, "2", progress=False, num_boundaries=5).fit(images)
    custom = Doubled().train()
    with pytest.raises(UserError, match="does something its traced graph does not"):
        RepresentativeInterpreter(custom, "net.2", progress=False).fit(images)
    assert custom.training                                       # the user's flag kept

    # a tuple's first item is the logits (issue 21: (logits, aux) as many models return)
    pair = RepresentativeInterpreter(Pair(torch.float64), "net.2", num_boundaries=5,
                                     progress=False).fit(images)
    plain = RepresentativeInterpreter(tiny_cnn(0), "2", num_boundaries=5,
                                      progress=False).fit(images)
    assert torch.equal(pair.predictions_, plain.predictions_)


def test_integer_images_are_refused(net, images):
    it = RepresentativeInterpreter(net, "2", num_boundaries=5, progress=False)
    with pytest.raises(UserError, match=r"torch.uint8.*images.float\(\) / 255"):
        it.fit((images.clamp(0, 1) * 255).to(torch.uint8))
    it.fit(images)
    with pytest.raises(UserError, match="torch.uint8"):
        it.heatmap(it.explain(0), (images[:2] * 255).to(torch.uint8))


def test_nan_in_the_head_is_named(images):
    model = tiny_cnn(0)
    with torch.no_grad():
        model[6].weight[1, 3] = float("nan")
    with pytest.raises(UserError, match="logits contain NaN.*after '2'"):
        RepresentativeInterpreter(model, "2", progress=False).fit(images)


# --- 7, 12: command-line mistakes ----------------------------------------------------------
@pytest.mark.parametrize("extra,needle", [
    (("--references", "-5"), "--references must be at least 1, got -5"),
    (("--references", "0"), "--references must be at least 1"),
    (("--num-boundaries", "0"), "--num-boundaries must be at least 1"),
    (("--coverage", "1.5"), "--coverage must be in (0, 1]"),
    (("--target-purity", "1.5"), "--target-purity must be in (0, 1], got 1.5"),
    (("--target-purity", "0"), "--target-purity must be in (0, 1]"),
    (("--device", "cuda:7"), "device 'cuda:7'"),
    (("--device", "gpu-please"), "unknown device 'gpu-please'"),
    (("--layer", "4"), "not a feature map C x H x W"),
])
def test_usage_errors(files, capsys, tmp_path, extra, needle):
    argv = ["summarize", "--model", files / "m.pt", "--data", files / "x.npy",
            "--out", tmp_path / "s", *BASE, *extra]
    code, _, err = cli(capsys, *argv)
    one_line_error(code, err, needle)
    assert not (tmp_path / "s").exists()


def test_model_files_that_are_not_files(files, capsys, tmp_path):
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    for target, needle in [(tmp_path / "loop", "symbolic link loop"),
                           (tmp_path / "dangling", "broken symbolic link"),
                           (tmp_path, "is a folder, not a file")]:
        code, _, err = cli(capsys, "summarize", "--model", target, "--data", files / "x.npy",
                           *BASE)
        one_line_error(code, err, needle)
    # a TorchScript archive with a damaged member is named as such
    data = bytearray((files / "m.pt").read_bytes())
    data[len(data) // 3: len(data) // 3 + 64] = b"\0" * 64
    (tmp_path / "broken.pt").write_bytes(bytes(data))
    code, _, err = cli(capsys, "layers", "--model", tmp_path / "broken.pt")
    one_line_error(code, err, "corrupt TorchScript file")


def test_num_classes_mismatch_names_the_tensor(capsys, tmp_path):
    import torchvision
    torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), tmp_path / "r.pt")
    code, _, err = cli(capsys, "layers", "--arch", "resnet18", "--weights", tmp_path / "r.pt",
                       "--num-classes", "10")
    one_line_error(code, err, "fc.weight is (3, 512) in the file, (10, 512) in the model")


def test_a_model_returning_a_dict_without_logits(capsys, tmp_path, files):
    """A tuple's first item is taken as the logits, a dict's "logits"; a dict without
    them is refused by its keys."""
    torch.save(Scores(), tmp_path / "scores.pt")
    code, _, err = cli(capsys, "summarize", "--model", tmp_path / "scores.pt",
                       "--trust-pickle", "--layer", "net.2", "--data", files / "x.npy",
                       "--normalize", "none", "--quiet", "--out", tmp_path / "s")
    one_line_error(code, err, "returns a dict with keys ['probabilities', 'scores']")


def test_out_that_is_a_file_or_a_foreign_folder(files, capsys, tmp_path):
    (tmp_path / "file").write_text("mine")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    for out, needle in [(tmp_path / "file", "is an existing file"),
                        (tmp_path / "mine", "holds files repinterp did not write")]:
        code, _, err = cli(capsys, "summarize", "--model", files / "m.pt", "--data",
                           files / "x.npy", "--out", out, *BASE)
        one_line_error(code, err, needle)
    assert (tmp_path / "file").read_text() == "mine"
    assert os.listdir(tmp_path / "mine") == ["thesis.tex"]


@pytest.fixture()
def tiny_fs(tmp_path):
    """A 64 KiB tmpfs (root only; a summary of 120 8x8 images takes about 150 KiB),
    unmounted afterwards."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
            capture_output=True).returncode != 0:
        pytest.skip("needs root to mount a small tmpfs")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_and_read_only_file_system(files, capsys, tiny_fs):
    code, _, err = cli(capsys, "summarize", "--model", files / "m.pt", "--data",
                       files / "x.npy", "--out", tiny_fs / "s", *BASE)
    one_line_error(code, err, "no space left on its device", "MiB free there")
    assert os.listdir(tiny_fs) == []                 # nothing half-written is left
    code, _, err = cli(capsys, "index", "--model", files / "m.pt", "--data", files / "x.npy",
                       "--out", tiny_fs / "i", "--bank", "400", "--pilot", "100",
                       "--shard-size", "8", *BASE)
    one_line_error(code, err, "no space left on its device")
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_fs)], check=True)
    code, _, err = cli(capsys, "summarize", "--model", files / "m.pt", "--data",
                       files / "x.npy", "--out", tiny_fs / "s", *BASE)
    one_line_error(code, err, "read-only")


# --- messages -----------------------------------------------------------------------------
def test_label_csv_rows_that_match_nothing(files, tmp_path):
    names = [f"c{i % 3}/img{i:03d}.png" for i in range(6)]
    (tmp_path / "some.csv").write_text("path,label\nc0/img000.png,0\nc0/img000.png,1\n"
                                       "gone.png,2\n")
    with pytest.warns(UserWarning) as caught:
        labels = load_labels(files / "folder", names, str(tmp_path / "some.csv"))
    text = " ".join(str(w.message) for w in caught)
    assert "1 row(s)" in text and "gone.png" in text and "1 duplicate row(s)" in text
    assert labels.tolist() == [1, -1, -1, -1, -1, -1]
    (tmp_path / "prefixed.csv").write_text("data/c0/img000.png,0\ndata/c1/img001.png,1\n")
    with pytest.raises(UserError, match="none of the 2 paths .* names an image"):
        load_labels(files / "folder", names, str(tmp_path / "prefixed.csv"))


# --- 9: outputs all or nothing ------------------------------------------------------------
def _snapshot(out: Path) -> dict[str, bytes]:
    """Every file's bytes; ``summary.pt`` (torch.save is not byte-stable) by its regions'
    sizes."""
    from repinterp.app.io import load_summary
    files = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
             if p.is_file() and p.name != "summary.pt"}
    if (out / "summary.pt").exists():
        sizes = [r.size for r in load_summary(out).regions]
        files["summary.pt"] = repr(sizes).encode()
    return files


def test_a_failed_run_leaves_the_old_output_whole(tmp_path):
    from repinterp.app.outputs import output_folder
    out = tmp_path / "out"
    with output_folder(out) as tmp:
        (tmp / "a.txt").write_text("old")
    with pytest.raises(RuntimeError), output_folder(out) as tmp:
        (tmp / "a.txt").write_text("new")
        (tmp / "b.txt").write_text("new")
        raise RuntimeError("boom")
    assert sorted(os.listdir(out)) == [".repinterp-output", "a.txt"]
    assert (out / "a.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]      # no temporary folder


def test_fewer_regions_leave_no_stale_pages(files, capsys, tmp_path):
    out = tmp_path / "s"
    for max_regions in ("6", "1"):
        code, _, err = cli(capsys, "summarize", "--model", files / "m.pt", "--data",
                           files / "x.npy", "--out", out, "--max-regions", max_regions, *BASE)
        assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    regions = sum(len(c["regions"]) for c in summary["classes"])
    assert len(os.listdir(out / "regions")) == regions <= 3


@pytest.mark.slow
def test_sigint_at_any_point_leaves_the_old_set_or_the_new_one(tmp_path):
    """A run interrupted (SIGINT) at several points of its life: ``--out`` holds exactly
    the previous run's files or exactly the new run's, and no temporary folder."""
    model = tiny_cnn(0, dtype=torch.float32)
    torch.jit.script(model).save(str(tmp_path / "m.pt"))
    np.save(tmp_path / "x.npy", pixels(0, 900))
    argv = [sys.executable, "-m", "repinterp.cli", "summarize", "--model",
            str(tmp_path / "m.pt"), "--data", str(tmp_path / "x.npy"), *BASE]

    def run(out: Path, *extra: str) -> float:
        start = time.monotonic()
        subprocess.run([*argv, "--out", str(out), *extra], check=True, capture_output=True)
        return time.monotonic() - start

    run(tmp_path / "old", "--max-regions", "2")
    took = run(tmp_path / "new", "--max-regions", "6")
    old, new = _snapshot(tmp_path / "old"), _snapshot(tmp_path / "new")
    assert old != new
    outcomes = set()
    for fraction in (0.05, 0.2, 0.5, 0.7, 0.85, 0.95, 1.0):
        out = tmp_path / "out"
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(tmp_path / "old", out)
        # SIGINT as a terminal's Ctrl-C delivers it: a test run in the background (`&`
        # in a shell without job control, as CI may start it) has SIGINT ignored, and a
        # child inherits that (Python then never raises KeyboardInterrupt): every
        # interrupt was lost and every run finished (the issue 19 session's fresh clones)
        proc = subprocess.Popen([*argv, "--out", str(out), "--max-regions", "6"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                preexec_fn=lambda: signal.signal(signal.SIGINT,
                                                                 signal.SIG_DFL))
        time.sleep(took * fraction)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
        now = _snapshot(out)
        assert now in (old, new), f"mixed output after SIGINT at {fraction:.0%}"
        outcomes.add("new" if now == new else "old")
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            ["m.pt", "x.npy", "old", "new", "out"])
    assert "old" in outcomes                  # an early interrupt keeps the old set

