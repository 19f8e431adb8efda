"""Split a CNN at a feature layer into psi (features) and G (head).

The split is done with :mod:`torch.fx`: the network is traced with the chosen layer
kept as a leaf, the graph is cut at that layer's output and every later node becomes
the head ``G``. Both halves share the user's submodules (no copy of the weights) and
nothing is registered on the user's model.

The head must be piecewise linear (PL) for the boundaries of METHOD §1 to be exact.
:func:`head_verdict` classifies every operation of the traced head: affine, a kink
(ReLU-like, max-pooling) or neither; :func:`layer_table` and :func:`suggest_layer` apply
it to every candidate layer.
"""
from __future__ import annotations

import difflib
import operator
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from .errors import UserError, first_line

__all__ = ["AFFINE", "NOT_PIECEWISE_LINEAR", "PIECEWISE_LINEAR", "HeadVerdict", "LayerInfo",
           "SplitModel", "head_verdict", "layer_table", "linear_prefix", "logits_of",
           "resolve_layer", "split_model", "suggest_layer"]


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
        return SplitModel(features=HookedFeatures(model, name),
                          head=HookedHead(model, name, first_line(exc).split(". ")[0]),
                          layer=name)
    cut = [n for n in graph.nodes if n.op == "call_module" and n.target == name]
    if len(cut) != 1:
        raise UserError(f"layer {name!r} is called {len(cut)} times in forward; need once")
    cut_node = cut[0]

    feat_graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for node in graph.nodes:
        env[node] = _copy(feat_graph, node, env, name)
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
        env[node] = _copy(head_graph, node, env, name)
        if node.op == "placeholder":
            inputs.append(env[node])
    head = fx.GraphModule(tracer.root, head_graph)
    head_graph = head.graph
    _keep_only_logits(head_graph)
    _drop_checks_before_the_cut(head_graph, z)
    head_graph.eliminate_dead_code()
    for node in inputs:
        if node.users:
            users = ", ".join(str(u.target) for u in node.users)
            verdict = head_verdict(head)
            also = "" if verdict.exact else f"; the rest is also {verdict.describe()}"
            raise UserError(
                f"the network after layer {name!r} still reads the input directly "
                f"(through {users}); choose a layer that all later computation goes "
                f"through{also}")
        head_graph.erase_node(node)
    head.recompile()
    return SplitModel(features=features, head=head, layer=name)


class _Reached(Exception):
    """Raised by :class:`HookedFeatures`' hook to stop the forward pass at the layer."""


class HookedFeatures(nn.Module):
    """``psi`` of a model that :mod:`torch.fx` cannot trace (Hugging Face's classifiers,
    whose ``forward`` branches on tensor shapes): the model run up to ``layer``, whose
    output (the first item of a tuple) a forward hook takes, stopping the pass there.
    The hook lives only during the call, on the copy the caller runs."""

    def __init__(self, model: nn.Module, layer: str):
        super().__init__()
        self.model = model
        self.layer = layer

    def forward(self, x: torch.Tensor) -> Any:
        taken: list[Any] = []

        def take(_m: nn.Module, _i: Any, out: Any) -> None:
            taken.append(out)
            raise _Reached

        handle = self.model.get_submodule(self.layer).register_forward_hook(take)
        try:
            self.model(x)
        except _Reached:
            pass
        finally:
            handle.remove()
        if not taken:
            raise UserError(f"layer {self.layer!r} is not called by the model's forward")
        if isinstance(taken[0], tuple) and taken[0] and isinstance(taken[0][0], torch.Tensor):
            return taken[0][0]          # a Hugging Face block's (hidden states, ...)
        if not isinstance(taken[0], torch.Tensor):
            raise UserError(f"layer {self.layer!r} outputs a {type(taken[0]).__name__}, not "
                            "a tensor; choose a layer inside it (see `repinterp layers`)")
        return taken[0]


class HookedHead(nn.Module):
    """``G`` of a model that :mod:`torch.fx` cannot trace: the whole model run on zero
    images of :attr:`input_shape` (set by the caller once known) with ``layer``'s output
    (or the first item of the tuple it returns) replaced by ``z``; its logits
    (:func:`logits_of`). Correct when everything after the layer depends on the input
    only through it, which nothing here can read from a graph:
    :meth:`repinterp.core.network.SplitNetwork.check_split` compares it with the model on
    real images and refuses a disagreement. Each pass also computes the layers
    before the cut (on the zeros): a pass costs a forward of the whole model. Its verdict
    is "tangent" (untraced: nothing says it is piecewise linear)."""

    def __init__(self, model: nn.Module, layer: str, why: str = ""):
        super().__init__()
        self.model = model
        self.layer = layer
        self.why = why
        self.input_shape: tuple[int, ...] | None = None

    def forward(self, z: torch.Tensor) -> Any:
        if self.input_shape is None:
            raise UserError("the input shape of an untraced head is not known yet")
        calls = []

        def put(_m: nn.Module, _i: Any, out: Any) -> Any:
            calls.append(1)
            if len(calls) > 1:
                raise UserError(f"layer {self.layer!r} is called more than once in forward")
            return (z, *out[1:]) if isinstance(out, tuple) else z

        x = torch.zeros(len(z), *self.input_shape, dtype=z.dtype, device=z.device)
        handle = self.model.get_submodule(self.layer).register_forward_hook(put)
        try:
            return logits_of(self.model(x))
        finally:
            handle.remove()


