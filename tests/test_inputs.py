"""Issue: your own model and images. Real files in tmp dirs, randomly initialised
torchvision models, no downloads."""
import json
import os
import warnings

import numpy as np
import pytest
import torch
import torchvision
from helpers import cli, png, script_model
from torch import nn

from benchmarks.torchvision_matrix import diversify
from repinterp.app.loading import load_images
from repinterp.app.models import load_model
from repinterp.app.outputs import atomic_path, write_text
from repinterp.cli import main
from repinterp.core.errors import UserError

XSS = "<img src=x onerror=alert(1)>.png"


@pytest.fixture(scope="module")
def gray_folder(tmp_path_factory):
    """8x8 grayscale PNGs in an ImageFolder layout, one corrupt file, one XSS name."""
    root = tmp_path_factory.mktemp("gray")
    rng = np.random.default_rng(0)
    for i in range(90):
        png(root / f"class{i % 3}" / f"img{i:03d}.png", rng.integers(0, 256, (8, 8), np.uint8))
    png(root / "class0" / XSS, rng.integers(0, 256, (8, 8), np.uint8))
    (root / "class1" / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def tiny_script(tmp_path_factory):
    return script_model(tmp_path_factory.mktemp("m"), name="tiny.pt")


# --- images -----------------------------------------------------------------------
def test_folder_skips_corrupt_files_and_counts_them(gray_folder):
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        s = load_images(gray_folder)
    assert s.images.shape == (91, 1, 8, 8) and s.skipped == ["class1/notes.txt"]
    assert f"class0/{XSS}" in s.names
    with pytest.raises(UserError, match="notes.txt is not a readable image"):
        load_images(gray_folder, strict=True)


def test_flat_folder_npy_npz_idx_and_single_file(tmp_path):
    arr = np.random.default_rng(1).integers(0, 256, (5, 6, 7), np.uint8)
    for i, a in enumerate(arr):
        png(tmp_path / "flat" / f"{i}.png", a)
    flat = load_images(tmp_path / "flat", normalize="none")
    np.save(tmp_path / "a.npy", arr)
    np.savez(tmp_path / "b.npz", images=arr)
    idx = tmp_path / "x-idx3-ubyte"
    idx.write_bytes(b"\x00\x00\x08\x03" + np.array([5, 6, 7], ">u4").tobytes() + arr.tobytes())
    for src in (tmp_path / "a.npy", tmp_path / "b.npz", idx):
        other = load_images(src, normalize="none")
        torch.testing.assert_close(other.images, flat.images)
    one = load_images(tmp_path / "flat" / "3.png", normalize="none")
    torch.testing.assert_close(one.images[0], flat.images[3])


@pytest.mark.parametrize("kind", ["npy", "npz", "compressed"])
@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_an_array_source_keeps_its_raw_rows_and_scales_what_it_reads(tmp_path, kind, dtype):
    """An array file is held in its own type (an .npy, or an array np.savez stored
    uncompressed, read in place row by row; a compressed one read), and any rows read
    are exactly those rows of the whole file decoded at once (scaled, converted to three
    channels, resized): a large array is not copied to float32 in memory."""
    from repinterp.app.formats import RowFile
    from repinterp.app.loading import ImageSource, decode_file, parse_normalize

    def finish(arr):                              # the default normalisation, by hand
        mean, std = (np.asarray(v, np.float32)[None, :, None, None]
                     for v in parse_normalize(None, 3))
        return torch.from_numpy(((arr - mean) / std).astype(np.float32))
    g = np.random.default_rng(0)
    a = g.integers(0, 256, (40, 12, 10), dtype=np.uint8)
    a = a if dtype == "uint8" else (a / 255).astype(np.float32)
    path = tmp_path / ("x.npy" if kind == "npy" else "x.npz")
    {"npy": np.save, "npz": np.savez, "compressed": np.savez_compressed}[kind](path, a)
    src = ImageSource(str(path), channels=3, size=(16, 14))
    raw, rule = src._raw_array()
    assert raw.dtype == a.dtype and raw.shape == (40, 1, 12, 10)
    assert isinstance(raw, RowFile) == (kind != "compressed")
    whole = finish(torch.nn.functional.interpolate(
        torch.from_numpy(np.repeat(decode_file(path), 3, axis=1)), size=(16, 14),
        mode="bilinear", align_corners=False, antialias=True).numpy())
    for start, end in ((0, 40), (5, 9), (39, 40)):
        got, items, names = src.read(start, end)
        assert items == list(range(start, end)) and names[0] == f"{path.name}[{start}]"
        torch.testing.assert_close(got, whole[start:end], rtol=0, atol=0)
    some, _, _ = src._gather([7, 2, 30])
    assert torch.equal(finish(some), whole[[7, 2, 30]])


@pytest.mark.parametrize("layout", ["NHW", "NHWC", "NCHW"])
def test_a_row_file_reads_the_rows_numpy_reads(tmp_path, layout):
    """Rows read in place (slices, scattered and repeated indices, negative ones, runs)
    are numpy's rows of the same file, laid out as [N, C, H, W]."""
    from repinterp.app.formats import RowFile, read_file
    shape = {"NHW": (30, 5, 6), "NHWC": (30, 5, 6, 3), "NCHW": (30, 3, 5, 6)}[layout]
    a = np.random.default_rng(1).random(shape).astype(np.float32)
    np.save(tmp_path / "a.npy", a)
    rows = read_file(tmp_path / "a.npy")
    assert isinstance(rows, RowFile) and len(rows) == 30 and rows.ndim == 4
    want = a[:, None] if layout == "NHW" else a.transpose(0, 3, 1, 2) \
        if layout == "NHWC" else a
    for idx in (slice(None), slice(3, 9), slice(0, 30, 4), [5, 6, 7, 2, 2, 29, -1], [],
                np.array([0])):
        np.testing.assert_array_equal(rows[idx], want[idx])
    with pytest.raises(IndexError):
        rows[[30]]
    np.save(tmp_path / "one.npy", a.reshape(30, -1)[:5])    # one image: read whole
    assert not isinstance(read_file(tmp_path / "one.npy"), RowFile)


def test_channels_resize_and_default_normalisation(gray_folder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rgb = load_images(gray_folder, channels=3, size=(16, 12))
        raw = load_images(gray_folder, channels=1, normalize="none")
    assert rgb.images.shape == (91, 3, 16, 12)
    # ImageNet statistics by default for RGB: channel c = (v - mean_c) / std_c
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    v = rgb.images * std[None, :, None, None] + mean[None, :, None, None]
    torch.testing.assert_close(v[:, 0], v[:, 2], atol=1e-5, rtol=0)
    assert raw.images.min() >= 0 and raw.images.max() <= 1


@pytest.mark.parametrize("make,match", [
    (lambda p: p.mkdir(), "holds no files"),
    (lambda p: None, "does not exist"),
    (lambda p: np.save(p.with_suffix(".npy"), np.full((2, 4, 4), np.nan)), "NaN"),
])
def test_bad_image_inputs(tmp_path, make, match):
    target = tmp_path / "data"
    make(target)
    src = target.with_suffix(".npy") if match == "NaN" else target
    with pytest.raises(UserError, match=match):
        load_images(src)


def test_mixed_sizes_need_size(tmp_path):
    png(tmp_path / "a.png", np.zeros((8, 8), np.uint8))
    png(tmp_path / "b.png", np.zeros((9, 8), np.uint8))
    with pytest.raises(UserError, match=r"size=\(H, W\)"):
        load_images(tmp_path)
    assert load_images(tmp_path, size=(8, 8)).images.shape == (2, 1, 8, 8)


# --- models -----------------------------------------------------------------------
def test_torchvision_arch_with_state_dict(tmp_path):
    torch.manual_seed(0)
    ref = torchvision.models.resnet18(num_classes=3)
    torch.save(ref.state_dict(), tmp_path / "r.pt")
    model = load_model(arch="resnet18", weights=str(tmp_path / "r.pt"), num_classes=3)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 ref.state_dict().values(), strict=True))
    with pytest.raises(UserError, match="does not fit resnet18 with 10 classes"):
        load_model(arch="resnet18", weights=str(tmp_path / "r.pt"), num_classes=10)
    with pytest.raises(UserError, match="did you mean resnet18"):
        load_model(arch="resnet81")


