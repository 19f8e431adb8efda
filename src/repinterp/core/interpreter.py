"""The public entry point: :class:`RepresentativeInterpreter`."""
from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from . import defaults
from ._images import ImagesMixin
from ._state import CHECK_ROWS, StateMixin
from ._summarize import SummaryMixin
from .boundaries import Boundaries, bisect_segments, boundaries_at
from .engine import dense_candidates, make_region, purity_stop
from .errors import NotFittedError, UserError
from .network import GRIDS, SplitNetwork
from .passes import batches, warn_if_normalised
from .precision import exact
from .region import Region
from .split import linear_prefix, split_model
from .store import FeatureStore

__all__ = ["RepresentativeInterpreter"]

SAMPLING = ("bisection", "shared")


class RepresentativeInterpreter(StateMixin, SummaryMixin, ImagesMixin):
    """Representative interpretations of a CNN classifier (Lam, Chu et al., ICCV 2021).

    >>> interp = RepresentativeInterpreter(model, layer="layer3").fit(images)
    >>> region = interp.explain(0)           # the region of reference 0
    >>> region.members[:10]                  # the images it holds for, nearest first
    >>> interp.heatmap(region, images[region.members[:10]])

    Parameters
    ----------
    model
        A classifier ``x -> logits``. Never modified: :meth:`fit` works on private copies
        (eval mode), so a fitted interpreter describes the model as it was at ``fit``;
        changing the model's weights afterwards warns until ``fit`` is called again.
    layer
        Feature layer, by name (``named_modules()``) or as a module. ``psi`` is its
        output, ``G`` everything after it; ``G`` must be piecewise linear.
    num_boundaries
        ``|Q|``: boundaries sampled per seed (``bisection``) or shared by all seeds.
    sampling
        ``"bisection"`` (METHOD §1, default): per seed, bisect towards ``|Q|`` random
        references of other classes. ``"shared"``: one set ``Q`` taken at ``|Q|`` random
        references (top-1 vs top-2), shared by every seed; faster for summaries.
    delta
        Other-class references allowed in a region; ``None`` = smallest feasible.
    min_purity
        Also stop the greedy as soon as the references in the region are this pure;
        ``"auto"`` (default): :data:`repinterp.core.defaults.MIN_PURITY` (0.995, the same
        for a region index) for a piecewise-linear head,
        :data:`~repinterp.core.defaults.TANGENT_MIN_PURITY` (0.999) for tangent boundaries;
        ``None``: the paper's ``delta`` rule alone.
    seed
        Seed of every random draw; the same seed gives the same results.
    heatmap_method
        Default heat map (:mod:`repinterp.core.heatmap`). ``margin`` was chosen on
        development seeds of the paper's protocol (``docs/evaluation.md``); the paper's
        lineage variant is ``lineage``.
    heatmap_grid
        ``"features"`` (default): draw heat maps on the feature map's grid, as the paper
        does; ``"head"``: on the head's coarsest grid
        (:attr:`repinterp.core.network.SplitNetwork.head_grid`), which removes the grid
        of dots a strided head leaves (a ResNet split at ``layer3``;
        :func:`repinterp.core.heatmap.region_heatmap`). Measured on a trained resnet18
        at 160 px split at ``layer3`` (``docs/evaluation.md``): the same deletion,
        insertion and ROAD, a smoother map, but the hottest pixel on a 20 px planted mark
        in none of 8 images against all 8 on the feature grid; hence not the default.
        Splitting where :func:`repinterp.suggest_layer` does (``layer4.0``) leaves no
        stride in the head, and both grids are the same.
    batch_size
        Images per batch through the network (default: 256, fewer for large images; see
        :func:`repinterp.core.passes.auto_batch_size`).
    approximate
        Deprecated and ignored (a warning says so at :meth:`fit`): whether boundaries
        are tangent follows from the head. A head that is not piecewise linear (SiLU,
        GELU, LayerNorm, attention) is accepted: each boundary is the tangent plane of
        the decision surface at a point where the top two classes tie (normal = the
        gradient of their margin there), so
        a region is a first-order approximation of where the network decides alike,
        and ``Region.approximate`` is True. Its fidelity is measured, not assumed:
        ``Region.purity`` is the share of the references inside it that the network
        predicts as its class. A departure from the paper, which stops at piecewise
        linear heads.
    device
        Where to compute (default: the model's device).
    feature_dtype
        Storage dtype of the reference features (default: the model's); ``torch.float16``
        or ``torch.bfloat16`` halve their memory, products are still computed in the
        model's dtype.
    store_dir
        Keep the reference features in a memory-mapped file in this directory (on the
        CPU; unlinked at once, so nothing is left behind) instead of memory: ``N`` is
        then bounded by disk; products read it in chunks of about 64 MB.
    use_prefix
        Work in the output space of the head's first linear layer when there is one
        (exact; see :mod:`repinterp.core.store`).
    channels_last
        On the CPU, run the feature extractor in channels-last format.
    preprocess
        Applied to every batch of images before the network, at ``fit`` and after (e.g.
        ``torchvision.transforms.Normalize(mean, std)``): references and queries are then
        passed as they look, in ``[0, 1]``, and reports draw them as they are.
    reshape_transform
        The layer's output as feature maps ``[n, C, h, w]`` for heat maps, as
        pytorch-grad-cam's (e.g. ``lambda t: t.permute(0, 3, 1, 2)`` for Swin's
        channels-last stages); a ViT's tokens ``[n, T, D]`` are put on their patch grid
        without it (:func:`repinterp.core.heatmap.token_grid`).
    class_names
        One name per class (checked at :meth:`fit`), for display: ``Region.class_name``.

    Attributes
    ----------
    features_ : Tensor
        The stored reference features ``[N, D]``; ``feature_shape_`` their shape at the
        layer and ``nbytes_`` the memory the fitted state holds.
    layer_, approximate_ : str, bool
        The feature layer's name; whether the head is smooth (tangent boundaries).
    logits_ : Tensor
        ``G(psi(x))`` of every reference ``[N, K]`` (on the compute device).
    input_size_ : tuple
        ``(H, W)`` of the references (the size heat maps of references are drawn at).
    predictions_, margins_ : Tensor
        ``Class(x)`` and the top-2 logit margin of every reference.
    bank_ : Boundaries or None
        With shared sampling, the shared boundaries (working space), and ``bank_values_``
        their side values at every reference.
    restored_ : bool
        Whether :meth:`fit` restored a saved state (:meth:`fit_state_`) or computed one.
    """

    def __init__(self, model: nn.Module, layer: str | nn.Module,
                 num_boundaries: int = defaults.NUM_BOUNDARIES,
                 *, sampling: str = "bisection", delta: int | None = None,
                 min_purity: float | str | None = "auto", seed: int = 0,
                 heatmap_method: str = defaults.HEATMAP_METHOD,
                 heatmap_grid: str = defaults.HEATMAP_GRID,
                 batch_size: int | None = None, class_names: Sequence[str] | None = None,
                 approximate: bool | None = None, device: str | torch.device | None = None,
                 feature_dtype: torch.dtype | None = None,
                 store_dir: str | os.PathLike | None = None, progress: bool = True,
                 use_prefix: bool = True, channels_last: bool = True,
                 preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 reshape_transform: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.model = model
        self.layer = layer
        self.num_boundaries = num_boundaries
        self.sampling = sampling
        self.delta = delta
        self.min_purity = min_purity
        self.seed = seed
        self.heatmap_method = heatmap_method
        self.heatmap_grid = heatmap_grid
        self.batch_size = batch_size
        self.approximate = approximate
        self.device = device
        self.feature_dtype = feature_dtype
        self.store_dir = store_dir
        self.progress = progress
        self.use_prefix = use_prefix
        self.channels_last = channels_last
        self.preprocess = preprocess
        self.reshape_transform = reshape_transform
        self.class_names = class_names

    # --- fit ---------------------------------------------------------------------
    @exact
    def fit(self, references: Any, *, state: dict | None = None) -> RepresentativeInterpreter:
        """Split the model, copy it privately, and keep the references' features,
        predictions and margins.

        ``references``: Tensor ``[N, C, H, W]`` or a Dataset of images (labels ignored).
        One pass of the feature extractor and one of the head; when the head starts with
        a linear layer its outputs are kept too (see :mod:`repinterp.core.store`).
        ``state``: a :meth:`fit_state_` of these references, restored after a check of
        their first batch, the only one read (a mismatch fits anew; ``restored_``).
        """
        if self.sampling not in SAMPLING:
            raise UserError(f"sampling must be one of {SAMPLING}, got {self.sampling!r}")
        if int(self.num_boundaries) < 1:
            raise UserError("num_boundaries must be at least 1")
        if self.heatmap_grid not in GRIDS:
            raise UserError(f"heatmap_grid must be one of {GRIDS}, got {self.heatmap_grid!r}")
        if not (self.min_purity is None or self.min_purity == "auto" or (
                isinstance(self.min_purity, (int, float)) and 0 < self.min_purity <= 1)):
            raise UserError(f"min_purity must be 'auto', None or in (0, 1], got "
                            f"{self.min_purity!r}")
        if self.approximate is not None:
            warnings.warn("approximate= does nothing and will be removed: whether "
                          "boundaries are tangent follows from the head (approximate_)",
                          FutureWarning, stacklevel=3)
        net = SplitNetwork(self.model, self.layer, device=self.device,
                           channels_last=self.channels_last,
                           batch_size=self.batch_size, progress=self.progress,
                           preprocess=self.preprocess,
                           reshape_transform=self.reshape_transform)
        first = next(batches(references, 8 if state is None else CHECK_ROWS), None)
        if first is None or len(first) == 0:
            raise UserError("fit needs at least one reference image (got none)")
        net.check_split(first)
        if self.preprocess is not None:
            warn_if_normalised(first)
        restored = None if state is None else self._restore(state, net, first, len(references))
        if restored is not None:
            return self._keep(net, *restored, restored=True)
        z = net.features(references, dtype=self.feature_dtype, storage=self.store_dir)
        prefix = linear_prefix(net.head) if self.use_prefix else None
        sink: list[torch.Tensor] = []
        logits = net.logits(z, capture=prefix, sink=sink)
        if logits.shape[1] < 2:
            raise UserError("the model has a single output; need a classifier with "
                            ">= 2 classes")
        bad = (~torch.isfinite(logits).all(1)).nonzero()[:, 0]
        if len(bad):
            raise UserError(f"the logits contain NaN or infinite values for {len(bad)} of "
                            f"{len(logits)} references (first: reference {int(bad[0])}); "
                            f"the layers after {net.layer!r} produce them: check their "
                            "weights")
        store = FeatureStore(z, net.dtype, net.head, None if prefix is None else
                             (prefix, torch.cat(sink), split_model(net.head, prefix).head),
                             device=net.device)
        return self._keep(net, store, logits)

    @property
    def layer_(self) -> str:
        """The feature layer's qualified name."""
        return self._fitted()._network.layer

    @property
    def approximate_(self) -> bool:
        """True when the head is not piecewise linear (results are linearisations)."""
        return self._fitted()._network.approximate

    @property
    def features_(self) -> torch.Tensor:
        """The stored reference features ``[N, D]`` (in the store's dtype)."""
        return self._fitted()._store.z

    @property
    def nbytes_(self) -> int:
        """Bytes of the fitted state: the stored features and their projections."""
        return int(self._fitted()._store.nbytes)

    def _fitted(self, stacklevel: int = 3) -> RepresentativeInterpreter:
        if not hasattr(self, "_store"):
            raise NotFittedError("this RepresentativeInterpreter is not fitted yet: call "
                                 "fit(references) first")
        if self._network.is_stale():
            warnings.warn("the model's weights changed since fit; results describe the "
                          "model as it was then: call fit again", stacklevel=stacklevel)
        return self

    def _rng(self, stream: int) -> torch.Generator:
        return torch.Generator().manual_seed(int(self.seed) * 1_000_003 + stream)

    def _working_shape(self) -> tuple[int, ...]:
        return self._store.working_shape or self._shape()

    # --- explain -----------------------------------------------------------------
    @exact
    def explain(self, seed: Any, *, delta: int | None = None,
                num_boundaries: int | None = None, target: int | None = None
                ) -> Region:
        """The representative interpretation of ``seed`` (one region; a batch goes
        to :meth:`explain_many`).

        Parameters
        ----------
        seed
            An integer index into the references (any integer-like value) or an image
            ``[C, H, W]`` (Tensor or numpy array).
        delta, num_boundaries
            Override the interpreter's settings for this call (with shared sampling,
            ``num_boundaries`` uses the first that many boundaries of the bank).
        target
            Another class ``t``: the region of the seed against class ``t`` alone ("why
            the seed's class and not ``t``"): boundaries are sampled towards references
            predicted as ``t`` and the region excludes those; references of third
            classes may lie inside. ``None`` or the seed's own class: against every
            other class (the paper's region). Not with shared sampling.
        """
        self._fitted(stacklevel=4)
        if isinstance(seed, np.ndarray):
            seed = torch.from_numpy(seed)
        if isinstance(seed, torch.Tensor) and seed.ndim == 4:
            raise UserError(f"explain takes one seed (an index or an image [C, H, W]); "
                            f"for a batch of {len(seed)} images call explain_many")
        index, z0, cls, same, q = self._prepare(seed, num_boundaries, target)
        b, values, seed_values = self._candidates(index, z0, cls, same, q)
        return self._region(b, values, seed_values, cls, same, index,
                            self.delta if delta is None else delta)

    def explain_many(self, seeds: Any, *, delta: int | None = None,
                     num_boundaries: int | None = None, target: int | None = None
                     ) -> list[Region]:
        """:meth:`explain` of each seed of ``seeds``: a batch of images ``[n, C, H, W]``
        (Tensor or numpy array) or a sequence of indices or images, in order."""
        self._fitted(stacklevel=4)
        if isinstance(seeds, np.ndarray):
            seeds = torch.from_numpy(seeds)
        if isinstance(seeds, torch.Tensor) and seeds.ndim not in (1, 4):
            raise UserError(f"explain_many takes images [n, C, H, W] or indices [n], got "
                            f"a tensor of shape {tuple(seeds.shape)}")
        return [self.explain(s, delta=delta, num_boundaries=num_boundaries, target=target)
                for s in seeds]

    def _candidates(self, index: int | None, z0: torch.Tensor, cls: int,
                    same: torch.Tensor, q: int, sampled: Boundaries | None = None
                    ) -> tuple[Boundaries, torch.Tensor, torch.Tensor]:
        """A seed's candidate boundaries (the bank's first ``q``, or ``q`` sampled by
        bisection, or ``sampled`` when they already are) in feature space, their side
        values ``[N, q]`` at every reference (working space) and at the seed ``[q]``."""
        store = self._store
        if self.bank_ is not None:
            if q > len(self.bank_):
                raise UserError(f"num_boundaries={q} exceeds the {len(self.bank_)} shared "
                                "boundaries sampled at fit; raise num_boundaries there")
            b = self.bank_.select(torch.arange(q, device=self.bank_.weights.device))
            assert self.bank_values_ is not None    # set with bank_ at fit
            values = self.bank_values_[:, :q]
        else:
            b = self._sample(z0, cls, same, index, q) if sampled is None else sampled
            values = store.side_values(b.weights, b.biases)
        # the seed's own values from the same product as everyone's, so that it always
        # lands on the side it is oriented to
        seed_values = values[index] if index is not None else store.side_values(
            b.weights, b.biases, points=store.to_working(z0[None]))[0]
        weights, biases = store.lift(b.weights, b.biases)
        return Boundaries(weights, biases, b.points, b.pairs), values, seed_values

    @property
    def min_purity_(self) -> float | None:
        """The greedy's purity stop in use: :attr:`min_purity`, with ``"auto"`` resolved by
        the fitted head's verdict (0.999 for tangent boundaries, else 0.995)."""
        return purity_stop(self.min_purity, self._fitted()._network.approximate)

    def _region(self, b: Boundaries, values: torch.Tensor, seed_values: torch.Tensor,
                cls: int, same: torch.Tensor, index: int | None, delta: int | None,
                logic: int | None = None, *, held: torch.Tensor | None = None,
                min_purity: float | str | None = "auto", close: int = 0) -> Region:
        """The region engine (:func:`~repinterp.core.engine.make_region`) on the
        candidates ``b`` (feature space) with the side ``values`` ``[N, Q]`` of every
        reference and ``seed_values`` ``[Q]``. ``same`` marks the references the region
        should keep; ``held`` those the greedy does not count (a purity contract's);
        ``min_purity`` ``"auto"``: the interpreter's stop (:attr:`min_purity_`);
        ``close``: the greedy's closing step (:func:`~repinterp.core.engine.greedy`)."""
        stop = self.min_purity_ if min_purity == "auto" else \
            purity_stop(min_purity, self._network.approximate)
        return make_region(dense_candidates(b, values, seed_values), self.predictions_,
                           cls, same, seed_index=index, delta=delta, min_purity=stop,
                           feature_shape=self._shape(),
                           approximate=self._network.approximate, logic=logic,
                           ignore=held, close=close, stacklevel=5).named(self.class_names)

    @exact
    def sample_boundaries(self, seed: Any, num_boundaries: int | None = None) -> Boundaries:
        """Bisection sampling (METHOD §1) from ``seed`` (an index or an image) towards
        ``num_boundaries`` random references of other classes: boundaries in the store's
        working space (:mod:`repinterp.core.store`), not oriented; points in feature
        space. :meth:`explain` selects from these; a region index banks them."""
        self._fitted(stacklevel=4)
        index, z0, cls, same, q = self._prepare(seed, num_boundaries)
        return self._sample(z0, cls, same, index, q)

    def _prepare(self, seed: Any, num_boundaries: int | None, target: int | None = None
                 ) -> tuple[int | None, torch.Tensor, int, torch.Tensor, int]:
        """Index, features, class, the mask of references the region may keep and
        ``|Q|`` of a seed, checked (``target``: see :meth:`explain`)."""
        index, z0, cls = self._seed(seed)
        if target is None or int(target) == cls:
            same = self.predictions_ == cls
            if bool(same.all()):
                raise UserError(f"every reference image is predicted as class {cls}; "
                                "representative interpretations need images of other "
                                "classes")
        else:
            if self.bank_ is not None:
                raise UserError("target= needs bisection sampling (the shared bank was "
                                "sampled against every class)")
            same = self.predictions_ != int(target)
            if bool(same.all()):
                raise UserError(f"no reference is predicted as the target class {target}")
        q = int(self.num_boundaries if num_boundaries is None else num_boundaries)
        if q < 1:
            raise UserError("num_boundaries must be at least 1")
        return index, z0, cls, same, q

    def _sample(self, z0: torch.Tensor, cls: int, same: torch.Tensor, index: int | None,
                q: int) -> Boundaries:
        """Bisection sampling (METHOD §1) towards ``q`` random other-class references, in
        the store's working space; the points are returned in feature space."""
        return self._sample_many([(z0, cls, same, index, q)])[0]

    def _sample_many(self, seeds: list[tuple[torch.Tensor, int, torch.Tensor, int | None,
                                             int]]) -> list[Boundaries]:
        """:meth:`_sample` of several seeds ``(z0, cls, same, index, q)`` with their
        searches in one set of head passes (:func:`bisect_segments` with one origin per
        seed) and their boundaries in one backward pass. Each seed draws its targets from
        its own stream, so its boundaries are those it gets alone (to the float rounding
        of a larger batch)."""
        store, shape, device = self._store, self._working_shape(), self._network.device
        picks, origins = [], []
        for z0, _, same, index, q in seeds:
            others = (~same).nonzero()[:, 0]
            gen = self._rng(2 if index is None else 3 + index)
            picks.append(others[torch.randperm(len(others), generator=gen)[:q]].to(device))
            origins.append(store.working_rows(index) if index is not None
                           else store.to_working(z0[None])[0])
        pick = torch.cat(picks)
        sizes = [len(p) for p in picks]
        owner = torch.repeat_interleave(torch.arange(len(seeds), device=device),
                                        torch.tensor(sizes, device=device))
        classes = torch.tensor([c for _, c, *_ in seeds], dtype=torch.long, device=device)
        p0, pt = torch.stack(origins), store.working_rows(pick)
        t = bisect_segments(store.rest, p0, pt, classes, shape,
                            target_logits=self.logits_[pick], owner=owner)
        start = p0[owner]
        found = boundaries_at(store.rest, start + t * (pt - start), shape, classes[owner])
        z0 = torch.stack([z0 for z0, *_ in seeds])[owner.to(seeds[0][0].device)]
        points = z0 + t.to(z0) * (store.rows(pick) - z0)
        return [Boundaries(*parts) for parts in zip(
            *(x.split(sizes) for x in (found.weights, found.biases, points, found.pairs)),
            strict=True)]
