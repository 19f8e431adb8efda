"""One decoder for every image format, with one pixel rule (uint8 / 255, uint16 / 65535,
bool 0/1, floats within [0, 1], anything else only with a stated range), shared by
``load_images`` and the streaming ``ImageSource``; and the inputs beside the images
(labels, class names, class folders) that must follow them."""
from __future__ import annotations

import ast
import os
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import write_idx_labels
from PIL import Image

from repinterp.app import loading
from repinterp.app.labels import check_folder_classes, load_class_names, load_labels
from repinterp.app.loading import ImageSource, load_images
from repinterp.core.errors import UserError

# the files allowed to open images and numpy files (relative to the repository root)
DECODER = ("src/repinterp/app/loading.py", "src/repinterp/app/formats.py")
REPO = Path(__file__).resolve().parents[1]


def picture(seed: int = 0, shape: tuple[int, ...] = (6, 7)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, np.uint8)


def as_input(v: np.ndarray) -> torch.Tensor:
    """What every format of the 8-bit picture ``v`` must decode to: ``v / 255``."""
    arr = v.astype(np.float32) / np.float32(255)
    return torch.from_numpy(arr[None, None] if arr.ndim == 2 else arr.transpose(2, 0, 1)[None])


def both(path: Path, **options) -> tuple[torch.Tensor, list[str], torch.Tensor, list[str]]:
    """The images and names of ``path`` through ``load_images`` and ``ImageSource``."""
    got = load_images(path, normalize="none", **options)
    source = ImageSource(str(path), normalize="none", **options)
    images, _, names = source.read(0, len(source))
    return got.images, got.names, images, names


def save_formats(folder: Path, v: np.ndarray) -> list[Path]:
    """The gray picture ``v`` as PNG, 16-bit PNG, uint8 TIFF, float TIFF in [0, 1], uint8
    .npy and float .npy in [0, 1]."""
    folder.mkdir(parents=True, exist_ok=True)
    unit = v.astype(np.float32) / np.float32(255)
    Image.fromarray(v).save(folder / "a.png")
    Image.fromarray(v.astype(np.uint16) * 257).save(folder / "b16.png")
    Image.fromarray(v).save(folder / "c.tif")
    Image.fromarray(unit).save(folder / "d-float.tif")
    np.save(folder / "e.npy", v)
    np.save(folder / "f-float.npy", unit)
    assert Image.open(folder / "b16.png").mode == "I;16"
    assert Image.open(folder / "d-float.tif").mode == "F"
    return sorted(folder.iterdir())


# --- one rule, one decoder ----------------------------------------------------------------
def test_one_picture_in_every_format_is_one_tensor(tmp_path):
    v = picture(0)
    want = as_input(v)
    files = save_formats(tmp_path / "formats", v)
    for f in files:
        a, a_names, s, s_names = both(f)
        assert torch.equal(a, want), f.name
        assert torch.equal(s, want), f.name
        assert a_names == s_names == [f.name]
    # the same files as the items of one folder: the same tensors and names both ways
    a, a_names, s, s_names = both(tmp_path / "formats")
    assert torch.equal(a, want.expand(len(files), -1, -1, -1))
    assert torch.equal(s, a) and a_names == s_names == [f.name for f in files]


def test_rgb_formats_and_channels_agree(tmp_path):
    v = picture(1, (5, 6, 3))
    Image.fromarray(v).save(tmp_path / "a.png")
    Image.fromarray(v).save(tmp_path / "b.tif")
    np.save(tmp_path / "c-hwc.npy", v)
    np.save(tmp_path / "d-chw.npy", (v.astype(np.float32) / np.float32(255)).transpose(2, 0, 1))
    want = as_input(v)
    a, _, s, _ = both(tmp_path)
    assert torch.equal(a, want.expand(4, -1, -1, -1)) and torch.equal(s, a)
    gray, _, streamed, _ = both(tmp_path, channels=1, size=(4, 4))
    assert gray.shape == (4, 1, 4, 4) and torch.equal(streamed, gray)
    assert torch.equal(gray, gray[:1].expand(4, -1, -1, -1))


