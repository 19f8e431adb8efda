"""Architectural rules, each kept by a scan of the source that fails the moment the rule
is broken (and each scanner checked on a synthetic bad tree, so it cannot pass
vacuously)."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from repinterp.cli import FLAGS, build_parser
from repinterp.core import defaults

SRC = Path(__file__).resolve().parents[1] / "src" / "repinterp"

#: parameter name -> the name in :mod:`repinterp.core.defaults` it must default to
DEFAULTED = {"coverage": "COVERAGE", "max_regions": "MAX_REGIONS",
             "num_boundaries": "NUM_BOUNDARIES", "max_logics": "MAX_LOGICS",
             "heatmap_method": "HEATMAP_METHOD", "heatmap_grid": "HEATMAP_GRID"}


def _sources(root: Path):
    for path in sorted(root.rglob("*.py")):
        yield path.relative_to(root).as_posix(), ast.parse(path.read_text(), str(path))


# --- one set of defaults ------------------------------------------------------------------
def literal_defaults(root: Path) -> list[str]:
    """``file:line name=value`` for every parameter or dataclass field named in
    :data:`DEFAULTED` whose default is a literal instead of the name in ``defaults``
    (``None`` is allowed: it means "not given")."""
    found = []
    for rel, tree in _sources(root):
        if rel == "core/defaults.py":
            continue
        for node in ast.walk(tree):
            pairs = []
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                pos = a.posonlyargs + a.args
                pairs += list(zip(pos[len(pos) - len(a.defaults):], a.defaults, strict=True))
                pairs += [(k, d) for k, d in zip(a.kwonlyargs, a.kw_defaults, strict=True)
                          if d is not None]
                pairs = [(arg.arg, d) for arg, d in pairs]
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) \
                    and node.value is not None:
                pairs = [(node.target.id, node.value)]
            for name, default in pairs:
                if name in DEFAULTED and isinstance(default, ast.Constant) \
                        and default.value is not None:
                    found.append(f"{rel}:{default.lineno} {name}={default.value!r}")
    return found


def test_every_default_is_defined_once():
    assert literal_defaults(SRC) == []


def test_the_defaults_scan_finds_a_literal(tmp_path):
    (tmp_path / "m.py").write_text("def summarize(coverage: float = 0.95, *, max_regions=10):"
                                   "\n    pass\nclass Job:\n    num_boundaries: int = 50\n")
    assert literal_defaults(tmp_path) == ["m.py:1 coverage=0.95", "m.py:1 max_regions=10",
                                          "m.py:4 num_boundaries=50"]


def test_the_cli_defaults_are_the_librarys():
    sub = build_parser()._subparsers._group_actions[0].choices
    for command in ("summarize", "explain", "index"):
        given = {a.dest: a.default for a in sub[command]._actions}
        assert given["num_boundaries"] == defaults.NUM_BOUNDARIES
        if command == "summarize":
            assert given["coverage"] == defaults.COVERAGE
            assert given["max_regions"] == defaults.MAX_REGIONS
            assert given["max_logics"] == defaults.MAX_LOGICS


# --- errors name parameters; the CLI maps them to flags ----------------------------------
def error_params(root: Path) -> dict[str, list[str]]:
    """Every parameter a ``UserError(...)`` names (``param=`` and the keys of
    ``params=``), with where, and the problems found: a parameter named without its
    ``{placeholder}`` in a literal message."""
    names: dict[str, list[str]] = {}
    for rel, tree in _sources(root):
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id == "UserError"):
                continue
            for kw in node.keywords:
                if kw.arg == "param" and isinstance(kw.value, ast.Constant):
                    names.setdefault(kw.value.value, []).append(f"{rel}:{node.lineno}")
                if kw.arg == "params" and isinstance(kw.value, ast.Dict):
                    for k in kw.value.keys:
                        if isinstance(k, ast.Constant):
                            names.setdefault(k.value, []).append(f"{rel}:{node.lineno}")
    return names


def test_every_parameter_an_error_names_has_its_flag():
    names = error_params(SRC)
    assert len(names) >= 10                              # the scan sees the errors
    assert sorted(set(names) - set(FLAGS)) == []
    assert sorted(set(FLAGS) - set(names)) == []         # no flag for a vanished error


def test_the_cli_rewrites_no_message_text():
    text = (SRC / "cli" / "__init__.py").read_text()
    assert "_as_flags" not in text and ".replace(api" not in text
    assert re.search(r"exc\.render\(FLAGS\)", text)


def test_an_error_reads_in_the_apis_words_and_the_clis():
    from repinterp.core.errors import UserError
    e = UserError("pass {param} (or {model_file})", "trust_pickle", "trust_pickle=True",
                  params={"model_file": "model_file=FILE"})
    assert str(e) == "pass trust_pickle=True (or model_file=FILE)"
    assert e.render(FLAGS) == "pass --trust-pickle (or --model FILE)"
    assert UserError("a {x} that is no parameter").render(FLAGS) == "a {x} that is no parameter"


# --- the CLI only parses ------------------------------------------------------------------
def test_each_command_is_one_call_into_a_pipeline():
    tree = ast.parse((SRC / "cli" / "__init__.py").read_text())
    commands = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)
                and n.name.startswith("_cmd_")}
    assert set(commands) == {"_cmd_demo", "_cmd_explain", "_cmd_summarize", "_cmd_index",
                             "_cmd_layers", "_cmd_compare"}
    for name, fn in commands.items():
        # no loop, no with-block, no model or image handling in a command
        assert not [n for n in ast.walk(fn) if isinstance(n, (ast.For, ast.While, ast.With))], name
        called = {n.func.id for n in ast.walk(fn) if isinstance(n, ast.Call)
                  and isinstance(n.func, ast.Name)}
        assert not called & {"load_images", "load_model", "write_report", "output_folder",
                             "SplitNetwork", "IndexWorker"}, name


# --- no lab notes in the source -----------------------------------------------------------
def issue_references(root: Path) -> list[str]:
    return [f"{p.relative_to(root)}:{i}" for p in sorted(root.rglob("*.py"))
            for i, line in enumerate(p.read_text().splitlines(), 1)
            if re.search(r"\bissues? \d+\b", line, re.IGNORECASE)]


def test_no_issue_numbers_in_the_source(tmp_path):
    (tmp_path / "m.py").write_text("x = 1  # measured in issue 18\n")
    assert issue_references(tmp_path) == ["m.py:1"]
    assert issue_references(SRC) == []


@pytest.mark.parametrize("name", ["NotPiecewiseLinearError"])
def test_gone_from_the_public_api(name):
    import repinterp
    assert not hasattr(repinterp, name)


# --- heat maps: one registry --------------------------------------------------------------
def method_name_tests(root: Path) -> list[str]:
    """Comparisons of a value with a heat map method's name outside ``core/heatmap.py``
    (``method == "logprob"``): what a method needs is the registry's to say."""
    from repinterp.core.heatmap import METHODS
    found = []
    for rel, tree in _sources(root):
        if rel == "core/heatmap.py":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                for side in [node.left, *node.comparators]:
                    if isinstance(side, ast.Constant) and side.value in METHODS:
                        found.append(f"{rel}:{node.lineno} {side.value!r}")
    return found