def _copy(graph: fx.Graph, node: fx.Node, env: dict[fx.Node, fx.Node], layer: str
          ) -> fx.Node:
    """``node`` copied into ``graph``, its inputs mapped by ``env``; a traced graph whose
    nodes are not in the order they are used (timm's LeViT) cannot be cut."""
    try:
        return graph.node_copy(node, lambda n: env[n])
    except KeyError as exc:
        raise UserError(f"the traced graph of the model cannot be cut after {layer!r} "
                        f"({node.name} uses {exc}, which the graph makes later)") from None


def logits_of(out: Any) -> Any:
    """The logits in a model's output: the tensor itself, the first item of a tuple or
    list (``(logits, aux)``), the ``"logits"`` entry of a dict or the ``.logits`` of an
    object (Hugging Face's ``ModelOutput``); anything else unchanged."""
    if isinstance(out, (tuple, list)) and out:
        return out[0]
    if isinstance(out, dict):
        return out.get("logits", out)
    logits = getattr(out, "logits", None)
    return logits if isinstance(logits, torch.Tensor) else out


def _keep_only_logits(graph: fx.Graph) -> None:
    """Make a head whose model returns a tuple, list or dict return its logits only (as
    :func:`logits_of` reads the model's output); a dict without ``"logits"`` is refused
    by its keys."""
    out = next(n for n in graph.nodes if n.op == "output")
    value = out.args[0]
    if isinstance(value, (tuple, list)) and value:
        out.args = (value[0],)
    elif isinstance(value, dict):
        if "logits" not in value:
            raise UserError(f"the model returns a dict with keys {sorted(value)}, none of "
                            "them 'logits'; wrap it so that forward returns the logits")
        out.args = (value["logits"],)


#: Calls kept by fx's dead-code elimination although nothing uses their result.
_CHECKS = {torch._assert, getattr(torch, "_assert_async", torch._assert)}


def _drop_checks_before_the_cut(graph: fx.Graph, z: fx.Node) -> None:
    """Remove from a head's graph the checks (``torch._assert``) on values computed
    before the cut: they ran in the feature extractor already, and being impure they
    would keep the input alive in the head (torchvision's ViT asserts the input's size
    and the encoder's input's rank before its blocks)."""
    after = {z}
    for node in graph.nodes:
        if any(a in after for a in node.all_input_nodes):
            after.add(node)
    for node in reversed(list(graph.nodes)):
        if node.op == "call_function" and node.target in _CHECKS and node not in after \
                and not node.users:
            graph.erase_node(node)


