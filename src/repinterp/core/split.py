"""Split a CNN at a feature layer into psi (features) and G (head).

The split is done with :mod:`torch.fx`: the network is traced with the chosen layer
kept as a leaf, the graph is cut at that layer's output and every later node becomes
the head ``G``. Both halves share the user's submodules (no copy of the weights) and
nothing is registered on the user's model. A model that cannot be traced is split by
forward hooks (:mod:`repinterp.core.hooked`).

Whether the head is piecewise linear is :mod:`repinterp.core.verdict`'s to say;
:mod:`repinterp.core.layers` applies it to every candidate layer.
"""
from __future__ import annotations

import difflib
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.fx as fx
from torch import nn

from .errors import UserError, first_line
from .hooked import HookedFeatures, HookedHead
from .verdict import head_verdict

__all__ = ["SplitModel", "linear_prefix", "resolve_layer", "split_model"]


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


def _copy(graph: fx.Graph, node: fx.Node, env: dict[fx.Node, fx.Node], layer: str
          ) -> fx.Node:
    """``node`` copied into ``graph``, its inputs mapped by ``env``; a traced graph whose
    nodes are not in the order they are used (timm's LeViT) cannot be cut."""
    try:
        return graph.node_copy(node, lambda n: env[n])
    except KeyError as exc:
        raise UserError(f"the traced graph of the model cannot be cut after {layer!r} "
                        f"({node.name} uses {exc}, which the graph makes later)") from None


def _keep_only_logits(graph: fx.Graph) -> None:
    """Make a head whose model returns a tuple, list or dict return its logits only (as
    :func:`~repinterp.core.logits.logits_of` reads the model's output); a dict without
    ``"logits"`` is refused by its keys."""
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