def test_pickled_model_needs_trust(tmp_path, tiny_script):
    torch.save(nn.Sequential(nn.Linear(2, 2)), tmp_path / "whole.pt")
    with pytest.raises(UserError, match="trust_pickle=True"):
        load_model(model_file=str(tmp_path / "whole.pt"))
    assert isinstance(load_model(model_file=str(tmp_path / "whole.pt"), trust_pickle=True),
                      nn.Sequential)
    assert isinstance(load_model(model_file=str(tiny_script)), torch.jit.ScriptModule)


# --- command line -------------------------------------------------------------------
def test_explain_and_summarize_own_folder(capsys, gray_folder, tiny_script, tmp_path):
    out = tmp_path / "out"
    before = set(os.listdir(tmp_path))
    code, stdout, err = cli(capsys, "summarize", "--model", tiny_script, "--layer", "2",
                            "--data", gray_folder, "--out", out, "--quiet",
                            "--num-boundaries", "10")
    assert code == 0, err
    assert "skipped 1 unreadable" in err
    data = json.loads((out / "summary.json").read_text())
    assert data["meta"]["skipped_files"] == 1
    assert set(os.listdir(tmp_path)) - before == {"out"}       # nothing outside --out
    assert sorted(os.listdir(out)) == [".repinterp-output", "members.csv", "members.parquet",
                                       "regions", "report.html", "summary.json", "summary.pt"]
    html = (out / "report.html").read_text()
    assert XSS not in html and "onerror=alert(1)&gt;.png" in html
    # the file names travel as JSON inside <script>: no markup can break out of it
    pages = "".join(p.read_text() for p in (out / "regions").iterdir())
    assert XSS not in pages and "<img src=x" not in html + pages
    # memberships: one row per (region, member), the same in CSV and Parquet; labels
    # from the ImageFolder's class folders (class0, class1, class2 -> 0, 1, 2)
    import pyarrow.parquet as pq
    table = pq.read_table(out / "members.parquet").to_pydict()
    lines = (out / "members.csv").read_text().splitlines()
    assert lines[0] == "image,index,predicted,label,region,logic,rank,distance"
    assert len(lines) - 1 == len(table["image"]) == sum(
        r["size"] for c in data["classes"] for r in c["regions"])
    first = lines[1].split(",")
    assert first[0] == table["image"][0] and int(first[6]) == table["rank"][0] == 1
    assert all(lab == int(name[5]) for name, lab in zip(table["image"], table["label"],
                                                        strict=True))
    regions_in_json = [r for c in data["classes"] for r in c["regions"]]
    assert all("label_accuracy" in r and "flags" in r for r in regions_in_json)
    code, stdout, err = cli(capsys, "explain", "--model", tiny_script, "--layer", "2",
                            "--data", gray_folder, "--image", gray_folder / "class2/img005.png",
                            "--out", tmp_path / "one", "--quiet")
    assert code == 0, err
    # the query is one of the references: it is that reference (issue 19), shown by name
    html = (tmp_path / "one" / "report.html").read_text()
    assert "outside image" not in html and "class2/img005.png" in html
    # the saved summary locates a new image without refitting
    code, stdout, err = cli(capsys, "explain", "--model", tiny_script, "--data", gray_folder,
                            "--summary", out, "--image", gray_folder / "class2/img005.png",
                            "--out", tmp_path / "located", "--quiet")
    assert code == 0, err
    from repinterp.app.io import load_summary
    from repinterp.app.loading import load_images as li
    from repinterp.core.network import SplitNetwork
    summary = load_summary(out)
    net = SplitNetwork(torch.jit.load(str(tiny_script)), summary.layer)
    z = net.features(li(gray_folder / "class2/img005.png", channels=1).images)
    where = int(summary.locate_features(z, net.logits(z).argmax(1))[0])
    if where >= 0:
        assert f"falls in region {where + 1} of the summary" in stdout
        assert (tmp_path / "located" / "report.html").exists()
    else:
        assert "falls in no region of" in stdout and "the nearest is region" in stdout
    code, _, err = cli(capsys, "explain", "--model", tiny_script, "--data", gray_folder,
                       "--summary", tmp_path, "--image", gray_folder / "class2/img005.png")
    assert code == 2 and "summary.pt does not exist" in err


