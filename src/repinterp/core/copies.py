"""The user's model, only read: the compute device checked, private copies made (deep
copies in eval mode, without parameter gradients, on that device), a fingerprint that
tells when its weights changed, and eval mode around a pass over the model itself that
restores its flags."""
from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterator

import torch
from torch import fx, nn

from .errors import UserError, first_line

__all__ = ["check_device", "inference_mode", "model_fingerprint", "private_copy"]


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device``, refused when it is not a device name or not
    available on this machine."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise UserError(f"unknown device {device!r} (e.g. cpu, cuda, cuda:1, mps)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device {device!r}: no CUDA GPU is available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(f"device {device!r}: this machine has "
                            f"{torch.cuda.device_count()} CUDA GPU(s)")
    elif dev.type == "mps" and not (hasattr(torch.backends, "mps")
                                    and torch.backends.mps.is_available()):
        raise UserError(f"device {device!r}: MPS is not available on this machine")
    elif dev.type not in ("cpu", "cuda", "mps"):
        try:
            torch.empty(0, device=dev)
        except (RuntimeError, AssertionError) as exc:
            raise UserError(f"device {device!r} is not available ({first_line(exc)})") \
                from None
    return dev


def model_fingerprint(model: nn.Module) -> tuple:
    """Identity, storage and version counter of every parameter and buffer: changes when
    any of them is replaced or modified in place (``load_state_dict``, an optimiser step)."""
    return tuple((name, t.data_ptr(), t._version, tuple(t.shape), t.dtype, t.device)
                 for name, t in [*model.named_parameters(), *model.named_buffers()])


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


def _no_inplace_on_inputs(net: fx.GraphModule) -> None:
    """Make every in-place operation applied straight to an input of ``net`` out of place
    (DenseNet's head starts with ``F.relu(features, inplace=True)``): it would overwrite
    the caller's tensor (stored reference features) and cannot run on a leaf that
    requires a gradient (the boundary search)."""
    changed = False
    for node in net.graph.nodes:
        if not (node.args and isinstance(node.args[0], fx.Node)
                and node.args[0].op == "placeholder"):
            continue
        if node.op == "call_function" and node.kwargs.get("inplace"):
            node.kwargs = {**node.kwargs, "inplace": False}
            changed = True
        elif node.op == "call_module":
            sub = net.get_submodule(str(node.target))
            if getattr(sub, "inplace", False) is True:
                sub.inplace = False  # type: ignore[assignment]
    if changed:
        net.recompile()


def private_copy(module: nn.Module, device: torch.device, channels_last: bool = False
                  ) -> nn.Module:
    """A deep copy in eval mode, without parameter gradients, on ``device``; with
    ``channels_last``, in that memory format with in-place ReLUs where their input has no
    other user (half the memory traffic; identical numbers)."""
    with warnings.catch_warnings():  # TorchScript parameters warn about .grad on copy
        warnings.simplefilter("ignore", UserWarning)
        net = copy.deepcopy(module).to(device).eval()
    for p in net.parameters():  # no parameter gradients are ever needed
        if p.is_leaf:
            p.requires_grad_(False)
    if isinstance(net, fx.GraphModule):
        _no_inplace_on_inputs(net)
    if channels_last:
        for t in [*net.parameters(), *net.buffers()]:   # 4-d only (Swin keeps 5-d ones)
            if t.dim() == 4:
                t.data = t.data.contiguous(memory_format=torch.channels_last)
        if isinstance(net, fx.GraphModule):
            for node in net.graph.nodes:
                if node.op == "call_module" and isinstance(net.get_submodule(node.target),
                                                           nn.ReLU):
                    src = node.args[0]
                    if isinstance(src, fx.Node) and len(src.users) == 1 \
                            and src.op != "placeholder":
                        relu = net.get_submodule(str(node.target))
                        relu.inplace = True  # type: ignore[assignment]
    return net
