"""Split a CNN at a feature layer into psi (features) and G (head).

The split is done with :mod:`torch.fx`: the network is traced with the chosen layer
kept as a leaf, the graph is cut at that layer's output and every later node becomes
the head ``G``. Both halves share the user's submodules (no copy of the weights) and
nothing is registered on the user's model.

The head must be piecewise linear (PL) for the boundaries of METHOD §1 to be exact.
:func:`check_head_modules` checks every operation of the head against a whitelist and
:func:`check_head_numerically` checks ``G(z + d) = G(z) + J d`` at feature points in
float64, which also catches whitelisted types whose ``forward`` was overridden.
"""
from __future__ import annotations

import contextlib
import copy
import difflib
import operator
from collections import OrderedDict
import warnings
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from .errors import UserError

__all__ = [
    "NotPiecewiseLinearError",
    "SplitModel",
    "check_head_modules",
    "check_head_numerically",
    "inference_mode",
    "layer_table",
    "linear_prefix",
    "resolve_layer",
    "split_model",
]


class NotPiecewiseLinearError(UserError):
    """The head after the chosen layer is not piecewise linear."""


#: Module types that are piecewise linear (BatchNorm and Dropout in eval mode).
PL_MODULES: tuple[type[nn.Module], ...] = (
    nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ReLU, nn.LeakyReLU, nn.ReLU6,
    nn.Hardtanh, nn.PReLU, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d,
    nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d, nn.Flatten, nn.Unflatten, nn.Identity, nn.BatchNorm1d,
    nn.BatchNorm2d, nn.BatchNorm3d, nn.Dropout, nn.Dropout1d, nn.Dropout2d,
    nn.Dropout3d, nn.ZeroPad2d, nn.ConstantPad2d,
)
PL_FUNCTIONS = {
    operator.add, operator.sub, operator.neg, operator.getitem, torch.add, torch.sub,
    torch.flatten, torch.relu, F.relu, F.leaky_relu, F.relu6, F.hardtanh, F.max_pool1d,
    F.max_pool2d, F.avg_pool1d, F.avg_pool2d, F.adaptive_avg_pool1d,
    F.adaptive_avg_pool2d, F.adaptive_max_pool2d, F.dropout, F.linear, F.pad,
    torch.cat, torch.reshape, torch.mean, torch.sum, torch.maximum, torch.max,
}
#: Functions that are linear when all but one argument are constants.
SCALING_FUNCTIONS = {operator.mul, operator.truediv, torch.mul}
PL_METHODS = {
    "view", "reshape", "flatten", "size", "relu", "relu_", "add", "add_", "sub", "mean",
    "sum", "permute", "contiguous", "squeeze", "unsqueeze", "transpose", "dim", "max",
    "__add__", "__sub__", "neg", "clamp", "clamp_min", "expand", "expand_as",
}


@dataclass
class SplitModel:
    """A network split at a layer: ``model(x) == head(features(x))``."""

    features: nn.Module
    head: nn.Module
    layer: str


