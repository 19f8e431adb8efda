"""The region index: packing, the index's greedy against a reference from the formulas,
the on-disk format (resume, corruption, mismatches) and the command line."""
import json
import os
import signal
import threading
import time

import numpy as np
import pytest
import torch
from helpers import descendants, processes
from nets import tiny_cnn, tiny_images

from repinterp import RepresentativeInterpreter
from repinterp.app.index import build_index, load_index
from repinterp.app.loading import ImageSource
from repinterp.cli import main
from repinterp.core.errors import UserError
from repinterp.core.greedy import select_boundaries
from repinterp.core.index import IndexWorker, RegionIndex, pack_signs, unpack_signs


@pytest.mark.parametrize("width", [1, 7, 8, 13, 64])
def test_pack_signs_is_numpy_packbits(width):
    v = torch.randn(37, width, generator=torch.Generator().manual_seed(width))
    v[0, 0] = 0.0                                    # zero counts as the positive side
    packed = pack_signs(v)
    assert torch.equal(packed, torch.from_numpy(np.packbits((v >= 0).numpy(), axis=1)))
    assert torch.equal(unpack_signs(packed, width), v >= 0)


@pytest.fixture(scope="module")
def indexed():
    """A fitted interpreter on the tiny network, a 60-boundary bank and the index rows
    of every reference (float64: exact comparisons)."""
    net, images = tiny_cnn(0), tiny_images(0)
    interp = RepresentativeInterpreter(net, "2", num_boundaries=20, progress=False,
                                       use_prefix=False).fit(images)
    bank = interp.sample_bank(60, per_origin=20, seed=0)
    assert not bank.prefix                 # its working space is feature space
    rows = IndexWorker(net, "2", bank, batch_size=64).rows(images)
    return interp, bank, RegionIndex(bank, rows, interp.feature_shape_, "2"), net


def side_values(interp, bank):
    """``Z W^T + b``: the bank's side values at every stored reference, the product the
    interpreter makes (its working space is feature space here: ``use_prefix=False``)."""
    return torch.addmm(bank.working.biases, interp.features_, bank.working.weights.T)


def test_index_rows_are_the_side_values_of_the_bank(indexed):
    interp, bank, index, _ = indexed
    values = side_values(interp, bank)
    torch.testing.assert_close(index.rows.values.double(), values, rtol=1e-3, atol=1e-3)
    assert torch.equal(unpack_signs(index.rows.signs, len(bank)), values >= 0)
    assert torch.equal(index.rows.predictions, interp.predictions_)
    torch.testing.assert_close(index.rows.margins.double(), interp.margins_.double())
    # the bank's boundaries are exact LDBs between the classes of their pairs
    assert len(bank) == 60 and set(bank.working.pairs[:, 0].tolist()) >= {0, 1}


@pytest.mark.parametrize("seed", [0, 5, 17, 123])
@pytest.mark.parametrize("q, min_purity", [(None, None), (12, None), (None, 0.97)])
def test_index_region_equals_the_greedy_on_exact_sides(indexed, seed, q, min_purity):
    """The slow reference straight from the formulas: sides of every reference from the
    full-precision product, oriented by the seed, the candidates (the ``q`` boundaries
    of the seed's class nearest to it, ``|g . p + c| / |g|``) through the float greedy;
    then membership from the feature-space boundaries of the region."""
    interp, bank, index, _ = indexed
    values = side_values(interp, bank)
    cls = int(interp.predictions_[seed])
    cand = torch.arange(len(bank))
    if q is not None:
        of_cls = [k for k in range(len(bank)) if cls in bank.working.pairs[k].tolist()]
        dist = [abs(float(values[seed, k])) / float(bank.working.weights[k].norm())
                for k in of_cls]
        cand = torch.tensor([of_cls[i] for i in np.argsort(dist, kind="stable")[:q]])
    sides = ((values >= 0) == (values[seed] >= 0))[:, cand]
    same = interp.predictions_ == cls
    ref = select_boundaries(sides, same, min_purity=min_purity)
    region = index.explain(seed, num_boundaries=q, min_purity=min_purity)
    assert region.num_boundaries == len(ref.indices)
    assert set(region.members.tolist()) == set(ref.covered.nonzero()[:, 0].tolist())
    others = int((~same[region.members]).sum())
    assert region.members[0] == seed and region.delta == max(ref.delta, others)
    # the region's feature-space boundaries hold its members and no one else
    inside = region.contains_features(interp.features_)
    assert set(inside.nonzero()[:, 0].tolist()) == set(region.members.tolist())
    assert (region.seed_values >= 0).all()


