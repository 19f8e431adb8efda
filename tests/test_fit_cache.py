"""The fit cache: a restored fit gives the very results of the fit that saved it, any
change (a file's bytes, a setting, a corrupt cache file) is a miss and never a wrong
answer, ``--no-cache`` writes nothing, the folder stays bounded and only repinterp's
files are evicted, and a hit runs the feature extractor on the check's few images and
the query alone. Every cache here lives under ``tmp_path`` (``--cache``, or
``REPINTERP_CACHE`` for the default folder)."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from nets import tiny_cnn, tiny_images
from PIL import Image
from torch import nn

from repinterp import RepresentativeInterpreter, load_summary
from repinterp.app import fit_cache
from repinterp.app.explain import ExplainJob, explain_job
from repinterp.app.pipeline import ModelSource
from repinterp.cli import main
from repinterp.core.region import Region

CHECK = 4                     # the references a restore computes again (core/_state.py)
BASE = ("--layer", "2", "--quiet", "--num-boundaries", "8", "--normalize", "none")


@pytest.fixture(autouse=True)
def own_user_cache(tmp_path, monkeypatch):
    """The default cache folder of every run here is under ``tmp_path``."""
    monkeypatch.delenv("REPINTERP_FIT_CACHE", raising=False)
    monkeypatch.setenv("REPINTERP_CACHE", str(tmp_path / "user-cache"))


def same_region(a: Region, b: Region) -> None:
    for f in dataclasses.fields(Region):
        va, vb = getattr(a, f.name), getattr(b, f.name)
        if isinstance(va, torch.Tensor):
            assert isinstance(vb, torch.Tensor) and va.dtype == vb.dtype, f.name
            assert torch.equal(va, vb), f.name
        else:
            assert type(va) is type(vb) and va == vb, (f.name, va, vb)


def image_folder(root: Path, n: int = 60) -> Path:
    """``n`` 8x8 gray PNGs in 3 class folders, stored uncompressed: a changed pixel
    leaves a file's size as it was."""
    x = tiny_images(0, n).float()
    pix = (x * 40 + 128).clamp(0, 255).round().to(torch.uint8).numpy()
    for i in range(n):
        path = root / f"c{i % 3}" / f"img{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pix[i, 0]).save(path, compress_level=0)
    return root


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    """The float64 tiny CNN as a pickled model (``--trust-pickle``): a Python module,
    so that forward hooks see every pass."""
    path = tmp_path_factory.mktemp("model") / "m.pt"
    torch.save(tiny_cnn(0), path)
    return path


@pytest.fixture
def data(tmp_path) -> Path:
    """The references, and beside them ``query.png``, an image that is none of them."""
    pix = (tiny_images(7, 1)[0, 0] * 40 + 128).clamp(0, 255).round().to(torch.uint8)
    Image.fromarray(pix.numpy()).save(tmp_path / "query.png")
    return image_folder(tmp_path / "data")


@contextmanager
def conv_images():
    """Count the images every ``Conv2d`` forward takes, in this process (a global
    forward hook: private copies of the model count too): ``[all, in passes of one]``."""
    seen = [0, 0]

    def hook(module, inputs, output):
        if isinstance(module, nn.Conv2d):
            seen[0] += len(inputs[0])
            seen[1] += len(inputs[0]) == 1

    handle = nn.modules.module.register_module_forward_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


def explain(capsys, model_file, data, out, *extra, image=True) -> tuple[int, str]:
    query = ("--image", data.parent / "query.png") if image else ("--seed-index", "5")
    code = main([str(a) for a in ("explain", "--model", model_file, "--trust-pickle",
                                  "--data", data, *query, "--out", out, *BASE, *extra)])
    err = capsys.readouterr().err
    assert code == 0, err
    return code, err


def fits(folder: Path) -> list[Path]:
    return sorted(folder.glob(fit_cache.PATTERN))


def job(model_file, data, out, cache, seed_index: int | None = None) -> ExplainJob:
    query = None if seed_index is not None else str(data.parent / "query.png")
    return ExplainJob(model=ModelSource(model_file=str(model_file), trust_pickle=True),
                      data=str(data), layer="2", normalize="none", out=str(out),
                      query=query, seed_index=seed_index or 0, cache=cache,
                      interpreter=dict(num_boundaries=8, progress=False))