def test_bool_and_16_bit_values_follow_their_type(tmp_path):
    bits = picture(2) > 127
    Image.fromarray(bits).save(tmp_path / "bits.png")
    assert Image.open(tmp_path / "bits.png").mode == "1"
    got = load_images(tmp_path / "bits.png", normalize="none").images
    assert torch.equal(got, torch.from_numpy(bits.astype(np.float32))[None, None])
    deep = np.array([[0, 1, 255, 65535]], np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.tif")
    got = load_images(tmp_path / "deep.tif", normalize="none").images
    assert torch.equal(got[0, 0], torch.from_numpy(deep.astype(np.float32) / np.float32(65535)))


@pytest.mark.parametrize("name,write", [
    ("float-255.tif", lambda p, v: Image.fromarray(v.astype(np.float32)).save(p)),
    ("float-255.npy", lambda p, v: np.save(p, v.astype(np.float32))),
    ("int16-255.npy", lambda p, v: np.save(p, v.astype(np.int16))),
    ("int32-255.tif", lambda p, v: Image.fromarray(v.astype(np.int32)).save(p)),
    ("int64-255.npy", lambda p, v: np.save(p, v.astype(np.int64))),
])
def test_values_the_rule_cannot_scale_need_a_stated_range(tmp_path, name, write):
    """0-255 values in a float or a wide integer type: refused, naming the file and the
    parameter that settles it; with the range stated, the PNG's tensor exactly."""
    v = picture(3)
    v[0, 0] = 255
    path = tmp_path / "data" / name
    path.parent.mkdir()
    write(path, v)
    for load in (lambda p, **o: load_images(p, **o), lambda p, **o: ImageSource(str(p), **o)
                 .read(0, 1)):
        with pytest.raises(UserError, match=rf"{name}.*pixel_range=\(LO, HI\) \(here 0,255\)"):
            load(path)
        with pytest.raises(UserError, match=rf"{name}.*pixel_range"):
            load(path.parent)                 # in a folder too: an error, never a skip
    a, _, s, _ = both(path, pixel_range=(0, 255))
    assert torch.equal(a, as_input(v)) and torch.equal(s, a)
    a, _, s, _ = both(path.parent, pixel_range=(0, 255))
    assert torch.equal(a, as_input(v)) and torch.equal(s, a)


def test_a_stated_range_is_checked_and_raw_takes_values_as_they_are(tmp_path):
    x = np.random.default_rng(4).normal(size=(3, 5, 5)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(UserError, match=r"x.npy .*not in \[0, 1\].*'raw'"):
        load_images(tmp_path / "x.npy")
    a, names, s, s_names = both(tmp_path / "x.npy", pixel_range="raw")
    assert torch.equal(a, torch.from_numpy(x)[:, None]) and torch.equal(s, a)
    assert names == s_names == ["x.npy[0]", "x.npy[1]", "x.npy[2]"]
    Image.fromarray(picture(5)).save(tmp_path / "p.png")
    with pytest.raises(UserError, match=r"p.png has pixel values in \[\d+, 2\d\d\], outside "
                                        r"the stated pixel range \(0, 1\)"):
        load_images(tmp_path / "p.png", pixel_range=(0, 1))
    v = np.array([[0, 2048, 4095]], np.uint16)               # 12-bit data in 16 bits
    Image.fromarray(v).save(tmp_path / "twelve.png")
    got = load_images(tmp_path / "twelve.png", normalize="none", pixel_range=(0, 4095))
    assert torch.equal(got.images[0, 0], torch.from_numpy(v.astype(np.float32) / 4095))
    assert loading.parse_pixel_range("0,255") == (0.0, 255.0)
    assert loading.parse_pixel_range("raw") == "raw"
    assert loading.parse_pixel_range(None) is None
    for bad in ("255", "5,1", "a,b"):
        with pytest.raises(UserError, match="pixel range|LO < HI"):
            loading.parse_pixel_range(bad)
    with pytest.raises(UserError, match="LO < HI"):
        load_images(tmp_path / "p.png", pixel_range=(1, 1))


def test_array_names_and_a_manifest_round_trip(tmp_path):
    """One naming rule: several rows ``NAME[i]``, a file of one image by its name; the
    options as an index's JSON manifest holds them (lists) give the same source."""
    np.save(tmp_path / "many.npy", picture(6, (3, 5, 5)))
    np.save(tmp_path / "one.npy", picture(6, (1, 5, 5)))
    assert both(tmp_path / "many.npy")[1] == ["many.npy[0]", "many.npy[1]", "many.npy[2]"]
    _, a, _, s = both(tmp_path / "one.npy")
    assert a == s == ["one.npy"]
    src = ImageSource(str(tmp_path / "many.npy"), size=[2, 2], pixel_range=[0, 255])
    assert src.size == (2, 2) and src.pixel_range == (0.0, 255.0)
    assert src.read(1, 3)[0].shape == (2, 1, 2, 2)


# --- inputs beside the images ---------------------------------------------------------------
def test_idx_labels_follow_their_items_past_a_skipped_file(tmp_path):
    data = tmp_path / "data"
    for i in range(6):
        (data / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
    files = [data / f"c{i % 2}" / f"img{i}.png" for i in range(6)]
    for i, f in enumerate(files):
        Image.fromarray(picture(i)).save(f)
    order = sorted(files, key=lambda f: (f.parent.name, f.name))
    order[1].write_bytes(b"not an image")                     # the second file of c0
    labels = tmp_path / "labels-idx1-ubyte"
    write_idx_labels(labels, [10 + k for k in range(6)])      # one per file, sorted
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        refs = load_images(data)
    got = load_labels(data, refs.names, str(labels))
    assert got.tolist() == [10, 12, 13, 14, 15]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        drawn = load_images(data, limit=3, seed=1)
    want = [10 + [str(f.relative_to(data)) for f in order].index(n) for n in drawn.names]
    assert load_labels(data, drawn.names, str(labels)).tolist() == want
    write_idx_labels(labels, [0, 1, 2, 3, 4])                 # one file short
    with pytest.raises(UserError, match="5 labels for the 6 files"):
        load_labels(data, refs.names, str(labels))


def test_a_linked_class_folder_is_followed_once_with_a_warning(tmp_path):
    data, outside = tmp_path / "data", tmp_path / "elsewhere" / "dogs"
    (data / "cat").mkdir(parents=True)
    outside.mkdir(parents=True)
    for i, folder in enumerate([data / "cat", data / "cat", outside, outside]):
        Image.fromarray(picture(i)).save(folder / f"img{i}.png")
    (data / "dog").symlink_to(outside, target_is_directory=True)
    (data / "cat" / "loop").symlink_to(data, target_is_directory=True)   # back to the top
    with pytest.warns(UserWarning, match="followed 2 symbolic link") as caught:
        refs = load_images(data)
    assert sum("symbolic link" in str(w.message) for w in caught) == 1
    assert refs.names == ["cat/img0.png", "cat/img1.png", "dog/img2.png", "dog/img3.png"]
    assert load_labels(data, refs.names).tolist() == [0, 0, 1, 1]
    with pytest.warns(UserWarning, match="symbolic link"):
        source = ImageSource(str(data), normalize="none")
    assert source.read(0, len(source))[2] == refs.names


def test_a_fifo_in_the_data_is_skipped_not_waited_on(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    Image.fromarray(picture(0)).save(data / "a.png")
    os.mkfifo(data / "b.pipe")
    result: dict = {}

    def run():
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                result["set"] = load_images(data)
            result["warnings"] = [str(w.message) for w in caught]
        except Exception as exc:  # noqa: BLE001 - reported below
            result["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=20)
    if worker.is_alive():                    # unblock the reader, then fail
        fd = os.open(data / "b.pipe", os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        worker.join(timeout=20)
        pytest.fail("reading a folder with a FIFO blocked")
    assert "error" not in result, result.get("error")
    assert result["set"].names == ["a.png"] and result["set"].skipped == ["b.pipe"]
    assert any("skipped 1 unreadable" in w for w in result["warnings"])
    with pytest.raises(UserError, match="b.pipe is not a readable image .*regular file"):
        load_images(data, strict=True)


def test_duplicate_class_names_are_refused_with_their_lines(tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("cat\ndog\n\nbird\ndog\n")
    with pytest.raises(UserError, match=r"names.txt line 5: class name 'dog' is also on "
                                        r"line 2"):
        load_class_names(str(names))
    names.write_text("cat\ndog\n\nbird\n")
    assert load_class_names(str(names)) == ["cat", "dog", "bird"]


def test_csv_labels_outside_the_models_classes_are_refused(tmp_path):
    names = ["a.png", "b.png", "c.png"]
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label\na.png,0\nb.png,57\nc.png,2\n")
    with pytest.raises(UserError, match=r"labels.csv line 3: label 57 is not a class of "
                                        r"the model \(0..2\)"):
        load_labels(tmp_path, names, str(csv), classes=3)
    with pytest.raises(UserError, match="line 3: label 57"):
        load_labels(tmp_path, names, str(csv), class_names=["x", "y", "z"])
    csv.write_text("a.png,0\nb.png,-3\n")
    with pytest.raises(UserError, match="line 2: label -3 is not a class"):
        load_labels(tmp_path, names, str(csv))
    csv.write_text("a.png,0\nb.png,y\nc.png,2\n")
    got = load_labels(tmp_path, names, str(csv), class_names=["x", "y", "z"], classes=3)
    assert got.tolist() == [0, 1, 2]
    idx = tmp_path / "labels-idx1-ubyte"
    write_idx_labels(idx, [0, 9, 1])
    with pytest.raises(UserError, match=r"item 1 \(x.npy\[1\]\): label 9"):
        load_labels(tmp_path, ["x.npy[0]", "x.npy[1]"], str(idx), classes=3)


def test_an_npz_with_several_arrays_needs_the_name_of_one(tmp_path):
    a, b = picture(1, (2, 5, 5)), picture(2, (3, 5, 5))
    np.savez(tmp_path / "two.npz", a=a, b=b)
    for load in (lambda **o: load_images(tmp_path / "two.npz", **o),
                 lambda **o: ImageSource(str(tmp_path / "two.npz"), **o)):
        with pytest.raises(UserError, match=r"two.npz holds 2 arrays \('a', 'b'\).*array="):
            load()
        with pytest.raises(UserError, match="no array 'c'; it holds 'a', 'b'"):
            load(array="c")
    got, _, streamed, _ = both(tmp_path / "two.npz", array="b")
    assert torch.equal(got, torch.from_numpy(b.astype(np.float32) / np.float32(255))[:, None])
    assert torch.equal(streamed, got)
    np.savez(tmp_path / "labelled.npz", labels=np.arange(3), images=b)
    assert torch.equal(load_images(tmp_path / "labelled.npz", normalize="none").images, got)


def test_a_limit_is_drawn_at_random_stratified_over_the_class_folders(tmp_path):
    data = tmp_path / "data"
    sizes = {"a": 10, "b": 10, "c": 10}
    for cls, n in sizes.items():
        (data / cls).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(picture(i)).save(data / cls / f"{i:02d}.png")
    drawn = load_images(data, limit=6)
    assert [n.split("/")[0] for n in drawn.names] == ["a", "a", "b", "b", "c", "c"]
    assert drawn.names == sorted(drawn.names)
    assert load_images(data, limit=6).names == drawn.names               # seeded
    assert load_images(data, limit=6, seed=1).names != drawn.names
    for i in range(10):                                                  # 20, 10, 10
        Image.fromarray(picture(i)).save(data / "a" / f"x{i:02d}.png")
    for limit in (1, 3, 8, 13, 39):
        names = load_images(data, limit=limit, seed=limit).names
        counts = [sum(n.startswith(c + "/") for n in names) for c in "abc"]
        assert len(names) == limit and names == sorted(names)
        for count, n in zip(counts, (20, 10, 10), strict=True):
            assert abs(count - limit * n / 40) < 1 + 1e-9, (limit, counts)
    assert len(load_images(data, limit=100).names) == 40


def test_the_class_folders_must_be_the_models_classes(tmp_path):
    for name in ("bird", "cat", "dog"):
        (tmp_path / "animals" / name).mkdir(parents=True)
    check_folder_classes(tmp_path / "animals", 3)
    check_folder_classes(tmp_path / "animals", 3, ["cat", "dog", "bird"])
    with pytest.raises(UserError, match=r"has 3 class folders \('bird', 'cat', 'dog'\) for "
                                        r"a model with 2 classes"):
        check_folder_classes(tmp_path / "animals", 2)
    with pytest.raises(UserError, match=r"extra folder\(s\) 'bird'; no folder for 'fox'"):
        check_folder_classes(tmp_path / "animals", 3, ["cat", "dog", "fox"])
    for name in ("0", "1", "2", "57"):
        (tmp_path / "digits" / name).mkdir(parents=True)
    with pytest.raises(UserError, match=r"do not match the model's 3 classes: extra "
                                        r"folder\(s\) '57'$"):
        check_folder_classes(tmp_path / "digits", 3)
    with pytest.raises(UserError, match=r"no folder for '3', '4'"):
        check_folder_classes(tmp_path / "digits", 5, ["a", "b", "c", "d", "e"])
    (tmp_path / "flat").mkdir()
    Image.fromarray(picture(0)).save(tmp_path / "flat" / "a.png")
    check_folder_classes(tmp_path / "flat", 3)
    check_folder_classes(tmp_path / "flat" / "a.png", 3)


# --- structure: nothing else opens images or arrays -----------------------------------------
_DECODING_CALLS = {"Image.open", "PIL.Image.open", "np.load", "numpy.load"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def decoding_outside(root: Path, allowed: tuple[str, ...] = DECODER) -> list[str]:
    """``path:line: call`` for every ``Image.open`` / ``np.load`` (also imported by name)
    in ``root/src/repinterp`` outside the files ``allowed`` (relative to ``root``)."""
    found = []
    for py in sorted((root / "src" / "repinterp").rglob("*.py")):
        rel = py.relative_to(root).as_posix()
        if rel in allowed:
            continue
        for node in ast.walk(ast.parse(py.read_text(encoding="utf-8"), filename=rel)):
            if isinstance(node, ast.Call) and _dotted(node.func) in _DECODING_CALLS:
                found.append(f"{rel}:{node.lineno}: {_dotted(node.func)}")
            elif isinstance(node, ast.ImportFrom) and node.module in ("PIL.Image", "numpy"):
                found += [f"{rel}:{node.lineno}: from {node.module} import {a.name}"
                          for a in node.names if a.name in ("open", "load")]
    return sorted(found)


def test_only_the_decoder_opens_images_and_numpy_files():
    assert all((REPO / d).is_file() for d in DECODER)
    assert decoding_outside(REPO) == []


def test_the_structural_scan_finds_a_decoder_elsewhere(tmp_path):
    (tmp_path / Path(DECODER[0]).parent).mkdir(parents=True)
    (tmp_path / DECODER[0]).write_text("from PIL import Image\nImage.open('a.png')\n")
    core = tmp_path / "src" / "repinterp" / "core"
    core.mkdir()
    (core / "sneaky.py").write_text(
        "import numpy\nimport PIL.Image\nfrom numpy import load\n\n"
        "def read(p):\n    return numpy.load(p), PIL.Image.open(p)\n")
    assert decoding_outside(tmp_path) == [
        "src/repinterp/core/sneaky.py:3: from numpy import load",
        "src/repinterp/core/sneaky.py:6: PIL.Image.open",
        "src/repinterp/core/sneaky.py:6: numpy.load",
    ]