@pytest.mark.parametrize("seed", [0, 5, 17, 123])
def test_one_engine_the_per_seed_and_index_paths_agree(indexed, seed):
    """The per-seed path (dense side values) and the index path (bitsets and float16
    values) given the same candidates and side values, at their shared defaults: the
    same boundaries, members, deltas and purity (the order may differ only where the
    float16 distances tie)."""
    from repinterp.core.boundaries import Boundaries
    interp, bank, index, _ = indexed
    assert interp.min_purity_ == index.min_purity_
    assert RegionIndex.explain.__kwdefaults__["min_purity"] == "auto"
    values = side_values(interp, bank)
    cls = int(interp.predictions_[seed])
    b = Boundaries(bank.weights, bank.biases, bank.working.points, bank.working.pairs)
    dense = interp._region(b, values, values[seed], cls, interp.predictions_ == cls, seed,
                           None)
    packed = index.explain(seed)
    assert torch.equal(dense.weights, packed.weights)
    assert torch.equal(dense.biases, packed.biases) and torch.equal(dense.pairs, packed.pairs)
    assert set(dense.members.tolist()) == set(packed.members.tolist())
    assert (dense.delta, dense.min_delta, dense.purity) == (
        packed.delta, packed.min_delta, packed.purity)
    assert dense.members[0] == packed.members[0] == seed
    torch.testing.assert_close(dense.member_distances.float(), packed.member_distances,
                               rtol=2e-2, atol=2e-2)


def test_index_explains_an_outside_image_like_its_row(indexed):
    interp, bank, index, net = indexed
    row = index.explain(9)
    images = tiny_images(0)
    outside = index.explain(IndexWorker(net, "2", bank).rows(images[9:10]))
    assert torch.equal(row.members, outside.members)
    assert outside.seed_index is None and row.seed_index == 9
    with pytest.raises(UserError, match="one outside image"):
        index.explain(IndexWorker(net, "2", bank).rows(images[:2]))


def test_index_summary_covers_classes(indexed):
    _, _, index, _ = indexed
    s = index.summarize(coverage=0.8, max_regions=4)
    assert {c.cls for c in s.classes} == set(index.rows.predictions.tolist())
    for c in s.classes:
        assert c.coverage >= 0.8 or len(c.regions) == 4
        sizes = [r.size for r in c.regions]
        assert sizes == sorted(sizes, reverse=True)


# --- on disk --------------------------------------------------------------------------
@pytest.fixture()
def npy_source(tmp_path):
    x = tiny_images(1, 230).float().numpy()
    np.save(tmp_path / "x.npy", x)
    return ImageSource(str(tmp_path / "x.npy"), channels=1, normalize="none",
                       pixel_range="raw")


def _build(model, source, out, **kw):
    kw = dict(bank=40, pilot=120, per_origin=20, seed=3, shard_size=50, progress=False) | kw
    return build_index(model, "2", source, out, **kw)


def test_build_load_resume_and_mismatches(tmp_path, npy_source):
    model = tiny_cnn(0, dtype=torch.float32)
    out = _build(model, npy_source, tmp_path / "idx")
    shards = sorted((out / "shards").glob("*.parquet"))
    assert [p.name for p in shards] == [f"part-0000{k}.parquet" for k in range(5)]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["items"] == 230 and manifest["bank"] == 40 and manifest["version"] == 2
    loaded = load_index(out, model)
    assert list(loaded.items) == list(range(230)) and len(loaded.index) == 230
    # names and items are read from the shards when asked for, in any order
    names = [loaded.names[i] for i in range(230)]
    assert len(set(names)) == 230 and names == npy_source.read(0, 230)[2]
    order = np.random.default_rng(0).permutation(230)
    assert loaded.names.take(order) == [names[i] for i in order]
    assert loaded.names[-1] == names[229] and loaded.names[48:52] == names[48:52]
    with pytest.raises(IndexError):
        loaded.names[230]
    # the same rows as one pass of the worker over every image
    whole = IndexWorker(model, "2", loaded.index.bank).rows(npy_source.read(0, 230)[0])
    assert torch.equal(loaded.index.rows.predictions, whole.predictions)
    assert torch.equal(loaded.index.rows.signs, whole.signs)
    # the layer given as a module is the same index (resumes, nothing to do)
    build_index(model, model[2], npy_source, out, bank=40, pilot=120, per_origin=20,
                seed=3, shard_size=50, progress=False)
    # resume: a lost shard is rebuilt identically, the others are not touched
    before = {p.name: p.stat().st_mtime_ns for p in shards}
    lost = shards[2].read_bytes()
    shards[2].unlink()
    _build(model, npy_source, out)
    assert shards[2].read_bytes() == lost
    assert all(p.stat().st_mtime_ns == before[p.name] for p in shards if p != shards[2])
    # another model, another bank size, a corrupt shard, a missing shard
    other = tiny_cnn(1, dtype=torch.float32)
    with pytest.raises(UserError, match="does not match the index"):
        load_index(out, other)
    with pytest.raises(UserError, match="another model_digest"):
        _build(other, npy_source, out)
    with pytest.raises(UserError, match="another bank"):
        _build(model, npy_source, out, bank=41)
    shards[1].write_bytes(b"PAR1 not really")
    with pytest.raises(UserError, match="part-00001.parquet is corrupt"):
        load_index(out)
    shards[1].unlink()
    with pytest.raises(UserError, match="1 of 5 shards missing"):
        load_index(out)
    with pytest.raises(UserError, match="not a region index"):
        load_index(tmp_path)