def test_heat_map_methods_are_known_only_to_their_registry(tmp_path):
    (tmp_path / "m.py").write_text("def f(method):\n    return method == 'logprob'\n")
    assert method_name_tests(tmp_path) == ["m.py:2 'logprob'"]
    assert method_name_tests(SRC) == []


def test_a_new_heat_map_method_is_one_class(net, images):
    """A method registers itself by subclassing; every entry point then takes it."""
    import torch

    from repinterp import RepresentativeInterpreter
    from repinterp.core import heatmap
    from repinterp.core.errors import UserError

    class Squares(heatmap.HeatmapMethod):
        name = "test-squares"

        @staticmethod
        def maps(weights, features):
            return torch.einsum("pchw,nchw->nhw", weights, features)[:, None] ** 2

    class Gradients(heatmap.Contribution):
        name = "test-gradients"
        needs_class_gradients = True

    try:
        interp = RepresentativeInterpreter(net, "2", num_boundaries=8, progress=False,
                                           heatmap_method="test-squares").fit(images[:60])
        region = interp.explain(0)
        got = interp.heatmap(region, images[:4])
        feats = interp.features(images[:4], flat=False)
        w = region.weights.reshape(-1, *feats.shape[1:]).to(feats.dtype)
        want = heatmap.minmax(torch.nn.functional.interpolate(
            (torch.einsum("pchw,nchw->nhw", w, feats)[:, None] ** 2).relu(),
            size=tuple(images.shape[-2:]), mode="bilinear", align_corners=False)).mean(1)
        torch.testing.assert_close(got, want.cpu())
        # a method that asks for the class gradients gets them, as logprob does
        torch.testing.assert_close(interp.heatmap(region, images[:4], "test-gradients"),
                                   interp.heatmap(region, images[:4], "logprob"))
        with pytest.raises(UserError, match="unknown heat map method 'nope'"):
            interp.heatmap(region, images[:4], "nope")
    finally:
        heatmap.unregister("test-squares")
        heatmap.unregister("test-gradients")
    assert "test-squares" not in heatmap.METHODS
    with pytest.raises(UserError, match="unknown heat map method 'test-squares'"):
        heatmap.heatmap_method("test-squares")


