"""The network, split and ready to run: the only place that touches the user's model.

:class:`SplitNetwork` cuts the model at a layer (:func:`repinterp.core.split.split_model`),
classifies the head from its traced graph, and keeps *private copies* of both halves
(:func:`repinterp.core.copies.private_copy`):
deep copies, always in eval mode, without parameter gradients, on the compute device,
the feature extractor in channels-last format on the CPU. The user's model is only read:
its flags, hooks and gradients are never touched, and a change to its weights after the
copies were made is detected (:meth:`SplitNetwork.is_stale`).
"""
from __future__ import annotations

import functools
import math
import os
import tempfile
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from . import defaults
from .copies import check_device, model_fingerprint, private_copy
from .errors import UserError, first_line
from .heatmap import channels_first, heatmap_method, looks_channels_last
from .hooked import HookedHead
from .logits import logits_of
from .passes import auto_batch_size, batches, check_floating
from .precision import exact
from .progress import progress_bar
from .region import Region
from .split import split_model
from .store import chunk_rows
from .verdict import HeadVerdict, head_verdict

# isort: split

__all__ = ["GRIDS", "SplitNetwork"]


#: where a heat map is drawn: on the head's grid, or on the feature map's own grid
GRIDS = ("head", "features")

# the head's activations per point, as a multiple of its input, when sizing chunks
HEAD_ACTIVATION_FACTOR = 4


def _mapped(directory: str | os.PathLike, shape: tuple[int, ...], dtype: torch.dtype
            ) -> torch.Tensor:
    """An uninitialised CPU tensor backed by an unlinked file in ``directory``."""
    size = math.prod(shape)
    nbytes = size * torch.empty((), dtype=dtype).element_size()
    if not os.path.isdir(directory):
        raise UserError(f"store directory {os.fspath(directory)} does not exist")
    fd, path = tempfile.mkstemp(prefix="repinterp-features-", suffix=".bin", dir=directory)
    try:
        try:
            os.posix_fallocate(fd, 0, max(nbytes, 1))
        except OSError as exc:
            raise UserError(f"cannot reserve {nbytes / 2**30:.2f} GiB for the features in "
                            f"{os.fspath(directory)}: {exc.strerror}") from None
        return torch.from_file(path, shared=True, size=size, dtype=dtype).view(shape)
    finally:
        os.close(fd)
        os.unlink(path)