def test_cli_index_summarize_explain(capsys, tmp_path):
    model = tiny_cnn(0, dtype=torch.float32)
    torch.jit.script(model).save(str(tmp_path / "m.pt"))
    x = (tiny_images(1, 180).float().numpy() * 40 + 128).clip(0, 255).astype(np.uint8)
    np.save(tmp_path / "x.npy", x)
    from PIL import Image
    Image.fromarray(x[3, 0]).save(tmp_path / "q.png")
    code = main([
        "index", "--model", str(tmp_path / "m.pt"), "--layer", "2", "--data",
        str(tmp_path / "x.npy"),
        "--out", str(tmp_path / "idx"), "--bank", "40", "--pilot", "100", "--quiet",
        "--shard-size", "64", "--normalize", "none"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "indexed 180 images against 40 boundaries" in out.out
    code = main(["summarize", "--index", str(tmp_path / "idx"), "--out",
                 str(tmp_path / "sum"), "--quiet", "--coverage", "0.8"])
    out = capsys.readouterr()
    assert code == 0, out.err
    data = json.loads((tmp_path / "sum/summary.json").read_text())
    assert data["classes"] and (tmp_path / "sum/report.html").exists()
    code = main(["explain", "--index", str(tmp_path / "idx"), "--image",
                 str(tmp_path / "q.png"), "--out", str(tmp_path / "q"), "--quiet"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "closest: x.npy[" in out.out and (tmp_path / "q/report.html").exists()
    # bad input: one line, exit 2
    code = main(["summarize", "--index", str(tmp_path), "--quiet"])
    assert code == 2 and "not a region index" in capsys.readouterr().err
    code = main(["explain", "--index", str(tmp_path / "idx"), "--quiet"])
    assert code == 2 and "needs --image" in capsys.readouterr().err
    code = main(["index", "--model", str(tmp_path / "nope.pt"), "--data",
                 str(tmp_path / "x.npy")])
    assert code == 2 and "nope.pt does not exist" in capsys.readouterr().err


# --- Ray ------------------------------------------------------------------------------
def _ray_actor_pids() -> list[int]:
    """Worker processes of the index's Ray actors started by *this* test: processes
    titled after the actor class that descend from this process (the local Ray that
    ``ray.init`` started here), never another user's or another session's workers."""
    table = processes()
    return [pid for pid in descendants(os.getpid(), table) if b"_RayIndexer" in table[pid][1]]


@pytest.mark.slow
def test_ray_engine_gives_the_local_index_and_survives_a_killed_worker(tmp_path):
    """On a local Ray with 2 CPUs: the same shard files as the in-process engine, byte for
    byte, although a worker actor is killed (SIGKILL) mid-run: no row lost or doubled."""
    ray = pytest.importorskip("ray")          # `make test` installs the `ray` extra
    x = tiny_images(2, 900).float().numpy()
    np.save(tmp_path / "x.npy", x)
    source = ImageSource(str(tmp_path / "x.npy"), channels=1, normalize="none",
                         pixel_range="raw")
    model = tiny_cnn(0, dtype=torch.float32)
    kw = dict(shard_size=15)
    local = _build(model, source, tmp_path / "local", **kw)
    killed: list[int] = []

    def kill_one_worker_mid_run() -> None:
        shards = tmp_path / "ray" / "shards"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not killed:
            done = len(list(shards.glob("*.parquet"))) if shards.exists() else 0
            pids = _ray_actor_pids()
            if 3 <= done < 50 and pids:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(done)
            time.sleep(0.005)

    killer = threading.Thread(target=kill_one_worker_mid_run, daemon=True)
    killer.start()
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        remote = _build(model, source, tmp_path / "ray", engine="ray", workers=2, **kw)
    finally:
        ray.shutdown()
        killer.join(timeout=1)
    assert killed, "no worker was killed mid-run"
    names = sorted(p.name for p in (local / "shards").iterdir())
    assert names == sorted(p.name for p in (remote / "shards").iterdir())
    assert len(names) == 60
    for name in names:
        assert (local / "shards" / name).read_bytes() == (remote / "shards" / name).read_bytes()
    a, b = load_index(local), load_index(remote)
    assert a.items == b.items == list(range(900))


def test_model_digest_covers_every_buffer():
    """BatchNorm's 0-d ``num_batches_tracked`` included; any weight change is seen."""
    import torchvision

    from repinterp.app.index import model_digest
    torch.manual_seed(0)
    m = torchvision.models.resnet18(num_classes=3)
    d = model_digest(m)
    assert d == model_digest(m) and len(d) == 64
    with torch.no_grad():
        m.layer3[0].bn1.running_mean[0] += 1e-6
    assert model_digest(m) != d