# --- small modules, no re-export shims ----------------------------------------------------
def oversized(root: Path, limit: int = 450, cli_limit: int = 249) -> list[str]:
    """Modules over ``limit`` lines, and a command line (``cli/__init__.py``) over
    ``cli_limit``: one concept a module, and a CLI that only parses."""
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        n = len(path.read_text().splitlines())
        if n > (cli_limit if rel == "cli/__init__.py" else limit):
            found.append(f"{rel}: {n} lines")
    return found


def test_no_module_is_over_450_lines_and_the_cli_under_250(tmp_path):
    (tmp_path / "big.py").write_text("x = 1\n" * 451)
    (tmp_path / "ok.py").write_text("x = 1\n" * 450)
    assert oversized(tmp_path) == ["big.py: 451 lines"]
    assert oversized(SRC) == []


def reexports(root: Path) -> list[str]:
    """Imports kept only to be re-exported (``# noqa: F401`` on an import outside an
    ``__init__.py``): a name lives in one module and is imported from there."""
    return [f"{p.relative_to(root).as_posix()}:{i}" for p in sorted(root.rglob("*.py"))
            if p.name != "__init__.py"
            for i, line in enumerate(p.read_text().splitlines(), 1)
            if line.lstrip().startswith(("import ", "from ")) and "noqa: F401" in line]


def test_no_re_export_shims(tmp_path):
    (tmp_path / "m.py").write_text("from .a import b  # noqa: F401\n")
    assert reexports(tmp_path) == ["m.py:1"]
    assert reexports(SRC) == []


# --- a small public API, used as such by the tests and the benchmarks ----------------------
ROOT = SRC.parents[1]
#: the fitted interpreter's private subsystems, under their old public names too
SUBSYSTEMS = {"network_", "store_", "_network", "_store"}


def private_uses(root: Path) -> list[str]:
    """``file:line what`` for each use of the package's insides: a fitted interpreter's
    subsystems (:data:`SUBSYSTEMS`), an import of a private module or name of
    ``repinterp`` (a ``_`` prefix), or a private attribute of something imported from
    ``repinterp`` (``index_ray._capped``)."""
    found = []
    for rel, tree in _sources(root):
        ours: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("repinterp"):
                parts = node.module.split(".") + [a.name for a in node.names]
                bad = [p for p in parts if p.startswith("_") and not p.startswith("__")]
                if bad:
                    found.append(f"{rel}:{node.lineno} import {bad[0]}")
                ours |= {a.asname or a.name for a in node.names}
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("repinterp"):
                        if any(p.startswith("_") for p in a.name.split(".")):
                            found.append(f"{rel}:{node.lineno} import {a.name}")
                        ours.add(a.asname or a.name.split(".")[0])
        attrs = sorted((n for n in ast.walk(tree) if isinstance(n, ast.Attribute)),
                       key=lambda n: (n.lineno, n.col_offset))
        for node in attrs:
            if node.attr in SUBSYSTEMS:
                found.append(f"{rel}:{node.lineno} .{node.attr}")
            elif node.attr.startswith("_") and not node.attr.startswith("__"):
                base = node.value
                while isinstance(base, ast.Attribute):
                    base = base.value
                if isinstance(base, ast.Name) and base.id in ours:
                    found.append(f"{rel}:{node.lineno} {ast.unparse(node)}")
    return found