def _split_script_sequential(model: torch.jit.ScriptModule, name: str) -> SplitModel:
    """TorchScript cannot be traced by fx: split a scripted ``nn.Sequential`` by children."""
    children = list(model.named_children())
    names = [n for n, _ in children]
    if getattr(model, "original_name", "") != "Sequential" or name not in names:
        raise UserError("a TorchScript model can only be split at a top-level layer of a "
                        "scripted nn.Sequential; for other models pass the Python model "
                        "(e.g. {param})", param="weights",
                        api="arch=NAME with weights=FILE")
    i = names.index(name)
    return SplitModel(features=nn.Sequential(OrderedDict(children[: i + 1])),
                      head=nn.Sequential(OrderedDict(children[i + 1:])), layer=name)


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
        (:attr:`LayerInfo.problem`)."""
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


@dataclass(frozen=True)
class LayerInfo:
    """A candidate split: the layer's name and type, and the verdict on the head after it
    (``verdict`` is None and ``problem`` says why when the network cannot be cut there)."""

    name: str
    type: str
    verdict: HeadVerdict | None
    problem: str | None = None

    def describe(self) -> str:
        if self.verdict is None:
            return f"no split: {self.problem}"
        return self.verdict.describe()


def layer_info(model: nn.Module, name: str) -> LayerInfo:
    """The verdict on the head after the submodule ``name`` (one trace of ``model``)."""
    module = model.get_submodule(name)
    try:
        return LayerInfo(name, type(module).__name__,
                         head_verdict(split_model(model, name).head))
    except UserError as exc:
        msg = str(exc)
        problem = ("a skip connection bypasses it" if "reads the input" in msg
                   else "called more than once" if "times in forward" in msg else msg)
        return LayerInfo(name, type(module).__name__, None, problem)


def layer_table(model: nn.Module, max_depth: int | None = None) -> list[LayerInfo]:
    """Every named submodule of ``model`` (down to ``max_depth`` dots-plus-one levels:
    ``1`` = the children) as a candidate split, with its verdict. Each row costs one
    trace of the model."""
    return [layer_info(model, name) for name, _ in model.named_modules()
            if name and (max_depth is None or name.count(".") < max_depth)]


def _is_global_pool(module: nn.Module) -> bool:
    """A pooling to ``1 x 1`` (``AdaptiveAvgPool2d(1)``), or a module without convolutions
    that wraps one (timm's ``SelectAdaptivePool2d``); a squeeze-excitation block, which
    pools inside a convolutional block, is not one."""
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        return module.output_size in (1, (1, 1))
    return not _has_conv(module) and any(_is_global_pool(c) for c in module.children())


def _has_conv(module: nn.Module) -> bool:
    return any(isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) for m in module.modules())


def suggest_layer(model: nn.Module, rows: list[LayerInfo] | None = None) -> str | None:
    """The layer to split at: the last convolutional block whose head is still
    piecewise linear with a kink (the paper splits after the last convolutional block);
    for a smooth network (no such block), the last block whose head is not affine
    (tangent boundaries), and for a transformer the last of its blocks. Nothing after a
    global pooling is proposed (its maps are ``1 x 1``).

    From the model's top level: among the children that hold a convolution, take the
    last one whose head has a kink, unless the last of them has an affine head and is
    made of blocks: then the same inside it, if it finds one (ResNet's ``layer4`` ->
    ``layer4.0``). ``rows`` reuses verdicts already computed (:func:`layer_table`); the
    others are computed for the layers looked at only.
    """
    info = {r.name: r for r in rows or []}

    def kind(name: str) -> str | None:
        if name not in info:
            info[name] = layer_info(model, name)
        v = info[name].verdict
        return v.kind if v is not None else None

    def pick(prefix: str, module: nn.Module) -> str | None:
        convs = []
        for n, m in module.named_children():
            if _is_global_pool(m):          # what follows sees 1 x 1 maps (timm's
                break                       # MobileNetV3: pool, then conv_head)
            if _has_conv(m):
                convs.append((f"{prefix}{n}", m))
        if not convs:
            return None
        last_name, last = convs[-1]
        blocks = [c for c in last.children() if _has_conv(c) and list(c.children())]
        inner = pick(f"{last_name}.", last) if kind(last_name) == AFFINE and blocks else None
        good = [n for n, _ in convs if kind(n) == PIECEWISE_LINEAR] or \
            [n for n, _ in convs if kind(n) == NOT_PIECEWISE_LINEAR]
        return inner or (good[-1] if good else None)

    def last_block(outermost: bool = False) -> str | None:
        """Without a convolutional block (a vision transformer): the last block of a
        stack of blocks of one type whose head is not affine, looked at from the end;
        ``outermost``: only stacks that are not inside a block of another stack (a
        Hugging Face ResNet's stages, not the layers inside a residual block)."""
        stacks = [name for name, m in model.named_modules()
                  if isinstance(m, (nn.Sequential, nn.ModuleList)) and len(m) >= 2
                  and len({type(c) for c in m}) == 1 and list(m[0].children())]
        if outermost:
            stacks = [s for s in stacks if not any(s.startswith(f"{t}.") for t in stacks)]
        blocks = [f"{name}.{n}" if name else n for name in stacks
                  for n, _ in model.get_submodule(name).named_children()]
        return next((b for b in reversed(blocks)
                     if kind(b) in (PIECEWISE_LINEAR, NOT_PIECEWISE_LINEAR)), None)

    choice = pick("", model)
    verdict = info[choice].verdict if choice is not None else None
    if verdict is not None and verdict.untraced:    # no graph (Hugging Face): last block
        return last_block(outermost=True) or choice
    if choice is None or kind(choice) == NOT_PIECEWISE_LINEAR:
        # a transformer with a convolutional stem (Swin's or BEiT's patch embedding,
        # MLP-Mixer's stem): its last block, when that comes after the stem
        order = {n: i for i, (n, _) in enumerate(model.named_modules())}
        block = last_block()
        if block is not None and (choice is None or (
                order[block] > order[choice] and not block.startswith(choice + "."))):
            return block
    return choice