# --- the core: a state restored ------------------------------------------------------------
@pytest.mark.parametrize("sampling", ["bisection", "shared"])
def test_a_restored_fit_gives_the_same_regions(net, images, sampling):
    refs, query = images[:120], images[150]
    kw = dict(num_boundaries=8, progress=False, sampling=sampling)
    fitted = RepresentativeInterpreter(net, "2", **kw).fit(refs)
    state = fitted.fit_state_()
    assert set(state) == {"format", "layer", "input_shape", "feature_shape", "features",
                          "projected", "logits"}
    restored = RepresentativeInterpreter(net, "2", **kw).fit(refs, state=state)
    assert restored.restored_ and not fitted.restored_
    for seed in (query, 3, refs[7]):
        same_region(fitted.explain(seed), restored.explain(seed))
    assert torch.equal(fitted.predictions_, restored.predictions_)
    assert torch.equal(fitted.margins_, restored.margins_)
    assert restored.feature_shape_ == fitted.feature_shape_
    assert restored.input_size_ == fitted.input_size_


def test_a_restore_reads_only_the_first_batch(net, images):
    class Counted(torch.utils.data.Dataset):
        def __init__(self):
            self.read: set[int] = set()

        def __len__(self):
            return 120

        def __getitem__(self, i):
            self.read.add(int(i))
            return images[i]

    state = RepresentativeInterpreter(net, "2", num_boundaries=8,
                                      progress=False).fit(images[:120]).fit_state_()
    refs = Counted()
    it = RepresentativeInterpreter(net, "2", num_boundaries=8, progress=False)
    it.fit(refs, state=state)
    assert it.restored_ and refs.read == set(range(CHECK))


def bad_states(state: dict) -> dict[str, object]:
    """States a restore must refuse (each a miss), by what is wrong with them."""
    moved = {**state, "features": state["features"].clone()}
    moved["features"][1] += 1e-3 * float(moved["features"].abs().max())
    return {"a checked row differs": moved,
            "logits differ": {**state, "logits": state["logits"] + 1},
            "another layer": {**state, "layer": "0"},
            "another format": {**state, "format": 99},
            "another number of references": {**state, "features": state["features"][:-1]},
            "another dtype": {**state, "features": state["features"].float()},
            "another shape": {**state, "feature_shape": [64]},
            "no projections": {**state, "projected": None},
            "not a state": {"format": 1}, "not even a dict": [1, 2]}


def test_a_state_that_does_not_match_is_a_miss_and_fits_anew(net, images):
    refs = images[:120]
    plain = RepresentativeInterpreter(net, "2", num_boundaries=8, progress=False).fit(refs)
    for why, state in bad_states(plain.fit_state_()).items():
        it = RepresentativeInterpreter(net, "2", num_boundaries=8, progress=False)
        it.fit(refs, state=state)
        assert not it.restored_, why
        same_region(plain.explain(images[150]), it.explain(images[150]))


# --- the application: explain through the cache ---------------------------------------------
def test_explain_with_the_cache_equals_explain_without(tmp_path, model_file, data):
    cache = tmp_path / "cache"
    plain = explain_job(job(model_file, data, tmp_path / "o0", None))
    cold = explain_job(job(model_file, data, tmp_path / "o1", str(cache)))
    assert len(fits(cache)) == 1
    warm = explain_job(job(model_file, data, tmp_path / "o2", str(cache)))
    for got in (cold, warm):
        assert got.region is not None and plain.region is not None
        same_region(plain.region, got.region)
        assert got.message.replace(str(got.report.parent), "") == \
            plain.message.replace(str(plain.report.parent), "")
    for name in ("summary.json", "members.csv"):
        assert (tmp_path / "o0" / name).read_bytes() == (tmp_path / "o2" / name).read_bytes()
    seeded = [explain_job(job(model_file, data, tmp_path / f"s{k}", c, seed_index=7))
              for k, c in enumerate((None, str(cache), str(cache)))]
    for got in seeded[1:]:
        same_region(seeded[0].region, got.region)