def test_the_private_use_scan_finds_each_kind(tmp_path):
    (tmp_path / "t.py").write_text(
        "from repinterp.app.index import _Job\n"
        "from repinterp.core import _images\n"
        "import repinterp.app.index_ray as index_ray\n"
        "from repinterp.app import index_ray as ir\n"
        "from repinterp import RepresentativeInterpreter\n"
        "it = RepresentativeInterpreter(m, 'x')\n"
        "it.network_.head, it.store_.z, it._store, index_ray._capped(1), ir._run_ray\n"
        "it.features_, ir.ray_session, other._private\n"
        "import repinterp.core.store\nrepinterp.core.store._mapped\n")
    assert private_uses(tmp_path) == [
        "t.py:1 import _Job", "t.py:2 import _images", "t.py:7 .network_", "t.py:7 .store_",
        "t.py:7 ._store", "t.py:7 index_ray._capped", "t.py:7 ir._run_ray",
        "t.py:10 repinterp.core.store._mapped"]


@pytest.mark.parametrize("folder", ["tests", "benchmarks"])
def test_tests_and_benchmarks_use_the_public_verbs_only(folder):
    assert private_uses(ROOT / folder) == []


def test_the_public_face_is_about_ten_typed_names():
    import inspect
    import typing

    import repinterp
    assert len(repinterp.__all__) <= 12
    for name in repinterp.__all__:
        assert getattr(repinterp, name) is not None, name
    hints = typing.get_type_hints(repinterp.RepresentativeInterpreter.explain)
    assert hints["return"] is repinterp.Region
    many = typing.get_type_hints(repinterp.RepresentativeInterpreter.explain_many)
    assert many["return"] == list[repinterp.Region]
    assert "load_images" in repinterp.__all__ and inspect.isfunction(repinterp.load_images)


# --- tests and benchmarks: a shared helpers module each, no path tricks ------------------
def path_tricks_and_cross_imports(root: Path) -> list[str]:
    """``file:line`` of each ``sys.path`` edit (in code or in a child's script) and each
    import of one test module by another (``from test_labels import region``): shared
    code lives in ``tests/helpers.py`` or in the ``benchmarks`` package."""
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        text = path.read_text()
        found += [f"{rel}:{i} sys.path" for i, line in enumerate(text.splitlines(), 1)
                  if re.search(r"sys\.path\.(insert|append)|PYTHONPATH", line)]
        for node in ast.walk(ast.parse(text)):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            found += [f"{rel}:{node.lineno} imports {n}" for n in names
                      if n.split(".")[-1].startswith("test_")]
    return found


def test_the_path_trick_scan_finds_each_kind(tmp_path):
    (tmp_path / "test_a.py").write_text("import sys\nsys.path.insert(0, 'x')\n"
                                        "from test_b import f\nimport test_c\n"
                                        "CHILD = 'import sys; sys.path.append(d)'\n")
    assert path_tricks_and_cross_imports(tmp_path) == [
        "test_a.py:2 sys.path", "test_a.py:5 sys.path", "test_a.py:3 imports test_b",
        "test_a.py:4 imports test_c"]


@pytest.mark.parametrize("folder", ["tests", "benchmarks"])
def test_no_path_tricks_between_tests_and_benchmarks(folder):
    found = path_tricks_and_cross_imports(ROOT / folder)
    assert [f for f in found if not f.startswith("test_structure.py:")] == []


def private_name_imports(root: Path) -> list[str]:
    """``file:line name`` of each ``_private`` name one module imports from another: a
    name used beyond its module is that module's public name."""
    return [f"{rel}:{node.lineno} {a.name}" for rel, tree in _sources(root)
            for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
            for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]


def test_no_private_name_crosses_a_module(tmp_path):
    (tmp_path / "m.py").write_text("from .shards import _sha256, read\nfrom . import _images\n")
    assert private_name_imports(tmp_path) == ["m.py:1 _sha256", "m.py:2 _images"]
    assert private_name_imports(SRC) == []