def test_cli_bad_inputs_one_line_exit_2(capsys, gray_folder, tiny_script, tmp_path):
    cases = [
        (["--layer", "22"], "layer '22' not found"),
        (["--layer", "2", "--size", "12,12"], "cannot take images of shape (1, 12, 12)"),
        (["--layer", "2", "--strict"], "not a readable image"),
    ]
    for extra, match in cases:
        code, _, err = cli(capsys, "explain", "--model", tiny_script, "--data", gray_folder,
                           "--quiet", "--out", tmp_path / "x", *extra)
        last = err.splitlines()[-1]             # warnings (skipped files) come first
        assert code == 2 and match in last and last.startswith("repinterp: error:"), err
        assert "Traceback" not in err
    (tmp_path / "empty").mkdir()
    code, _, err = cli(capsys, "explain", "--model", tiny_script, "--layer", "2",
                       "--data", tmp_path / "empty")
    assert code == 2 and "holds no files" in err
    assert not (tmp_path / "x").exists()


def test_cli_one_class_and_non_pl_head(capsys, tmp_path):
    torch.manual_seed(0)
    torch.manual_seed(0)
    gelu = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(72, 8),
                         nn.GELU(), nn.Linear(8, 2))
    x = np.random.default_rng(0).random((40, 8, 8)).astype(np.float32)
    with torch.no_grad():  # centre the last layer so that both classes are predicted
        h = gelu[:5](torch.from_numpy(x)[:, None])
        gelu[5].bias.copy_(-(h @ gelu[5].weight.T).mean(0))
    torch.jit.script(gelu).save(str(tmp_path / "g.pt"))
    np.save(tmp_path / "x.npy", x)
    args = ["explain", "--model", tmp_path / "g.pt", "--layer", "1", "--data",
            tmp_path / "x.npy", "--quiet", "--out", tmp_path / "o"]
    code, _, err = cli(capsys, *args)                     # smooth: tangent boundaries
    assert code == 0, err
    data = json.loads((tmp_path / "o/summary.json").read_text())
    assert data["meta"]["approximate"] is True and data["tangent"] is True
    region = data["classes"][0]["regions"][0]
    assert region["approximate"] is True
    assert data["fidelity"]["references"] == pytest.approx(region["purity"])
    page = (tmp_path / "o/report.html").read_text()
    assert "is smooth (not piecewise linear)" in page and "Measured fidelity" in page
    code, _, err = cli(capsys, *args, "--approximate")    # kept for old scripts
    assert code == 0, err