@pytest.mark.parametrize("image", [True, False], ids=["image", "seed-index"])
def test_a_hit_runs_the_extractor_on_the_check_and_the_query_alone(
        capsys, tmp_path, model_file, data, image):
    cache = ("--cache", tmp_path / "cache")
    with conv_images() as cold:
        explain(capsys, model_file, data, tmp_path / "o1", *cache, image=image)
    with conv_images() as warm:
        explain(capsys, model_file, data, tmp_path / "o2", *cache, image=image)
    # a restore: the split checked on the first batch (the model, then its two halves)
    # and that batch's features computed again; everything else is the query alone:
    # explained, its heat maps drawn by the report (an image twice, a seed index once)
    # and its edit that leaves the region
    assert warm[0] - warm[1] == 3 * CHECK
    assert warm[1] >= (3 if image else 1)
    assert cold[0] >= 60 + warm[0]


def test_a_changed_byte_is_a_miss_even_with_the_same_size_and_time(
        capsys, tmp_path, model_file, data):
    cache = tmp_path / "cache"
    explain(capsys, model_file, data, tmp_path / "o1", "--cache", cache)
    path = data / "c1" / "img004.png"          # past the first batch: only its bytes tell
    st = path.stat()
    arr = np.array(Image.open(path))
    arr[3, 3] = 255 - arr[3, 3]
    Image.fromarray(arr).save(path, compress_level=0)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    with conv_images() as seen:
        explain(capsys, model_file, data, tmp_path / "o2", "--cache", cache)
    assert seen[0] > 60 and len(fits(cache)) == 2            # fitted again, saved apart
    explain(capsys, model_file, data, tmp_path / "o3", "--no-cache")
    for name in ("summary.json", "members.csv"):
        assert (tmp_path / "o2" / name).read_bytes() == (tmp_path / "o3" / name).read_bytes()


@pytest.mark.parametrize("change", [("--references", "40"), ("--feature-dtype", "float32"),
                                    ("--normalize", "0.1,0.9"), ("--layer", "1")],
                         ids=lambda c: c[0])
def test_a_changed_setting_is_a_miss(capsys, tmp_path, model_file, data, change):
    cache = ("--cache", tmp_path / "cache")
    explain(capsys, model_file, data, tmp_path / "o1", *cache)
    with conv_images() as seen:
        explain(capsys, model_file, data, tmp_path / "o2", *cache, *change)
    assert seen[0] > 40 and len(fits(tmp_path / "cache")) == 2


def test_the_seed_of_a_draw_is_part_of_the_key_only_with_a_draw(
        capsys, tmp_path, model_file, data):
    cache = ("--cache", tmp_path / "cache")
    explain(capsys, model_file, data, tmp_path / "o1", *cache, "--references", "30")
    explain(capsys, model_file, data, tmp_path / "o2", *cache, "--references", "30",
            "--seed", "1")
    assert len(fits(tmp_path / "cache")) == 2
    explain(capsys, model_file, data, tmp_path / "o3", *cache)
    explain(capsys, model_file, data, tmp_path / "o4", *cache, "--seed", "1")
    assert len(fits(tmp_path / "cache")) == 3


