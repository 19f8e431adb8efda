"""The user's model: a named architecture (the demo's, torchvision's, timm's) with an
optional state dict or torchvision weights, a TorchScript file, or a trusted pickle, in
eval mode with a clear error for every bad file; and what the model tells about its
inputs and outputs (input channels, number of classes, a layer's feature map).
"""
from __future__ import annotations

import difflib
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn

from ..core.errors import UserError, first_line
from .formats import checked_path

__all__ = ["build_arch", "check_feature_map", "expected_channels", "load_model",
           "model_classes", "torchvision_weights"]


def expected_channels(model: nn.Module) -> int | None:
    """Input channels of the first convolution, if there is one."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv1d, nn.Conv3d)):
            return m.in_channels
        channels = getattr(m, "in_channels", None)
        if hasattr(m, "original_name") and channels is not None:
            return int(channels)
    return None


def check_feature_map(model: nn.Module, layer: str, image: torch.Tensor) -> None:
    """Refuse, before any fit, a layer whose output is not a ``C x H x W`` map (the
    reports draw heat maps on it): one image through the layers up to it."""
    from ..core.copies import inference_mode
    from ..core.split import split_model
    features = split_model(model, layer).features
    param = next(model.parameters(), None)
    x = image[None].to(param.dtype if param is not None else torch.float32)
    try:
        with torch.no_grad(), inference_mode(model):
            out = features(x)
    except Exception:  # noqa: BLE001 - a bad input size is reported by the fit itself
        return
    if isinstance(out, torch.Tensor) and out.ndim == 3:
        from ..core.heatmap import token_grid
        try:
            token_grid(out[:1])                  # tokens on a square grid of patches
            return
        except ValueError:
            pass
    if isinstance(out, torch.Tensor) and out.ndim != 4:
        raise UserError(f"layer {layer!r} outputs {tuple(out.shape[1:])}, not a feature map "
                        "C x H x W nor tokens on a square grid of patches: heat maps need "
                        "one; choose an earlier layer (see `repinterp layers`)")


def model_classes(model: nn.Module, image: torch.Tensor) -> int:
    """The number of classes ``model`` scores: one image through it (no gradients; the
    model is left as it was); 0 when it cannot tell (an image the model refuses is
    reported by the fit's own checks, with a better message)."""
    from ..core.copies import inference_mode
    from ..core.logits import logits_of
    param = next(model.parameters(), None)
    x = image[None].to(param.dtype if param is not None else torch.float32)
    try:
        with torch.no_grad(), inference_mode(model):
            out = model(x)
    except Exception:  # noqa: BLE001 - the fit names the problem
        return 0
    out = logits_of(out)
    return int(out.shape[-1]) if isinstance(out, torch.Tensor) else 0


def _torchvision_archs() -> list[str]:
    import torchvision
    return sorted(torchvision.models.list_models(module=torchvision.models))


def build_arch(arch: str, num_classes: int | None,
               archs: Mapping[str, Callable[..., nn.Module]] | None = None) -> nn.Module:
    """A randomly initialised model: one of ``archs`` (name -> constructor taking
    ``num_classes``), any torchvision classifier, or ``timm:NAME`` (any of timm's
    architectures, when timm is installed)."""
    archs = archs or {}
    kwargs = {"num_classes": num_classes} if num_classes else {}
    if arch in archs:
        return archs[arch](**kwargs)
    if arch.startswith("timm:"):
        return _timm_model(arch[len("timm:"):], kwargs)
    names = _torchvision_archs()
    if arch not in names:
        close = difflib.get_close_matches(arch, names + sorted(archs), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UserError(f"unknown architecture {arch!r}{hint}")
    import torchvision
    try:
        return torchvision.models.get_model(arch, weights=None, **kwargs)
    except (TypeError, ValueError) as exc:
        raise UserError(f"cannot build {arch}: {exc}") from exc


def _timm_model(name: str, kwargs: dict) -> nn.Module:
    """``timm.create_model(name, pretrained=False)``: random weights, nothing downloaded
    (``weights=FILE`` loads a state dict afterwards)."""
    try:
        import timm
    except ImportError:
        raise UserError(f"--arch timm:{name} needs timm: pip install 'repinterp[timm]'") \
            from None
    names = timm.list_models()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3)
        hint = f"; did you mean {', '.join('timm:' + c for c in close)}?" if close else ""
        raise UserError(f"timm has no architecture {name!r}{hint}")
    try:
        return timm.create_model(name, pretrained=False, **kwargs)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise UserError(f"cannot build timm:{name}: {first_line(exc)}") from exc


def torchvision_weights(name: str):
    """The torchvision weights enum named ``name`` (``ResNet50_Weights.IMAGENET1K_V2``),
    or None when ``name`` does not look like one (a file name, say)."""
    if "_Weights." not in name or Path(name).exists():
        return None
    from torchvision.models import get_weight
    try:
        return get_weight(name)
    except (KeyError, ValueError, AttributeError):
        raise UserError(f"{name!r} is not a torchvision weights name (e.g. "
                        "ResNet50_Weights.IMAGENET1K_V2)") from None


def load_model(*, arch: str | None = None, weights: str | None = None,
               num_classes: int | None = None, model_file: str | None = None,
               trust_pickle: bool = False,
               archs: Mapping[str, Callable[..., nn.Module]] | None = None) -> nn.Module:
    """The user's model, in eval mode.

    * ``arch`` (+ ``weights``, a state dict, loaded with ``weights_only=True``): one of
      ``archs`` (the CLI passes the demo architectures ``vgg``, ``resnet``) or a
      torchvision name such as ``resnet18``. ``weights`` may also name torchvision
      weights (``ResNet50_Weights.IMAGENET1K_V2``): their file is taken from torch's hub
      cache, and fetched only if missing there.
    * ``model_file``: a TorchScript file, a state dict of one of ``archs``, or a whole
      pickled model only when ``trust_pickle`` is set (unpickling runs arbitrary code).
    """
    if (arch is None) == (model_file is None):
        raise UserError("give either {param}", param="model",
                        api="arch=NAME (with weights=FILE) or model_file=FILE")
    if arch is not None:
        model = build_arch(arch, num_classes, archs)
        enum = torchvision_weights(weights) if weights else None
        if enum is not None:
            try:
                state = enum.get_state_dict(progress=False, check_hash=True)
            except Exception as exc:  # noqa: BLE001 - URLError, hash mismatch, ...
                raise UserError(f"cannot get the {weights} file ({first_line(exc)}); put "
                                f"{enum.url.rsplit('/', 1)[-1]} in torch's hub cache "
                                "(~/.cache/torch/hub/checkpoints)") from exc
        elif weights:
            state = _load_weights_only(Path(weights))
        if weights:
            if isinstance(state, dict) and "state_dict" in state and isinstance(
                    state["state_dict"], dict):
                state = state["state_dict"]
            if not isinstance(state, dict):
                raise UserError(f"{weights} is not a state dict")
            try:
                model.load_state_dict(state)
            except RuntimeError as exc:
                own = model.state_dict()
                missing = [k for k in own if k not in state]
                extra = [k for k in state if k not in own]
                shapes = [f"{k} is {tuple(state[k].shape)} in the file, "
                          f"{tuple(own[k].shape)} in the model" for k in own
                          if k in state and isinstance(state[k], torch.Tensor)
                          and state[k].shape != own[k].shape]
                detail = "; ".join(
                    ([f"{len(missing)} missing keys (e.g. {missing[0]})"] if missing else [])
                    + ([f"{len(extra)} unexpected keys (e.g. {extra[0]})"] if extra else [])
                    + shapes[:2]) or first_line(exc)
                raise UserError(f"{weights} does not fit {arch} with "
                                f"{num_classes or 'default'} classes ({detail}); check "
                                "arch and num_classes") from exc
        return model.eval()
    assert model_file is not None                # exactly one of the two, checked above
    path = checked_path(model_file, kind="file", what="model file")
    try:
        with warnings.catch_warnings():  # torch >= 2.9 flags TorchScript as deprecated
            warnings.simplefilter("ignore", FutureWarning)
            return torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as exc:  # noqa: BLE001 - not TorchScript: try a state dict next
        if _is_torchscript_archive(path):
            raise UserError(f"{path} is a corrupt TorchScript file ({first_line(exc)})") \
                from exc
    if not trust_pickle:
        obj = _load_weights_only(path)
        if isinstance(obj, dict):
            demo = _match_arch(obj, num_classes, archs or {})
            if demo is not None:
                return demo.eval()
        kind = "a state dict: pass {weights}" if isinstance(obj, dict) \
            else "not a TorchScript file"
        raise UserError(f"{path} is {kind} " "(a whole pickled model needs {trust_pickle})",
                        params={"weights": "arch=NAME with weights=FILE",
                                "trust_pickle": "trust_pickle=True"})
    try:
        model = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - anything the unpickler raises
        raise UserError(f"cannot unpickle {path} ({first_line(exc)})") from exc
    if not isinstance(model, nn.Module):
        raise UserError(f"{path} holds a {type(model).__name__}, not a torch model")
    return model.eval()


def _is_torchscript_archive(path: Path) -> bool:
    """True for a zip archive laid out as TorchScript saves it (``code/`` and
    ``constants.pkl``), which ``torch.save`` archives do not have."""
    import zipfile
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (OSError, zipfile.BadZipFile, ValueError):
        return False
    return any("/code/" in n for n in names) and any(n.endswith("/constants.pkl")
                                                     for n in names)


def _match_arch(state: dict, num_classes: int | None,
               archs: Mapping[str, Callable[..., nn.Module]]) -> nn.Module | None:
    """One of ``archs`` (e.g. the demo architectures) that the state dict fits."""
    for cls in archs.values():
        model = cls(num_classes=num_classes or 10)
        try:
            model.load_state_dict(state)
        except RuntimeError:
            continue
        return model
    return None


def _load_weights_only(path: Path):
    path = checked_path(path, kind="file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for bad files
        raise UserError(f"{path} cannot be loaded safely: it is neither TorchScript nor a "
                        "state dict (weights_only=True); if it is a whole pickled model you "
                        "trust, use {param}", param="trusted_model",
                        api="model_file=FILE with trust_pickle=True") from exc
