"""The public entry point: :class:`RepresentativeInterpreter`."""
from __future__ import annotations

import copy
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any, Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .boundaries import (Boundaries, bisect_segments, bisect_to_boundary, boundaries_at,
                         orient, orientation)
from .errors import UserError, first_line
from .greedy import select_boundaries
from .region import RegionExplanation
from .split import (NotPiecewiseLinearError, check_head_modules, check_head_numerically,
                    inference_mode, linear_prefix, split_model)
from .store import FeatureStore, capture_outputs

if TYPE_CHECKING:
    from .summary import Summary

__all__ = ["RepresentativeInterpreter"]

SAMPLING = ("bisection", "shared")


def _batches(images: Any, batch_size: int) -> Iterator[torch.Tensor]:
    """Yield image batches from a Tensor ``[N, C, H, W]`` or a Dataset (labels ignored)."""
    if isinstance(images, torch.Tensor):
        if images.ndim != 4:
            raise UserError(f"images must be a [N, C, H, W] tensor, got shape "
                            f"{tuple(images.shape)}")
        for i in range(0, len(images), batch_size):
            yield images[i:i + batch_size]
        return
    if isinstance(images, Dataset):
        def collate(items: list) -> torch.Tensor:
            return torch.stack([it[0] if isinstance(it, (tuple, list)) else it
                                for it in items])
        yield from DataLoader(images, batch_size=batch_size, collate_fn=collate)
        return
    raise UserError("images must be a torch.Tensor [N, C, H, W] or a torch Dataset")


def _fast_copy(features: nn.Module) -> nn.Module:
    """A private eval-mode copy in channels-last format whose ReLUs work in place where
    their input has no other user (half the memory traffic; identical numbers)."""
    net = copy.deepcopy(features).eval().to(memory_format=torch.channels_last)
    if isinstance(net, torch.fx.GraphModule):
        for node in net.graph.nodes:
            if node.op == "call_module" and isinstance(net.get_submodule(node.target), nn.ReLU):
                src = node.args[0]
                if isinstance(src, torch.fx.Node) and len(src.users) == 1 \
                        and src.op != "placeholder":
                    net.get_submodule(node.target).inplace = True
    return net