class SplitNetwork:
    """``psi`` (features) and ``G`` (head) of a model split at ``layer``, as private copies.

    Parameters
    ----------
    model
        The classifier. Only read, never modified.
    layer
        By name (``named_modules()``) or as a module.
    device
        Where to compute; default: the model's device.
    channels_last
        Run the feature extractor in channels-last format on the CPU (about 2x faster
        convolutions with oneDNN; same numbers up to float rounding).
    batch_size, progress
        Images per batch in :meth:`features` (None: :func:`auto_batch_size`), and whether
        to show a progress bar.
    preprocess
        Applied to every batch before the network (e.g. torchvision's
        ``Normalize(mean, std)``): images are then passed as they look, in ``[0, 1]``.
    reshape_transform
        The layer's output (and the boundary normals, in the same layout) as feature
        maps ``[n, C, h, w]`` for heat maps, as pytorch-grad-cam's ``reshape_transform``
        (``lambda t: t.permute(0, 3, 1, 2)``). Not needed for ``[n, C, h, w]`` maps, for
        a ViT's tokens ``[n, T, D]`` on a square grid, nor for Swin's channels-last maps
        ``[n, h, w, C]``, recognised by their shape (:func:`looks_channels_last`) at the
        first pass.
    """

    def __init__(self, model: nn.Module, layer: str | nn.Module, *,
                 device: str | torch.device | None = None, channels_last: bool = True,
                 batch_size: int | None = None, progress: bool = True,
                 preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 reshape_transform: Callable[[torch.Tensor], torch.Tensor] | None = None):
        split = split_model(model, layer)
        self.layer = split.layer
        self.verdict: HeadVerdict = head_verdict(split.head)
        param = next(model.parameters(), None)
        model_device = param.device if param is not None else torch.device("cpu")
        self.device = check_device(device) if device is not None else model_device
        self.dtype = param.dtype if param is not None else torch.float32
        self.channels_last = bool(channels_last and self.device.type == "cpu" and any(
            isinstance(m, nn.Conv2d) for m in split.features.modules()))
        self.psi = private_copy(split.features, self.device, self.channels_last)
        self.head = private_copy(split.head, self.device)
        self.batch_size = None if batch_size is None else int(batch_size)
        self.progress = progress
        self.preprocess = preprocess
        self.reshape_transform = reshape_transform
        self._input_shape: tuple[int, ...] | None = None
        self.feature_shape: tuple[int, ...] | None = None
        self._model = model
        self._fingerprint = model_fingerprint(model)

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        """The shape of one input image, fixed by the first pass."""
        return self._input_shape

    @input_shape.setter
    def input_shape(self, shape: tuple[int, ...] | None) -> None:
        self._input_shape = shape
        if isinstance(self.head, HookedHead):   # it runs the model on zeros of that shape
            self.head.input_shape = shape

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Images as the network takes them: on its device and dtype, then
        :attr:`preprocess` (e.g. a normalisation) when one is given."""
        x = images.to(self.device, self.dtype)
        return x if self.preprocess is None else self.preprocess(x)

    @property
    def approximate(self) -> bool:
        """True when the head is smooth (not piecewise linear): boundaries are tangent
        planes of the decision surface (:attr:`HeadVerdict.mode` ``"tangent"``)."""
        return not self.verdict.exact

    def is_stale(self) -> bool:
        """True when the model's parameters or buffers changed since the copies were made."""
        return model_fingerprint(self._model) != self._fingerprint

    # --- passes ------------------------------------------------------------------
    @exact
    @torch.no_grad()
    def check_split(self, images: torch.Tensor, count: int = 8) -> None:
        """Check the split once: ``G(psi(x))`` must equal ``model(x)`` on the first
        ``count`` images, within ``sqrt(eps)`` of the dtype times the logits' size.

        The model is run as its users run it (a private copy, in eval mode, with its
        own ``forward`` and hooks), so whatever the traced graph misses (hooks on the
        model or on a traced-through module, a custom ``forward``, a tracing mistake)
        or a model that does not return logits is a :class:`UserError` here, not a
        wrong explanation later.
        """
        x = self._prepare(check_floating(images[:count]))
        if self.input_shape is None:                 # the first pass fixes the shapes
            self.input_shape = tuple(x.shape[1:])
        whole = private_copy(self._model, self.device)
        try:
            expected = logits_of(self._run(whole, x))
        finally:
            del whole
        if not isinstance(expected, torch.Tensor):
            raise UserError(f"the model returns a {type(expected).__name__}, not a tensor "
                            "of logits (nor a tuple, dict or ModelOutput holding them); wrap "
                            "it so that forward returns the logits [N, K]")
        if expected.ndim != 2:
            raise UserError(f"the model returns shape {tuple(expected.shape)}, not logits "
                            "[N, K]")
        got = self._run(self.head, self._run(self.psi, x.contiguous(
            memory_format=torch.channels_last) if self.channels_last and x.ndim == 4 else x))
        if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
            raise UserError(f"the network split at {self.layer!r} does not compute the "
                            "model's output; choose another layer")
        if not torch.isfinite(expected).all():
            return                      # NaN logits are reported where they are used
        scale = max(1.0, float(expected.abs().max()))
        diff = float((got - expected).abs().max())
        if diff <= torch.finfo(self.dtype).eps ** 0.5 * scale:
            return
        hooked = [f"{name!r}" if name else "the model itself"
                  for name, m in self._model.named_modules()
                  if getattr(m, "_forward_hooks", None) or getattr(m, "_forward_pre_hooks",
                                                                   None)]
        from torch.nn.modules import module as _module
        if _module._global_forward_hooks or _module._global_forward_pre_hooks:
            hooked.append("every module (global hooks)")
        why = (f"forward hooks on {', '.join(hooked[:3])} are not part of the traced "
               "graph: remove them, or fold what they do into the model" if hooked else
               "the model's forward does something its traced graph does not (a custom "
               "forward or data-dependent code); the input must reach the logits only "
               f"through {self.layer!r}")
        raise UserError(f"the network split at {self.layer!r} disagrees with model(x) by "
                        f"{diff:.3g} (logits up to {scale:.3g}): {why}")

    def _run(self, part: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Run ``psi`` or ``G``; a shape or dtype mismatch becomes a :class:`UserError`."""
        try:
            return part(x)
        except RuntimeError as exc:
            where = ("" if part is self.psi else
                     f", the layers after {self.layer!r} fail on its output "
                     f"{tuple(x.shape[1:])}")
            shape = tuple(x.shape[1:]) if part is self.psi else self.input_shape
            raise UserError(f"the model cannot take images of shape {shape}{where} "
                            f"({first_line(exc)})") from exc

    @exact
    @torch.no_grad()
    def features(self, images: Any, *, flat: bool = True, dtype: torch.dtype | None = None,
                 progress: bool | None = None, storage: str | os.PathLike | None = None
                 ) -> torch.Tensor:
        """``psi(images)``: ``[N, D]`` (``[N, C, H, W]`` with ``flat=False``), allocated
        once and filled batch by batch; ``dtype`` stores it in another dtype.

        The shapes of the first pass (the fit's references) are kept as
        :attr:`input_shape` and :attr:`feature_shape`; later passes (a query, heat maps of
        images of another size) do not change them.

        ``storage``: a directory; the result then lives in a memory-mapped file there
        (on the CPU), so that ``N`` is bounded by disk, not memory. The file is reserved
        in full before the first batch (a full disk is an error, not a crash later) and
        unlinked at once: its space returns when the tensor is freed, nothing is left.
        """
        show = self.progress if progress is None else progress
        n = len(images)
        out: torch.Tensor | None = None
        done = 0
        with progress_bar(total=n, desc="features", unit="img", enabled=show) as bar:
            size = self.batch_size or auto_batch_size(images, self.device)
            for batch in batches(images, size):
                if self.input_shape is None:       # fixed by the first pass (fit)
                    self.input_shape = tuple(batch.shape[1:])
                batch = self._prepare(batch)
                if self.channels_last and batch.ndim == 4:
                    batch = batch.contiguous(memory_format=torch.channels_last)
                f = self._run(self.psi, batch)
                if not isinstance(f, torch.Tensor):
                    raise UserError(f"layer {self.layer!r} does not output a tensor")
                if not torch.isfinite(f).all():
                    raise UserError(f"the activations of layer {self.layer!r} contain NaN "
                                    "or infinite values; check the inputs and the weights")
                if out is None:
                    if self.feature_shape is None:
                        self.feature_shape = tuple(f.shape[1:])
                        if self.reshape_transform is None and looks_channels_last(
                                self.feature_shape, (batch.shape[-2], batch.shape[-1])):
                            self.reshape_transform = channels_first
                    shape = (n, *f.shape[1:])
                    out = (torch.empty(shape, dtype=dtype or f.dtype, device=f.device)
                           if storage is None else _mapped(storage, shape, dtype or f.dtype))
                out[done:done + len(f)] = f
                done += len(f)
                bar.update(len(batch))
        if out is None:
            raise UserError("no images given")
        return out.flatten(1) if flat else out

    def grad_features(self, images: torch.Tensor) -> torch.Tensor:
        """``psi(images)`` ``[n, D]`` with gradients to the images: one batch, no
        checks (what an edit in pixel space differentiates; call under
        :func:`~repinterp.core.precision.exact_float32`)."""
        return self._run(self.psi, self._prepare(images)).flatten(1)

    def grad_logits(self, z: torch.Tensor) -> torch.Tensor:
        """``G(z)`` ``[n, K]`` of flattened features with gradients to them."""
        return self._run(self.head, self.unflatten(z.to(self.device, self.dtype)))

    def unflatten(self, z: torch.Tensor) -> torch.Tensor:
        """Flattened features ``[n, D]`` as feature maps ``[n, *feature_shape]``."""
        if self.feature_shape is None:
            raise UserError("the feature shape is unknown until features were computed")
        return z.reshape(-1, *self.feature_shape)

    @exact
    @torch.no_grad()
    def logits(self, z: torch.Tensor, *, capture: nn.Module | None = None,
               sink: list | None = None) -> torch.Tensor:
        """``G(z)`` for flattened features ``[N, D]``, in chunks (upcast per chunk).

        With ``capture`` (a module of :attr:`head`), its outputs are appended to ``sink``.
        """
        if capture is not None and sink is None:
            raise ValueError("capture needs a sink list")
        hook = (capture.register_forward_hook(
            lambda m, i, o: sink.append(o.detach()))  # type: ignore[union-attr]
            if capture is not None else None)
        step = chunk_rows(z.shape[1] * 4 * HEAD_ACTIVATION_FACTOR, most=4096)
        try:
            return torch.cat([self._run(self.head, self.unflatten(
                z[i:i + step].to(self.device, self.dtype)))
                for i in range(0, len(z), step)])
        finally:
            if hook is not None:
                hook.remove()

    @exact
    def class_gradients(self, points: torch.Tensor, cls: int) -> torch.Tensor:
        """``grad_z log softmax(G(z))_cls`` at flattened feature points ``[P, D]``."""
        z = points.detach().to(self.device, self.dtype).clone().requires_grad_(True)
        with torch.enable_grad():
            lp = self.head(self.unflatten(z)).log_softmax(1)[:, cls].sum()
            (g,) = torch.autograd.grad(lp, z)
        return g

    # --- a region on images --------------------------------------------------------
    @exact
    def contains(self, region: Region, images: Any) -> torch.Tensor:
        """Bool ``[n]``: which images fall inside ``region``."""
        return region.contains_features(self.features(images, progress=False)).cpu()

    @exact
    def rank(self, region: Region, images: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Indices of the images inside ``region``, nearest first, and their distances."""
        return region.rank_features(self.features(images, progress=False))

    @exact
    def heatmap(self, region: Region, images: Any, method: str = defaults.HEATMAP_METHOD,
                grid: str = defaults.HEATMAP_GRID) -> torch.Tensor:
        """Heat maps ``[n, H, W]`` in ``[0, 1]`` of images ``[n, C, H, W]`` (or one image
        ``[C, H, W]``), the same region weights for every image."""
        images = torch.as_tensor(images)
        if images.ndim == 3:
            images = images.unsqueeze(0)
        maps = self.features(images, flat=False, progress=False)
        return self.heatmap_of_features(region, maps, tuple(images.shape[-2:]), method, grid)

    @exact
    def heatmap_of_features(self, region: Region, maps: torch.Tensor,
                            size: tuple[int, int], method: str = defaults.HEATMAP_METHOD,
                            grid: str = defaults.HEATMAP_GRID) -> torch.Tensor:
        """Heat maps ``[n, H, W]`` (``size``) of feature maps ``[n, *feature_shape]`` already
        computed: no pass through the feature extractor (``logprob`` takes the class
        gradients at the region's boundary points through the head). ``grid="head"``
        maps on :attr:`head_grid`, ``"features"`` on the feature map's own grid."""
        if grid not in GRIDS:
            raise UserError(f"heat map grid must be one of {GRIDS}, got {grid!r}")
        normals = (self.class_gradients(region.boundary_points, region.predicted_class)
                   if heatmap_method(method).needs_class_gradients else None)
        cells = self.head_grid if grid == "head" else None
        return region.heatmap_features(maps, size, method, normals, cells,
                                       self.reshape_transform).cpu()

    @functools.cached_property
    def head_grid(self) -> tuple[int, int] | None:
        """The coarsest spatial grid the head computes on: the smallest ``h x w`` (with
        more than one cell) of a 4-d output of any module of the head, run once on zero
        features; ``None`` when the head never goes coarser than the feature map (or the
        feature map is not 4-d). A ResNet split at ``layer3`` gives ``layer4``'s grid
        (7 x 7 at 224 px, where the features are 14 x 14). TorchScript modules take no
        hooks and are not looked into."""
        if self.feature_shape is None or len(self.feature_shape) != 3 \
                or self.reshape_transform is not None:
            return None
        sizes: list[tuple[int, int]] = []

        def record(_module: nn.Module, _inputs: Any, out: Any) -> None:
            if isinstance(out, torch.Tensor) and out.ndim == 4 and out.shape[-2:].numel() > 1:
                sizes.append((int(out.shape[-2]), int(out.shape[-1])))

        handles = [m.register_forward_hook(record) for m in self.head.modules()
                   if not isinstance(m, torch.jit.ScriptModule)]
        try:
            with torch.no_grad():
                self.head(torch.zeros(1, *self.feature_shape, device=self.device,
                                      dtype=self.dtype))
        finally:
            for h in handles:
                h.remove()
        own = (int(self.feature_shape[1]), int(self.feature_shape[2]))
        coarsest = min(sizes, key=lambda hw: hw[0] * hw[1], default=own)
        return None if coarsest[0] * coarsest[1] >= own[0] * own[1] else coarsest