def test_internal_error_exit_1(capsys, monkeypatch, tiny_script, gray_folder):
    import repinterp.core.interpreter as mod
    monkeypatch.setattr(mod.RepresentativeInterpreter, "summarize",
                        lambda *a, **k: (_ for _ in ()).throw(KeyError("boom")))
    code, _, err = cli(capsys, "summarize", "--model", tiny_script, "--layer", "2",
                       "--data", gray_folder, "--quiet")
    last = err.splitlines()[-1]
    assert code == 1 and last.startswith("repinterp: internal error: KeyError")
    assert "--debug" in last and "Traceback" not in err


def test_failed_write_keeps_previous_file(tmp_path):
    target = tmp_path / "report.html"
    write_text(target, "good")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "good"
    assert os.listdir(tmp_path) == ["report.html"]


def test_layers_command(capsys):
    code, out, _ = cli(capsys, "layers", "--arch", "resnet18", "--num-classes", "3")
    assert code == 0
    lines = {ln[2:].split()[0]: ln for ln in out.splitlines()[1:-1]}
    assert "piecewise linear" in lines["layer3"] and lines["layer3"].startswith("  ")
    assert lines["layer4.0"].startswith("* ")                      # the suggestion
    assert "affine head" in lines["layer4"]
    assert "skip connection" in lines["layer3.0.conv1"]
    assert out.splitlines()[-1] == "suggested layer: layer4.0"
    assert "layer3.0.downsample.0" not in lines                  # depth 4: not listed
    assert out.splitlines()[-2].startswith("(6 deeper layers not listed")
    code, out, _ = cli(capsys, "layers", "--arch", "resnet18", "--depth", "1")
    names = [ln[2:].split()[0] for ln in out.splitlines()[1:-2]]
    assert names == ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3",
                     "layer4", "avgpool", "fc"]
    # the suggestion looks inside layer4 even when the rows stop above it
    assert out.splitlines()[-1] == "suggested layer: layer4.0"
    code, out, _ = cli(capsys, "layers", "--arch", "resnet18", "--depth", "0")
    assert "layer3.0.downsample.0" in out and "deeper" not in out
    code, _, err = cli(capsys, "layers", "--arch", "resnet18", "--depth", "-1")
    assert code == 2 and "--depth must be" in err