class RepresentativeInterpreter:
    """Representative interpretations of a CNN classifier (Lam, Chu et al., ICCV 2021).

    Parameters
    ----------
    model
        A classifier ``x -> logits``. It is never modified: its training flags are
        restored after every call and no hook is left on it.
    layer
        Feature layer, by name (``named_modules()``) or as a module. ``psi`` is the
        output of this layer, ``G`` everything after it; ``G`` must be piecewise linear.
    num_boundaries
        ``|Q|``, boundaries sampled per seed (``bisection``) or shared by all seeds.
    sampling
        ``"bisection"`` (METHOD §1, default): per seed, bisect towards ``|Q|`` random
        references of other classes. ``"shared"``: one set ``Q`` taken at ``|Q|`` random
        references (top-1 vs top-2), shared by every seed; much faster for summaries.
    delta
        Other-class references allowed in a region; ``None`` = smallest feasible.
    seed
        Seed of every random draw; the same seed gives the same results.
    heatmap_method
        Default heat map variant (see :mod:`repinterp.heatmap`). ``margin`` was chosen on
        development seeds of the paper's protocol (``docs/evaluation.md``); the paper's
        lineage variant is ``lineage``.
    approximate
        Accept a head that is not piecewise linear; boundaries are then local
        linearisations and every result is flagged ``approximate``.
    device
        Where to compute. If it differs from the model's device the split network is
        copied there; the user's model stays where it is.
    feature_dtype
        Storage dtype of the reference features (default: the model's); ``torch.float16``
        halves their memory, products are still computed in the model's dtype.
    use_prefix
        Reuse the head's first linear layer for the side values (exact; see
        :mod:`repinterp.store`). ``False`` computes ``Z W^T`` directly.
    channels_last
        On the CPU, run a private copy of the feature extractor in channels-last memory
        format (about 2x faster convolutions with oneDNN; same numbers up to float
        rounding). The copy is a snapshot: refit after changing the model's weights.
    """

    def __init__(self, model: nn.Module, layer: str | nn.Module, num_boundaries: int = 50,
                 *, sampling: str = "bisection", delta: int | None = None, seed: int = 0,
                 heatmap_method: str = "margin", batch_size: int = 256,
                 approximate: bool = False, device: str | torch.device | None = None,
                 feature_dtype: torch.dtype | None = None, progress: bool = True,
                 use_prefix: bool = True, channels_last: bool = True):
        if sampling not in SAMPLING:
            raise UserError(f"sampling must be one of {SAMPLING}, got {sampling!r}")
        if num_boundaries < 1:
            raise UserError("num_boundaries must be at least 1")
        self.model = model
        self.split = split_model(model, layer)
        self.layer = self.split.layer
        bad = check_head_modules(self.split.head)
        if bad and not approximate:
            raise NotPiecewiseLinearError(
                f"the network after layer {self.layer!r} is not piecewise linear: "
                f"{bad[0]}" + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else "")
                + "; choose a later layer or pass approximate=True")
        self.approximate = bool(bad)
        param = next(model.parameters(), None)
        model_device = param.device if param is not None else torch.device("cpu")
        self.device = torch.device(device) if device is not None else model_device
        self.dtype = param.dtype if param is not None else torch.float32
        if self.device != model_device:
            self.split.features = copy.deepcopy(self.split.features).to(self.device)
            self.split.head = copy.deepcopy(self.split.head).to(self.device)
        self.channels_last = bool(channels_last and self.device.type == "cpu" and any(
            isinstance(m, nn.Conv2d) for m in self.split.features.modules()))
        self._feature_net = self.split.features
        if self.channels_last:  # a private channels-last copy: ~2x faster convs on CPU
            self._feature_net = _fast_copy(self.split.features)
        self.num_boundaries = int(num_boundaries)
        self.sampling = sampling
        self.delta = delta
        self.seed = int(seed)
        self.heatmap_method = heatmap_method
        self.batch_size = int(batch_size)
        self.progress = progress
        self.feature_dtype = feature_dtype
        self.use_prefix = use_prefix

    # --- network passes ----------------------------------------------------------
    @torch.no_grad()
    def features(self, images: Any, *, progress: bool | None = None,
                 flat: bool = True, dtype: torch.dtype | None = None) -> torch.Tensor:
        """``psi(images)``: ``[N, D]`` (or ``[N, C, H, W]`` with ``flat=False``).

        The output is allocated once and filled batch by batch (no concatenation copy);
        ``dtype`` stores it in another dtype, e.g. float16.
        """
        show = self.progress if progress is None else progress
        n = len(images)
        out: torch.Tensor | None = None
        done = 0
        with inference_mode(self.model):
            bar = tqdm(total=n, desc="features", unit="img", disable=not show, leave=False)
            for batch in _batches(images, self.batch_size):
                self.input_shape_ = tuple(batch.shape[1:])
                batch = batch.to(self.device, self.dtype)
                if self.channels_last and batch.ndim == 4:
                    batch = batch.contiguous(memory_format=torch.channels_last)
                f = self._forward(self._feature_net, batch)
                if not isinstance(f, torch.Tensor):
                    raise UserError(f"layer {self.layer!r} does not output a tensor")
                if not torch.isfinite(f).all():
                    raise UserError(f"the activations of layer {self.layer!r} contain NaN "
                                    "or infinite values; check the inputs and the weights")
                if out is None:
                    out = torch.empty((n, *f.shape[1:]), dtype=dtype or f.dtype,
                                      device=f.device)
                out[done:done + len(f)] = f
                done += len(f)
                bar.update(len(batch))
            bar.close()
        if out is None:
            raise UserError("no images given")
        return out.flatten(1) if flat else out

    def _forward(self, part: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Run a part of the network; a shape or dtype mismatch becomes a UserError."""
        try:
            return part(x)
        except RuntimeError as exc:
            where = ("" if part is self._feature_net else
                     f", the layers after {self.layer!r} fail on its output "
                     f"{tuple(x.shape[1:])}")
            shape = getattr(self, "input_shape_", tuple(x.shape[1:]))
            raise UserError(f"the model cannot take images of shape {shape}{where} "
                            f"({first_line(exc)})") from exc

    @torch.no_grad()
    def logits(self, features: torch.Tensor, *, capture: nn.Module | None = None,
               sink: list | None = None) -> torch.Tensor:
        """``G(z)`` for flattened features ``[N, D]``, in batches (upcast per batch).

        With ``capture``, the outputs of that head module are appended to ``sink``.
        """
        hook = capture_outputs(capture, sink) if capture is not None else nullcontext()
        with inference_mode(self.model), hook:
            return torch.cat([self._forward(self.split.head, features[i:i + 4096].to(
                self.dtype).view(-1, *self.shape_)) for i in range(0, len(features), 4096)])

    def class_gradients(self, points: torch.Tensor, cls: int) -> torch.Tensor:
        """``grad_z log softmax(G(z))_cls`` at flattened feature points ``[P, D]``."""
        z = points.detach().clone().requires_grad_(True)
        with inference_mode(self.model), torch.enable_grad():
            lp = self.split.head(z.view(-1, *self.shape_)).log_softmax(1)[:, cls].sum()
            (g,) = torch.autograd.grad(lp, z)
        return g

    # --- fit ---------------------------------------------------------------------
    def fit(self, references: Any) -> "RepresentativeInterpreter":
        """Compute and keep the reference features, logits and predictions.

        ``references``: Tensor ``[N, C, H, W]`` or a Dataset of images (labels ignored).
        One pass of the feature extractor, one of the head; when the head starts with a
        linear layer its outputs are kept too (see :mod:`repinterp.store`).
        """
        feats = self.features(references, flat=False, dtype=self.feature_dtype)
        self.shape_ = tuple(feats.shape[1:])
        self.store_ = FeatureStore(feats.flatten(1), self.dtype)
        prefix = linear_prefix(self.split.head) if self.use_prefix else None
        sink: list[torch.Tensor] = []
        logits = self.logits(self.store_.z, capture=prefix, sink=sink)
        if prefix is not None:
            rest = split_model(self.split.head, prefix).head
            self.store_.set_prefix(prefix, torch.cat(sink),
                                   rest if not check_head_modules(rest) else None)
        if logits.shape[1] < 2:
            raise UserError("the model has a single output; need a classifier with "
                            ">= 2 classes")
        top2 = logits.topk(2, 1).values
        self.predictions_ = logits.argmax(1).cpu()
        self.margins_ = (top2[:, 0] - top2[:, 1]).cpu()
        if not self.approximate:
            pick = torch.randperm(len(self.store_), generator=self._rng(0))[:8]
            with inference_mode(self.model):
                share = check_head_numerically(
                    self.split.head, self.store_.rows(pick.to(self.device)).view(-1, *self.shape_))
            if share < 0.5:
                raise NotPiecewiseLinearError(
                    f"the network after layer {self.layer!r} is not piecewise linear: "
                    f"G(z + d) != G(z) + J d at {1 - share:.0%} of the points tested; "
                    "pass approximate=True to linearise locally")
        self.shared_ = None
        if self.sampling == "shared":
            idx = torch.randperm(len(self.store_), generator=self._rng(1))
            idx = idx[: self.num_boundaries].to(self.device)
            with inference_mode(self.model):
                b = boundaries_at(self.split.head, self.store_.rows(idx), self.shape_)
            self.shared_ = (b, self.store_.side_values(b.weights, b.biases))
        return self

    @property
    def features_(self) -> torch.Tensor:
        """The stored reference features ``[N, D]`` (in the store's dtype)."""
        return self.store_.z

    def _rng(self, stream: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + stream)

    def _check_fitted(self) -> None:
        if not hasattr(self, "store_"):
            raise RuntimeError("call fit(references) first")

    # --- explain -----------------------------------------------------------------
    def explain(self, seed: int | torch.Tensor, *, delta: int | None = None,
                num_boundaries: int | None = None) -> RegionExplanation:
        """The representative interpretation of ``seed``.

        Parameters
        ----------
        seed
            Index into the references, or an image Tensor ``[C, H, W]``.
        delta, num_boundaries
            Override the interpreter's settings for this call.
        """
        self._check_fitted()
        if isinstance(seed, torch.Tensor) and seed.ndim == 3:
            z0 = self.features(seed[None], progress=False)[0]
            cls = int(self.logits(z0[None]).argmax(1))
            index = None
        elif isinstance(seed, int) or (isinstance(seed, torch.Tensor) and seed.ndim == 0):
            index = int(seed)
            if not 0 <= index < len(self.store_):
                raise UserError(f"seed index {index} out of range 0..{len(self.store_) - 1}")
            z0 = self.store_.rows(index)
            cls = int(self.predictions_[index])
        else:
            raise UserError("seed must be a reference index or an image tensor [C, H, W]")
        same = self.predictions_ == cls
        if bool(same.all()):
            raise UserError(f"every reference image is predicted as class {cls}; "
                            "representative interpretations need images of other classes")
        delta = self.delta if delta is None else delta
        q = self.num_boundaries if num_boundaries is None else num_boundaries

        with inference_mode(self.model):
            if self.shared_ is not None:
                b, values = self.shared_
                sign = orientation(b, z0)
                b = orient(b, z0)
                values = values * sign.to(values)
            else:
                b = self._sample(z0, cls, same, index, q)
                values = self.store_.side_values(b.weights, b.biases)
        sides = (values >= 0).cpu()
        sel = select_boundaries(sides, same, delta)
        chosen = b.select(sel.indices.to(b.weights.device))
        sel_values = values[:, sel.indices.to(values.device)]
        inside = sel.covered.nonzero()[:, 0]
        seed_values = (sel_values[index] if index is not None
                       else chosen.weights @ z0.to(chosen.weights) + chosen.biases)
        dist = (sel_values[inside.to(values.device)] - seed_values).abs().sum(1).cpu()
        order = torch.sort(dist, stable=True).indices
        members = inside[order]
        purity = int((self.predictions_[members] == cls).sum()) / max(len(members), 1)
        return RegionExplanation(
            predicted_class=cls, weights=chosen.weights, biases=chosen.biases,
            boundary_points=chosen.points, pairs=chosen.pairs, delta=sel.delta,
            min_delta=sel.min_delta, members=members, member_distances=dist[order],
            purity=purity, seed_index=index, seed_features=z0,
            approximate=self.approximate, interpreter=self)

    def _sample(self, z0: torch.Tensor, cls: int, same: torch.Tensor, index: int | None,
                q: int) -> Boundaries:
        """Bisection sampling (METHOD §1) towards ``q`` random other-class references.

        With a linear prefix the bisection and the gradients run on the head after it,
        on the stored projections (see :mod:`repinterp.store`): same boundaries, a
        fraction of the cost.
        """
        others = (~same).nonzero()[:, 0]
        gen = self._rng(2 if index is None else 3 + index)
        pick = others[torch.randperm(len(others), generator=gen)[:q]].to(self.device)
        targets = self.store_.rows(pick)
        c1 = torch.full((len(pick),), cls, dtype=torch.long, device=self.device)
        store = self.store_
        if store.rest is None:
            points = bisect_to_boundary(self.split.head, z0[None], targets, cls, self.shape_)
            return orient(boundaries_at(self.split.head, points, self.shape_, c1), z0)
        proj = store.prefix[0]
        p0 = proj[index] if index is not None else store.project(z0[None])[0]
        pt = proj[pick].to(p0.dtype)
        shape = (pt.shape[1],)
        t = bisect_segments(store.rest, p0[None], pt, cls, shape)
        bp = boundaries_at(store.rest, p0 + t * (pt - p0), shape, c1)
        w, b = store.lift(bp.weights, bp.biases)
        return orient(Boundaries(w, b, z0 + t * (targets - z0), bp.pairs), z0)

    # --- summary -----------------------------------------------------------------
    def summarize(self, coverage: float = 0.95, max_regions: int = 10,
                  classes: list[int] | None = None) -> "Summary":
        """Peel each predicted class into regions; see :func:`repinterp.summary.summarize`."""
        from .summary import summarize
        return summarize(self, coverage=coverage, max_regions=max_regions, classes=classes)