def resolve_layer(model: nn.Module, layer: str | nn.Module) -> str:
    """Return the qualified name of ``layer`` inside ``model``.

    Raises
    ------
    ValueError
        If the name does not exist (the closest names are suggested) or the module is
        not part of ``model``.
    """
    if isinstance(layer, nn.Module):
        for name, module in model.named_modules():
            if module is layer:
                if name == "":
                    raise UserError("the layer cannot be the whole model")
                return name
        raise UserError("the given layer module is not a submodule of the model")
    names = [n for n, _ in model.named_modules() if n]
    if layer not in names:
        close = difflib.get_close_matches(str(layer), names, n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UserError(f"layer {layer!r} not found in the model{hint}")
    return layer


class _LeafTracer(fx.Tracer):
    def __init__(self, leaf: nn.Module):
        super().__init__()
        self.leaf = leaf

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return m is self.leaf or super().is_leaf_module(m, qualname)


def split_model(model: nn.Module, layer: str | nn.Module) -> SplitModel:
    """Cut ``model`` after ``layer`` into a feature extractor and a head.

    Parameters
    ----------
    model
        Any module that :mod:`torch.fx` can trace with ``layer`` kept whole.
    layer
        Name (as in ``named_modules()``) or the module itself. Everything computed after
        its output must depend on the input only through that output.
    """
    name = resolve_layer(model, layer)
    if isinstance(model, torch.jit.ScriptModule):
        return _split_script_sequential(model, name)
    leaf = model.get_submodule(name)
    tracer = _LeafTracer(leaf)
    try:
        graph = tracer.trace(model)
    except Exception as exc:  # fx raises many types for untraceable code
        raise UserError(f"could not trace the model with torch.fx ({exc})") from exc
    cut = [n for n in graph.nodes if n.op == "call_module" and n.target == name]
    if len(cut) != 1:
        raise UserError(f"layer {name!r} is called {len(cut)} times in forward; need once")
    cut_node = cut[0]

    feat_graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for node in graph.nodes:
        env[node] = feat_graph.node_copy(node, lambda n: env[n])
        if node is cut_node:
            break
    feat_graph.output(env[cut_node])
    features = fx.GraphModule(tracer.root, feat_graph)
    features.graph.eliminate_dead_code()
    features.recompile()

    head_graph = fx.Graph()
    # a fresh argument name: the traced model may itself have an input called "z"
    taken = {n.target for n in graph.nodes if n.op == "placeholder"}
    z = head_graph.placeholder(next(f"z{i}" if i else "z" for i in range(len(taken) + 1)
                                    if (f"z{i}" if i else "z") not in taken))
    env = {}
    inputs = []
    for node in graph.nodes:
        if node is cut_node:
            env[node] = z
            continue
        env[node] = head_graph.node_copy(node, lambda n: env[n])
        if node.op == "placeholder":
            inputs.append(env[node])
    head = fx.GraphModule(tracer.root, head_graph)
    head_graph = head.graph
    head_graph.eliminate_dead_code()
    for node in inputs:
        if node.users:
            users = ", ".join(str(u.target) for u in node.users)
            raise UserError(
                f"the network after layer {name!r} still reads the input directly "
                f"(through {users}); choose a layer that all later computation goes through"
            )
        head_graph.erase_node(node)
    head.recompile()
    return SplitModel(features=features, head=head, layer=name)


def _split_script_sequential(model: torch.jit.ScriptModule, name: str) -> SplitModel:
    """TorchScript cannot be traced by fx: split a scripted ``nn.Sequential`` by children."""
    children = list(model.named_children())
    names = [n for n, _ in children]
    if getattr(model, "original_name", "") != "Sequential" or name not in names:
        raise UserError("a TorchScript model can only be split at a top-level layer of a "
                        "scripted nn.Sequential; for other models pass the Python model "
                        "(e.g. --arch NAME --weights FILE)")
    i = names.index(name)
    return SplitModel(features=nn.Sequential(OrderedDict(children[: i + 1])),
                      head=nn.Sequential(OrderedDict(children[i + 1:])), layer=name)


_PL_NAMES = {cls.__name__ for cls in PL_MODULES}


def check_head_modules(head: nn.Module, layer: str = "") -> list[str]:
    """Names of the head's operations that are not known to be piecewise linear."""
    if not isinstance(head, fx.GraphModule):  # a Sequential of TorchScript modules
        return [f"module {n!r} ({m.original_name})" for n, m in head.named_modules()
                if n and not list(m.children())
                and getattr(m, "original_name", type(m).__name__) not in _PL_NAMES]
    bad = []
    for node in head.graph.nodes:
        if node.op == "call_module":
            mod = head.get_submodule(node.target)
            if not isinstance(mod, PL_MODULES):
                bad.append(f"module {node.target!r} ({type(mod).__name__})")
        elif node.op == "call_function":
            fn = node.target
            if fn in PL_FUNCTIONS:
                continue
            if fn in SCALING_FUNCTIONS:
                tensors = [a for a in node.args if isinstance(a, fx.Node)]
                if len(tensors) <= 1 and not (fn is operator.truediv and
                                              isinstance(node.args[1], fx.Node)):
                    continue
            bad.append(f"function {getattr(fn, '__name__', fn)!r}")
        elif node.op == "call_method" and node.target not in PL_METHODS:
            bad.append(f"method {node.target!r}")
    return bad


def check_head_numerically(head: nn.Module, points: torch.Tensor, *, n_points: int = 8,
                           seed: int = 0, rtol: float = 1e-7) -> float:
    """Share of ``points`` around which ``G`` is affine, tested in float64.

    With ``d`` a random direction of norm ``1e-4 * (|z| + 1)``, ``G`` is affine on the
    segment ``[z - d, z + d]`` iff ``G(z + d) + G(z - d) - 2 G(z) = 0``; the test allows
    ``rtol`` times ``|G(z + d) - G(z)|``. A point where the segment crosses into another
    linear piece fails, so a PL head scores close to 1 and a smooth head (GELU, Sigmoid:
    second difference ~ ``|d|^2 G''``) close to 0.
    """
    with warnings.catch_warnings():  # TorchScript parameters warn about .grad on copy
        warnings.simplefilter("ignore", UserWarning)
        head64 = copy.deepcopy(head).double().eval()
    gen = torch.Generator().manual_seed(seed)
    pts = points[: n_points].detach().to("cpu", torch.float64)
    ok = 0
    with torch.no_grad():
        for z in pts:
            z = z.unsqueeze(0)
            d = torch.randn(z.shape, generator=gen, dtype=torch.float64)
            d *= 1e-4 * (z.norm() + 1) / d.norm()
            g0, gp, gm = head64(z), head64(z + d), head64(z - d)
            second = (gp + gm - 2 * g0).norm()
            ok += bool(second <= rtol * (gp - g0).norm() + 1e-13 * (g0.norm() + 1))
    return ok / max(len(pts), 1)


def linear_prefix(head: nn.Module) -> nn.Linear | None:
    """The head's first ``nn.Linear`` when the features reach it only through flattening
    (``Flatten(1)``, ``torch.flatten(x, 1)``, Dropout, Identity), else ``None``."""
    if not isinstance(head, fx.GraphModule):
        return None
    node = next(n for n in head.graph.nodes if n.op == "placeholder")
    while len(node.users) == 1:
        (user,) = node.users
        if user.op == "call_module":
            mod = head.get_submodule(user.target)
            if isinstance(mod, nn.Linear):
                return mod
            if not (isinstance(mod, (nn.Dropout, nn.Identity)) or (
                    isinstance(mod, nn.Flatten) and mod.start_dim == 1 and mod.end_dim == -1)):
                return None
        elif not (user.op == "call_function" and user.target is torch.flatten
                  and tuple(user.args[1:]) == (1,) and not user.kwargs):
            return None
        node = user
    return None


def layer_table(model: nn.Module) -> list[tuple[str, str, str]]:
    """For every named submodule: its name, type, and whether the network can be split
    there with a piecewise-linear head (``"piecewise linear"``, or the reason not)."""
    rows = []
    for name, module in model.named_modules():
        if not name:
            continue
        try:
            split = split_model(model, name)
            bad = check_head_modules(split.head)
            status = "piecewise linear" if not bad else f"not PL: {bad[0]}"
        except UserError as exc:
            msg = str(exc)
            status = ("no split: a skip connection bypasses it" if "reads the input" in msg
                      else "no split: called more than once" if "times in forward" in msg
                      else f"no split: {msg}")
        rows.append((name, type(module).__name__, status))
    return rows


@contextlib.contextmanager
def inference_mode(model: nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode and restore every module's training flag on exit."""
    flags = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        yield
    finally:
        for m, flag in flags:
            m.training = flag
