"""The head's verdict: piecewise linear (exact boundaries) or not (tangent boundaries).

The head must be piecewise linear (PL) for the boundaries of METHOD §1 to be exact.
:func:`head_verdict` classifies every operation of the traced head: affine, a kink
(ReLU-like, max-pooling) or neither.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from .hooked import HookedHead

__all__ = ["AFFINE", "NOT_PIECEWISE_LINEAR", "PIECEWISE_LINEAR", "HeadVerdict",
           "head_verdict"]


#: Affine module types (BatchNorm and Dropout in eval mode, as every private copy runs).
AFFINE_MODULES: tuple[type[nn.Module], ...] = (
    nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.Flatten,
    nn.Unflatten, nn.Identity, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.Dropout,
    nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.ZeroPad2d,
    nn.ConstantPad2d, nn.ChannelShuffle,
)
#: Piecewise-linear module types with kinks.
KINK_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.LeakyReLU, nn.ReLU6, nn.Hardtanh, nn.PReLU, nn.MaxPool1d, nn.MaxPool2d,
    nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
)
AFFINE_FUNCTIONS = {
    operator.add, operator.iadd, operator.sub, operator.isub, operator.neg,
    operator.getitem, operator.pos, torch.add, torch.sub, torch.neg, torch.flatten,
    torch.cat, torch.concat, torch.stack, torch.reshape, torch.mean, torch.sum,
    torch.transpose, torch.permute, torch.squeeze, torch.unsqueeze, torch.chunk,
    torch.split, torch.narrow, torch.roll, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
    F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, F.dropout,
    F.dropout1d, F.dropout2d, F.linear, F.conv1d, F.conv2d, F.pad, F.batch_norm,
    F.channel_shuffle, torch.channel_shuffle,
}
KINK_FUNCTIONS = {
    torch.relu, F.relu, F.relu_, F.leaky_relu, F.relu6, F.hardtanh, F.prelu,
    F.max_pool1d, F.max_pool2d, F.max_pool3d, F.adaptive_max_pool1d, F.adaptive_max_pool2d,
    torch.maximum, torch.minimum, torch.max, torch.min, torch.clamp, torch.abs,
}
#: Linear in one argument when every other argument is a constant (does not depend on z).
SCALING_FUNCTIONS = {operator.mul, operator.imul, operator.truediv, torch.mul,
                     torch.div, operator.matmul, torch.matmul}
AFFINE_METHODS = {
    "view", "reshape", "flatten", "add", "add_", "sub", "sub_", "mean", "sum", "permute",
    "contiguous", "squeeze", "unsqueeze", "transpose", "expand", "expand_as", "__add__",
    "__sub__", "__radd__", "neg", "chunk", "split", "narrow", "repeat", "unflatten",
    "view_as", "reshape_as", "clone", "to", "type_as", "float", "double",
}
KINK_METHODS = {"relu", "relu_", "clamp", "clamp_", "clamp_min", "clamp_min_", "max",
                "min", "abs", "maximum", "minimum"}
SCALING_METHODS = {"mul", "mul_", "div", "div_", "__mul__", "__truediv__", "__rmul__",
                   "matmul"}
#: Shape queries: their results are integers, not features.
SHAPE_METHODS = {"size", "dim", "numel", "shape", "__len__"}
SHAPE_FUNCTIONS = {getattr, len, torch.numel}

AFFINE, PIECEWISE_LINEAR, NOT_PIECEWISE_LINEAR = "affine", "piecewise linear", \
    "not piecewise linear"


@dataclass(frozen=True)
class HeadVerdict:
    """What the traced graph of a head says about it.

    ``kind`` is :data:`AFFINE` (no kink after the layer: every decision region is a
    whole class, so regions explain nothing), :data:`PIECEWISE_LINEAR` or
    :data:`NOT_PIECEWISE_LINEAR` (smooth: SiLU, GELU, LayerNorm, attention, ...);
    ``reasons`` names each operation that is not piecewise linear or could not be
    classified. :attr:`mode` is what repinterp does with it.
    """

    kind: str
    reasons: tuple[str, ...] = ()

    @property
    def exact(self) -> bool:
        """True when boundaries are exact: the head is (piecewise) affine."""
        return self.kind != NOT_PIECEWISE_LINEAR

    @property
    def mode(self) -> str:
        """``"exact"`` (piecewise linear or affine: the boundaries are the network's
        own; after an affine head every region is a whole class) or ``"tangent"``
        (smooth: each boundary is the tangent plane of the decision surface at a point
        where the top two classes tie, and regions are first-order approximations whose
        fidelity is measured). A layer the network cannot be cut at has no verdict
        (:attr:`repinterp.core.layers.LayerInfo.problem`)."""
        return "tangent" if self.kind == NOT_PIECEWISE_LINEAR else "exact"

    @property
    def untraced(self) -> bool:
        """True for a head :mod:`torch.fx` could not trace (:class:`HookedHead`): its
        operations were not looked at."""
        return bool(self.reasons) and self.reasons[0].startswith("untraced")

    def describe(self) -> str:
        if self.kind == PIECEWISE_LINEAR:
            return "exact: piecewise linear"
        if self.kind == AFFINE:
            return "exact: affine head, every region is a whole class (uninformative)"
        more = f" and {len(self.reasons) - 1} more" if len(self.reasons) > 1 else ""
        if self.untraced:
            return f"tangent: {self.reasons[0]}, the head run through hooks"
        return f"tangent: smooth, {self.reasons[0]}{more}"


def _module_kind(mod: nn.Module) -> str | None:
    """``"affine"``, ``"kink"`` or None (unknown) for a leaf module of the graph. A known
    type whose ``forward`` was overridden by a subclass is unknown."""
    for kinds, label in ((AFFINE_MODULES, "affine"), (KINK_MODULES, "kink")):
        base = next((t for t in kinds if isinstance(mod, t)), None)
        if base is not None:
            return label if type(mod).forward is base.forward else None
    return None


_TABLES: dict[str, tuple[Any, Any, Any, Any]] = {
    "call_function": (AFFINE_FUNCTIONS, KINK_FUNCTIONS, SCALING_FUNCTIONS,
                      {operator.truediv, torch.div}),
    "call_method": (AFFINE_METHODS, KINK_METHODS, SCALING_METHODS,
                    {"div", "div_", "__truediv__"}),
}


def _node_kind(head: fx.GraphModule, node: fx.Node, varying: set[fx.Node]) -> str | None:
    """``"affine"``, ``"kink"`` or None for a node whose output depends on the input."""
    if node.op == "call_module":
        return _module_kind(head.get_submodule(str(node.target)))
    if node.op not in _TABLES:
        return None
    affine, kink, scaling, division = _TABLES[node.op]
    target: Any = node.target
    if target in affine:
        return "affine"
    if target in kink:
        return "kink"
    if target in scaling:  # linear iff one factor moves and it is not a divisor
        moving = [a for a in node.all_input_nodes if a in varying]
        divisor_moves = target in division and len(node.args) > 1 and node.args[1] in varying
        return "affine" if len(moving) == 1 and not divisor_moves else None
    return None


def _describe(head: nn.Module, node: fx.Node) -> str:
    if node.op == "call_module":
        mod = head.get_submodule(str(node.target))
        return f"module {node.target!r} ({type(mod).__name__})"
    if node.op == "call_function":
        return f"function {getattr(node.target, '__name__', str(node.target))!r}"
    return f"method {node.target!r}"


def head_verdict(head: nn.Module) -> HeadVerdict:
    """Classify every operation of the head from its traced graph.

    Only operations whose output depends on the head's input are classified; shape
    queries (``x.size(0)``) and constants are skipped. A product or quotient is affine
    when exactly one factor depends on the input (the divisor must not). The head is
    affine when every operation is, piecewise linear when the rest are ReLU-like kinks or
    max-pooling, and otherwise not piecewise linear, with the operations named.
    Departure: an operation that cannot be classified (an unknown function, a known
    module whose ``forward`` a subclass overrode) makes the verdict "not piecewise
    linear" rather than being tested numerically: no single-step numerical test tells a
    deep ReLU head from a smooth one (``docs/method.md``).
    """
    if isinstance(head, HookedHead):
        return HeadVerdict(NOT_PIECEWISE_LINEAR, (f"untraced (torch.fx: {head.why})",))
    if not isinstance(head, fx.GraphModule):  # a Sequential of TorchScript modules
        return _script_verdict(head)
    varying: set[fx.Node] = set()
    bad: list[str] = []
    kinks = 0
    for node in head.graph.nodes:
        if node.op == "placeholder":
            varying.add(node)
            continue
        if node.op in ("output", "get_attr") or not any(
                a in varying for a in node.all_input_nodes):
            continue
        if (node.op == "call_method" and node.target in SHAPE_METHODS) or (
                node.op == "call_function" and node.target in SHAPE_FUNCTIONS):
            continue
        varying.add(node)
        kind = _node_kind(head, node, varying)
        if kind is None:
            bad.append(_describe(head, node))
        kinks += kind == "kink"
    if bad:
        return HeadVerdict(NOT_PIECEWISE_LINEAR, tuple(bad))
    return HeadVerdict(PIECEWISE_LINEAR if kinks else AFFINE)


def _script_verdict(head: nn.Module) -> HeadVerdict:
    names = {"affine": {t.__name__ for t in AFFINE_MODULES},
             "kink": {t.__name__ for t in KINK_MODULES}}
    bad, kinks = [], 0
    for name, mod in head.named_modules():
        if not name or list(mod.children()):
            continue
        kind = getattr(mod, "original_name", type(mod).__name__)
        if kind in names["kink"]:
            kinks += 1
        elif kind not in names["affine"]:
            bad.append(f"module {name!r} ({kind})")
    if bad:
        return HeadVerdict(NOT_PIECEWISE_LINEAR, tuple(bad))
    return HeadVerdict(PIECEWISE_LINEAR if kinks else AFFINE)