def test_store_options_and_weights_class_names(capsys, tmp_path):
    """--feature-dtype, --store-dir and class names from torchvision weights' metadata
    (nothing downloaded) on a 3-class resnet18 at 64x64."""
    rng = np.random.default_rng(0)
    for i in range(24):
        png(tmp_path / "imgs" / ("tench", "goldfish", "great white shark")[i % 3] / f"{i}.png",
            rng.integers(0, 256, (64, 64, 3), np.uint8))
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3).eval()
    diversify(model, load_images(tmp_path / "imgs", channels=3).images)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    (tmp_path / "store").mkdir()
    base = ["summarize", "--arch", "resnet18", "--num-classes", "3", "--weights",
            tmp_path / "w.pt", "--layer", "layer3", "--data", tmp_path / "imgs", "--quiet",
            "--num-boundaries", "5"]
    code, _, err = cli(capsys, *base, "--out", tmp_path / "a")
    assert code == 0, err
    # ImageNet's 1000 names for a 3-class model: refused (issue 20), before any fit
    code, _, err = cli(capsys, *base, "--out", tmp_path / "b", "--class-names",
                       "ResNet18_Weights.IMAGENET1K_V1")
    assert code == 2 and "has 1000 class names for a model with 3 classes" in err
    (tmp_path / "three.txt").write_text("tench\ngoldfish\ngreat white shark\n")
    code, _, err = cli(capsys, *base, "--out", tmp_path / "b", "--store-dir",
                       tmp_path / "store", "--class-names", tmp_path / "three.txt")
    assert code == 0, err
    assert list((tmp_path / "store").iterdir()) == []
    a = json.loads((tmp_path / "a/summary.json").read_text())
    b = json.loads((tmp_path / "b/summary.json").read_text())
    assert [r["top_members"] for c in a["classes"] for r in c["regions"]] == \
        [r["top_members"] for c in b["classes"] for r in c["regions"]]
    html = (tmp_path / "b/report.html").read_text()
    assert "tench" in html or "goldfish" in html or "great white shark" in html
    code, _, err = cli(capsys, *base, "--out", tmp_path / "c", "--feature-dtype", "bfloat16")
    assert code == 0, err
    code, _, err = cli(capsys, *base, "--out", tmp_path / "d", "--class-names",
                       "ResNet18_Weights.NOPE")
    assert code == 2 and "not a torchvision weights name" in err
    with pytest.raises(SystemExit):
        main([str(a) for a in base] + ["--feature-dtype", "int8"])


