"""Candidate layers to split at: the head's verdict after each, and the suggested one.

:func:`layer_table` applies :func:`repinterp.core.verdict.head_verdict` to every
candidate layer; :func:`suggest_layer` picks the layer to split at.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .errors import UserError
from .split import split_model
from .verdict import AFFINE, NOT_PIECEWISE_LINEAR, PIECEWISE_LINEAR, HeadVerdict, head_verdict

__all__ = ["LayerInfo", "layer_info", "layer_table", "suggest_layer"]


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


def _type_name(module: nn.Module) -> str:
    """The module's class name, a TorchScript module's original one included."""
    return str(getattr(module, "original_name", None) or type(module).__name__)


def layer_info(model: nn.Module, name: str) -> LayerInfo:
    """The verdict on the head after the submodule ``name`` (one trace of ``model``)."""
    module = dict(model.named_modules())[name]      # TorchScript has no get_submodule
    try:
        return LayerInfo(name, _type_name(module),
                         head_verdict(split_model(model, name).head))
    except UserError as exc:
        msg = str(exc)
        problem = ("a skip connection bypasses it" if "reads the input" in msg
                   else "called more than once" if "times in forward" in msg else msg)
        return LayerInfo(name, _type_name(module), None, problem)


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
    return any(isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d))
               or getattr(m, "original_name", None) in ("Conv1d", "Conv2d", "Conv3d")
               for m in module.modules())


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
                  for n, _ in dict(model.named_modules())[name].named_children()]
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
