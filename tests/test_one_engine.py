"""One region engine: the per-seed path, the in-process region index and the sharded
index make a seed's region through the same greedy, pruning, ranking, purity and
:class:`Region` constructor (:mod:`repinterp.core.engine`), so on the same candidates and
side values they give the same region, every field of it; whether the boundaries are
tangent (``approximate``) and the purity stop follow from the head, on every path.

Also a structural check: ``Region(...)`` is called in ``core/engine.py`` only.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from helpers import same_region
from nets import tiny_cnn, tiny_images
from torch import nn

import repinterp
from repinterp import RepresentativeInterpreter
from repinterp.core.boundaries import Boundaries
from repinterp.core.engine import MIN_PURITY, TANGENT_MIN_PURITY
from repinterp.core.index import Bank, IndexWorker, RegionIndex, unpack_signs
from repinterp.core.region import Region
from repinterp.core.sharded import ShardedIndex

HEADS = {"relu": (nn.ReLU, False, MIN_PURITY), "gelu": (nn.GELU, True, TANGENT_MIN_PURITY)}


def with_head(act: type[nn.Module]) -> nn.Module:
    """The tiny seeded CNN (float64) with ``act`` as the head's activation."""
    model = tiny_cnn(0)
    model[5] = act()
    return model


@pytest.fixture(scope="module", params=sorted(HEADS))
def paths(request):
    """On one head: a fitted interpreter on 3,000 references, a 48-boundary bank from
    it, the index of the same references, and a seed whose region the two purity stops
    tell apart (so that the stop in use is seen in the regions)."""
    act, tangent, stop = HEADS[request.param]
    model = with_head(act)
    x = tiny_images(0, 3000)
    interp = RepresentativeInterpreter(model, "2", num_boundaries=8, progress=False).fit(x)
    bank = interp.sample_bank(48, per_origin=12, seed=0)
    rows = IndexWorker(model, "2", bank).rows(x)
    index = RegionIndex(bank, rows, interp.feature_shape_, "2")
    # the per-seed path is fed the index's float16 values: the comparison is exact when
    # no value's sign was lost to the rounding
    assert torch.equal(unpack_signs(rows.signs, len(bank)), rows.values >= 0)
    assert bool((rows.values != 0).all())
    assert torch.equal(rows.predictions, interp.predictions_)
    seed = next(s for s in range(0, len(x), 37)
                if index.explain(s, min_purity=MIN_PURITY).size
                != index.explain(s, min_purity=TANGENT_MIN_PURITY).size)
    return request.param, interp, index, seed, tangent, stop


def per_seed(interp: RepresentativeInterpreter, index: RegionIndex, seed: int,
             q: int | None) -> Region:
    """The per-seed path's region (its own ``approximate`` and purity stop) on the
    index's candidates of ``seed`` and their index values."""
    bank = index.bank
    values = index.rows.values.float()
    cls = int(index.rows.predictions[seed])
    cand = RegionIndex.candidates(bank, cls, values[seed], q)
    b = Boundaries(bank.weights, bank.biases, bank.working.points,
                   bank.working.pairs).select(cand)
    return interp._region(b, values[:, cand], values[seed, cand], cls,
                          interp.predictions_ == cls, seed, None)


@pytest.mark.parametrize("q", [None, 12])
def test_every_path_gives_the_same_region(paths, q):
    """Per-seed path = in-process index = sharded index (1 and 3 groups), every field,
    ``approximate`` and the purity stop included, on a smooth and a piecewise-linear
    head."""
    name, interp, index, seed, tangent, _ = paths
    sharded = [ShardedIndex.local(index.rows, index.bank, index.feature_shape, groups=g)
               for g in (1, 3)]
    for s in (seed, 0, 1234, 2999):
        a = index.explain(s, num_boundaries=q)
        assert a.approximate is tangent and a.members[0] == s
        same_region(per_seed(interp, index, s, q), a, f"{name} per-seed {s}")
        for sh in sharded:
            same_region(a, sh.explain(s, num_boundaries=q), f"{name} sharded {s}")