def test_not_fitted_is_exit_2(capsys, monkeypatch, tiny_script, gray_folder):
    import repinterp.core.interpreter as mod
    monkeypatch.setattr(mod.RepresentativeInterpreter, "fit", lambda self, refs: self)
    code, _, err = cli(capsys, "summarize", "--model", tiny_script, "--layer", "2",
                       "--data", gray_folder, "--quiet")
    assert code == 2 and err.splitlines()[-1].startswith("repinterp: error: this "
                                                         "RepresentativeInterpreter is not fitted")


def test_summarize_separate_logics_and_labels_on_the_command_line(capsys, gray_folder,
                                                                   tiny_script, tmp_path):
    out = tmp_path / "sep"
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label\n" + "".join(f"class{i % 3}/img{i:03d}.png,{(i + 1) % 3}\n"
                                            for i in range(90)))
    code, stdout, err = cli(capsys, "summarize", "--model", tiny_script, "--layer", "2",
                            "--data", gray_folder, "--out", out, "--quiet",
                            "--num-boundaries", "10", "--separate-logics",
                            "--max-logics", "3", "--labels", csv)
    assert code == 0, err
    data = json.loads((out / "summary.json").read_text())
    regions = [r for c in data["classes"] for r in c["regions"]]
    assert all(r["logic"] is not None for r in regions)
    assert data["meta"]["seed"] == 0 and data["meta"]["separate_logics"] is True
    import pyarrow.parquet as pq
    table = pq.read_table(out / "members.parquet").to_pydict()
    # labels from the CSV (the XSS file has none: -1), not from the folders
    want = {f"class{i % 3}/img{i:03d}.png": (i + 1) % 3 for i in range(90)}
    assert all(lab == want.get(name, -1) for name, lab in zip(table["image"],
                                                              table["label"], strict=True))
    assert set(table["logic"]) <= {0, 1, 2}
    code, _, err = cli(capsys, "summarize", "--model", tiny_script, "--layer", "2",
                       "--data", gray_folder, "--separate-logics", "--max-logics", "0")
    assert code == 2 and err == "repinterp: error: --max-logics must be at least 1, got 0"
    code, _, err = cli(capsys, "summarize", "--index", tmp_path, "--separate-logics")
    assert code == 2 and "--separate-logics needs the references' features" in err
    code, _, err = cli(capsys, "summarize", "--model", tiny_script, "--layer", "2",
                       "--data", gray_folder, "--labels", tmp_path / "none.csv")
    assert code == 2 and "labels file" in err and "does not exist" in err


def test_summarize_job_is_the_command_in_python(gray_folder, tiny_script, tmp_path):
    """app.pipeline.summarize_job does what `repinterp summarize` does: the same files,
    written as one unit, and the same summary."""
    from repinterp.app.pipeline import ModelSource, SummarizeJob, summarize_job
    job = SummarizeJob(ModelSource(model_file=str(tiny_script)), data=str(gray_folder),
                       out=tmp_path / "py", layer="2", strict=False,
                       interpreter={"num_boundaries": 10, "progress": False})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary, report = summarize_job(job)
    assert report == tmp_path / "py" / "report.html" and report.is_file()
    assert sorted(os.listdir(tmp_path / "py")) == [
        ".repinterp-output", "members.csv", "members.parquet", "regions", "report.html",
        "summary.json", "summary.pt"]
    code = main(["summarize", "--model", str(tiny_script), "--layer", "2", "--data",
                 str(gray_folder), "--out", str(tmp_path / "cli"), "--quiet",
                 "--num-boundaries", "10"])
    assert code == 0
    a = json.loads((tmp_path / "py" / "summary.json").read_text())
    b = json.loads((tmp_path / "cli" / "summary.json").read_text())
    assert a["classes"] == b["classes"] and len(summary.regions) == sum(
        len(c["regions"]) for c in a["classes"])