def test_a_corrupt_or_foreign_cache_file_is_a_miss(capsys, tmp_path, model_file, data):
    cache = tmp_path / "cache"
    explain(capsys, model_file, data, tmp_path / "o0", "--no-cache")
    want = (tmp_path / "o0" / "summary.json").read_bytes()
    explain(capsys, model_file, data, tmp_path / "o1", "--cache", cache)
    (path,) = fits(cache)
    good = path.read_bytes()
    other = bytearray(good)
    other[len(other) // 2] ^= 0x10                          # one bit of the payload
    head = len(fit_cache.MAGIC) + 65
    payload = torch.load(io.BytesIO(good[head:]), weights_only=True)

    def signed(body: bytes) -> bytes:              # a well-formed file holding ``body``
        return fit_cache.MAGIC + hashlib.sha256(body).hexdigest().encode() + b"\n" + body

    def saved(obj) -> bytes:
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        return signed(buffer.getvalue())

    blobs = [bytes(other), good[:len(good) // 3], b"", signed(b"not a fit"),
             saved({**payload, "key": "0" * 64}), saved({**payload, "format": 99}),
             saved({**payload, "names": payload["names"][:-1]}), saved([1, 2])]
    for k, blob in enumerate(blobs):
        path.write_bytes(blob)
        with conv_images() as seen:
            explain(capsys, model_file, data, tmp_path / f"o{k + 2}", "--cache", cache)
        assert seen[0] > 60, k                                   # fitted again
        assert (tmp_path / f"o{k + 2}" / "summary.json").read_bytes() == want, k
        assert path.read_bytes() != blob and len(fits(cache)) == 1, k   # saved anew


def test_no_cache_writes_nothing_and_the_default_folder_is_the_users(
        capsys, tmp_path, model_file, data, monkeypatch):
    user = tmp_path / "user-cache"                          # REPINTERP_CACHE (fixture)
    explain(capsys, model_file, data, tmp_path / "o1", "--no-cache")
    assert not user.exists()
    explain(capsys, model_file, data, tmp_path / "o2")
    assert len(fits(user / "fits")) == 1
    assert fit_cache.default_folder() == user / "fits"
    monkeypatch.setenv("REPINTERP_FIT_CACHE", str(tmp_path / "fits-alone"))
    explain(capsys, model_file, data, tmp_path / "o3")
    assert len(fits(tmp_path / "fits-alone")) == 1


def test_the_folder_stays_bounded_and_only_repinterps_files_go(
        capsys, tmp_path, model_file, data, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    mine = {"notes.txt": b"mine", "fit-mine.pt": b"also mine",
            "fit-" + "0" * 63 + ".pt": b"not 64 digits", "fit-" + "A" * 64 + ".pt": b"caps"}
    for name, body in mine.items():
        (cache / name).write_bytes(body)
    explain(capsys, model_file, data, tmp_path / "o1", "--cache", cache)
    (first,) = fits(cache)
    size = first.stat().st_size
    monkeypatch.setattr(fit_cache, "MAX_BYTES", int(2.5 * size))
    settings = [(), ("--references", "59"), ("--references", "58")]
    for k, extra in enumerate(settings):
        explain(capsys, model_file, data, tmp_path / f"a{k}", "--cache", cache, *extra)
    ours = {p.name for p in fits(cache)}
    assert len(ours) == 2 and first.name not in ours          # the least recently used
    assert sum((cache / n).stat().st_size for n in ours) <= fit_cache.MAX_BYTES
    for name, body in mine.items():                          # the user's files stay
        assert (cache / name).read_bytes() == body
    assert not [p for p in cache.iterdir() if p.name.endswith(".tmp")]
    # a hit marks its file used: the other one goes next
    explain(capsys, model_file, data, tmp_path / "b1", "--cache", cache,
            "--references", "59")
    explain(capsys, model_file, data, tmp_path / "b2", "--cache", cache,
            "--references", "57")
    names = {p.name for p in fits(cache)}
    assert len(names) == 2 and len(names & ours) == 1


def test_a_summary_from_a_cached_fit_is_the_same(capsys, tmp_path, model_file, data):
    cache = ("--cache", tmp_path / "cache")
    args = ["summarize", "--model", model_file, "--trust-pickle", "--data", data, *BASE]
    outs = []
    for k, extra in enumerate([("--no-cache",), cache, cache]):
        out = tmp_path / f"s{k}"
        assert main([str(a) for a in (*args, "--out", out, *extra)]) == 0, \
            capsys.readouterr().err
        outs.append(out)
    first = json.loads((outs[0] / "summary.json").read_text())
    for out in outs[1:]:
        assert json.loads((out / "summary.json").read_text()) == first
        a, b = load_summary(outs[0]), load_summary(out)
        assert a.record.references_sha256 == b.record.references_sha256
        assert a.record.model_digest == b.record.model_digest
        for ra, rb in zip(a.regions, b.regions, strict=True):
            same_region(ra, rb)
    # the summary of a restored fit locates images as the one made without the cache
    code = main([str(a) for a in ("explain", "--model", model_file, "--trust-pickle",
                                  "--data", data, "--summary", outs[2], "--image",
                                  data / "c0" / "img000.png", "--out", tmp_path / "e",
                                  *BASE)])
    assert code == 0, capsys.readouterr().err
