"""A model that :mod:`torch.fx` cannot trace, split by forward hooks.

Hugging Face's classifiers (whose ``forward`` branches on tensor shapes) are split
without a graph: ``psi`` runs the model up to the layer and takes its output
(:class:`HookedFeatures`), ``G`` runs the whole model with the layer's output replaced
(:class:`HookedHead`). Their hooks live only during a call, on the private copy that
runs it.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .errors import UserError
from .logits import logits_of

__all__ = ["HookedFeatures", "HookedHead"]


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