def test_the_head_decides_tangent_boundaries_and_the_purity_stop(paths):
    """``approximate`` and the ``"auto"`` stop come from the head on every path: the
    interpreter's verdict, the bank's flag, both indexes; the regions of ``"auto"`` are
    those of the head's stop, not those of the other."""
    name, interp, index, seed, tangent, stop = paths
    other = MIN_PURITY if tangent else TANGENT_MIN_PURITY
    sharded = ShardedIndex.local(index.rows, index.bank, index.feature_shape, groups=2)
    assert interp.approximate_ is index.bank.approximate is index.approximate is \
        sharded.approximate is tangent
    assert interp.min_purity_ == index.min_purity_ == sharded.min_purity_ == stop
    for ix in (index, sharded):
        auto = ix.explain(seed)
        same_region(auto, ix.explain(seed, min_purity=stop), name)
        assert auto.size != ix.explain(seed, min_purity=other).size
    summary = sharded.summarize(coverage=0.5, max_regions=2)
    assert summary.meta["approximate"] is tangent
    assert summary.regions and all(r.approximate is tangent for r in summary.regions)


def test_the_bank_keeps_its_head_verdict():
    """The flag is saved with the bank; a bank saved before it existed loads as exact."""
    w = torch.randn(3, 5, dtype=torch.float64)
    working = Boundaries(w, torch.zeros(3, dtype=torch.float64), w.clone(),
                         torch.tensor([[0, 1]] * 3))
    for flag in (False, True):
        d = Bank(working, w, working.biases, approximate=flag).to_dict()
        assert Bank.from_dict(d).approximate is flag
    old = {k: v for k, v in Bank(working, w, working.biases).to_dict().items()
           if k != "approximate"}
    assert Bank.from_dict(old).approximate is False


class Images:
    """An image source held in memory (what ``build_index`` reads: ``len`` and
    ``read(start, end)`` -> images, item numbers, names)."""

    def __init__(self, x: torch.Tensor):
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def read(self, start: int, end: int):
        end = min(end, len(self.x))
        return self.x[start:end], list(range(start, end)), [str(i) for i in range(start, end)]


def test_an_index_built_on_a_smooth_head_says_tangent(tmp_path):
    """From outside: build_index + load_index on a 3-class GELU net, then its summary:
    every region tangent, the summary says so."""
    from repinterp.app.index import build_index, load_index
    model = tiny_cnn(0, dtype=torch.float32)
    model[5] = nn.GELU()
    build_index(model, "2", Images(tiny_images(0, 600).float()), tmp_path / "idx",
                bank=32, pilot=150, per_origin=16, shard_size=200, progress=False)
    index = load_index(tmp_path / "idx").index
    assert index.approximate and index.min_purity_ == TANGENT_MIN_PURITY
    summary = index.summarize(coverage=0.8, max_regions=3)
    assert summary.meta["approximate"] is True
    assert summary.regions and all(r.approximate for r in summary.regions)


# --- structure ------------------------------------------------------------------------
#: Where a Region may be constructed: the engine. ``Region.from_dict`` (core/region.py)
#: rebuilds a saved region through ``cls(...)``, which the scan does not count: loading
#: a region is not making one.
REGION_MAKERS = ("core/engine.py",)


def region_calls(root: Path) -> list[str]:
    """``"path:line"`` (path relative to ``root``) of every call ``Region(...)`` or
    ``something.Region(...)`` in the Python files under ``root`` outside
    :data:`REGION_MAKERS`."""
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel in REGION_MAKERS:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=rel)):
            if isinstance(node, ast.Call):
                f = node.func
                name = f.id if isinstance(f, ast.Name) else (
                    f.attr if isinstance(f, ast.Attribute) else None)
                if name == "Region":
                    found.append(f"{rel}:{node.lineno}")
    return found


def test_region_is_constructed_in_the_engine_only():
    src = Path(repinterp.__file__).resolve().parent
    assert region_calls(src) == []
    engine = ast.parse((src / "core" / "engine.py").read_text(encoding="utf-8"))
    calls = [n for n in ast.walk(engine) if isinstance(n, ast.Call)
             and isinstance(n.func, ast.Name) and n.func.id == "Region"]
    assert len(calls) == 1                        # one constructor call, in region()


def test_the_scan_finds_a_region_made_elsewhere(tmp_path):
    (tmp_path / "core").mkdir()
    (tmp_path / "app").mkdir()
    (tmp_path / "core" / "engine.py").write_text("r = Region(1)\n")
    (tmp_path / "app" / "bad.py").write_text(
        "from repinterp.core import region\n"
        "def f(d):\n"
        "    a = region.Region(**d)\n"
        "    return Region(**d), a\n")
    (tmp_path / "app" / "fine.py").write_text("r = Region.from_dict(d)\nregion = f()\n")
    assert region_calls(tmp_path) == ["app/bad.py:3", "app/bad.py:4"]
